package cibaclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/coreos/go-oidc/v3/oidc"
)

// VerifyIDToken verifies t's ID token with go-oidc against the issuer of
// c.Metadata (its discovery document and published keys): signature, iss,
// exp, and aud containing c.ClientID. It also checks azp (OpenID Connect
// Core §3.1.3.7: present and equal to the client when aud has several
// entries; equal to it whenever present) and, when the token carries
// at_hash, that it matches t's access token. It returns the token's claims
// as received.
func (c *Client) VerifyIDToken(ctx context.Context, t *Token) (json.RawMessage, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if t == nil || t.IDToken == "" {
		return nil, errors.New("verifying the ID token: the token response has no id_token")
	}
	ctx = oidc.ClientContext(ctx, c.httpClient())
	provider, err := oidc.NewProvider(ctx, c.Metadata.Issuer)
	if err != nil {
		return nil, fmt.Errorf("verifying the ID token: %w", err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: c.ClientID, Now: c.now}).Verify(ctx, t.IDToken)
	if err != nil {
		return nil, fmt.Errorf("verifying the ID token: %w", err)
	}
	var claims json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("verifying the ID token: %w", err)
	}
	var azp struct {
		AZP *string `json:"azp"`
	}
	if err := json.Unmarshal(claims, &azp); err != nil {
		return nil, fmt.Errorf("verifying the ID token: azp: %w", err)
	}
	switch {
	case azp.AZP != nil && *azp.AZP != c.ClientID:
		return nil, fmt.Errorf("verifying the ID token: azp is %q, not this client %q", *azp.AZP, c.ClientID)
	case azp.AZP == nil && len(idt.Audience) > 1:
		return nil, fmt.Errorf("verifying the ID token: aud has %d entries and there is no azp", len(idt.Audience))
	}
	if !slices.Contains(idt.Audience, c.ClientID) {
		// go-oidc checked this already; kept as a guard should its
		// configuration ever change.
		return nil, fmt.Errorf("verifying the ID token: aud does not contain %q", c.ClientID)
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(t.AccessToken); err != nil {
			return nil, fmt.Errorf("verifying the ID token: at_hash: %w", err)
		}
	}
	return claims, nil
}
