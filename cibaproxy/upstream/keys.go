package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// keysTimeout bounds one probe of a key set.
const keysTimeout = 10 * time.Second

// KeySet returns the upstream's key set (meta's jwks_uri) reached through
// its internal address, and that internal URL. The key set lives as long
// as the Discovery (never a request's context) and is replaced when
// jwks_uri changes.
func (d *Discovery) KeySet(meta *Metadata) (*oidc.RemoteKeySet, string, error) {
	if meta.JWKSURI == "" {
		return nil, "", errors.New("upstream discovery has no jwks_uri")
	}
	internal, err := d.Internal(meta.JWKSURI)
	if err != nil {
		return nil, "", fmt.Errorf("upstream jwks_uri: %w", err)
	}
	d.keysMu.Lock()
	defer d.keysMu.Unlock()
	if d.keys == nil || d.keysURL != internal {
		kctx := oidc.ClientContext(context.Background(), d.client)
		d.keys, d.keysURL = oidc.NewRemoteKeySet(kctx, internal), internal
	}
	return d.keys, internal, nil
}

// IDTokenAlgs returns the upstream's ID token signing algorithms, none and
// HS* left out; go-oidc defaults to RS256 when there are none.
func (m *Metadata) IDTokenAlgs() []string {
	var algs []string
	if raw, ok := m.Fields["id_token_signing_alg_values_supported"]; ok {
		_ = json.Unmarshal(raw, &algs)
	}
	out := algs[:0]
	for _, a := range algs {
		if a != "none" && !strings.HasPrefix(a, "HS") {
			out = append(out, a)
		}
	}
	return out
}

// KeysReachable reports whether the key set at jwksURL can be fetched now
// with client, telling a signature that is wrong from keys that are
// unavailable (a done ctx counts as unavailable).
func KeysReachable(ctx context.Context, client *http.Client, jwksURL string) bool {
	if ctx.Err() != nil || jwksURL == "" {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, jwksURL, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// idTokens verifies the upstream's ID tokens, with one verifier per client
// id over the upstream's key set (replaced when the key set is).
type idTokens struct {
	disc *Discovery

	mu       sync.Mutex
	keySet   *oidc.RemoteKeySet
	verifier map[string]*oidc.IDTokenVerifier // per client id
}

func newIDTokens(d *Discovery) *idTokens {
	return &idTokens{disc: d, verifier: make(map[string]*oidc.IDTokenVerifier)}
}

// verify checks the upstream's ID token: signature against the upstream's
// keys, issuer, expiry, the client in aud, and azp = the client when aud
// has several entries. Keys that cannot be fetched now are a transient
// failure; anything else wrong is a refusal (invalid_id_token).
func (t *idTokens) verify(ctx context.Context, meta *Metadata, clientID, raw string) (*oidc.IDToken, error) {
	v, keys, jwksURL, err := t.verifierFor(meta, clientID)
	if err != nil {
		return nil, &MintError{Err: err}
	}
	hctx := oidc.ClientContext(ctx, t.disc.Client())
	// The signature first, on its own: go-oidc's Verify flattens its
	// errors, and an upstream whose keys cannot be fetched right now is a
	// transient failure, not a bad token.
	if _, err := keys.VerifySignature(hctx, raw); err != nil {
		if !KeysReachable(hctx, t.disc.Client(), jwksURL) {
			return nil, &MintError{Err: fmt.Errorf("the upstream's keys are unavailable: %w", err)}
		}
		// The keys are reachable now. go-oidc hands a caller that comes
		// just as a failed fetch ends that fetch's error, so the failure
		// may be an earlier outage's: verify once more before refusing.
		if _, err := keys.VerifySignature(hctx, raw); err != nil {
			return nil, invalidIDToken(fmt.Errorf("verifying the upstream's ID token: %w", err))
		}
	}
	tok, err := v.Verify(hctx, raw)
	if err != nil {
		return nil, invalidIDToken(fmt.Errorf("verifying the upstream's ID token: %w", err))
	}
	if len(tok.Audience) > 1 {
		var c struct {
			AZP string `json:"azp"`
		}
		if err := tok.Claims(&c); err != nil || c.AZP != clientID {
			return nil, invalidIDToken(errors.New("the upstream's ID token has several audiences and azp is not the client"))
		}
	}
	return tok, nil
}

// invalidIDToken is the refusal of an ID token that fails verification.
func invalidIDToken(err error) *MintError {
	return &MintError{Refused: true, UpstreamError: "invalid_id_token", Err: err}
}

// verifierFor returns the verifier of the upstream's ID tokens for a
// client, the upstream's key set and its internal URL.
func (t *idTokens) verifierFor(meta *Metadata, clientID string) (*oidc.IDTokenVerifier, *oidc.RemoteKeySet, string, error) {
	keys, jwksURL, err := t.disc.KeySet(meta)
	if err != nil {
		return nil, nil, "", err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keySet != keys {
		t.keySet = keys
		clear(t.verifier)
	}
	v := t.verifier[clientID]
	if v == nil {
		v = oidc.NewVerifier(meta.Issuer, keys, &oidc.Config{
			ClientID:             clientID,
			SupportedSigningAlgs: meta.IDTokenAlgs(),
		})
		t.verifier[clientID] = v
	}
	return v, keys, jwksURL, nil
}
