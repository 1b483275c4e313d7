package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// keySet holds every signing key Dex published during the soak. Dex keeps
// its keys in memory: a restarted Dex signs with new ones and no longer
// publishes the old, so the keys are fetched after each start and before
// each kill, and kept.
type keySet struct {
	url    string // Dex's JWKS, on its own address
	client *http.Client

	mu   sync.Mutex
	keys map[string]crypto.PublicKey // by kid
}

func newKeySet(url string) *keySet {
	return &keySet{url: url, client: &http.Client{Timeout: 5 * time.Second}, keys: make(map[string]crypto.PublicKey)}
}

// refresh fetches Dex's keys and adds the new ones.
func (k *keySet) refresh(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", k.url, resp.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range set.Keys {
		if key.Use == "" || key.Use == "sig" {
			k.keys[key.KeyID] = key.Key
		}
	}
	return nil
}

func (k *keySet) all() []crypto.PublicKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]crypto.PublicKey, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, key)
	}
	return out
}

// verify verifies a JWT Dex signed (signature, issuer, expiry; not the
// audience, which the caller checks). A signature no known key verifies is
// retried after fetching the keys again, for up to 20 s (Dex may be down).
func (s *stack) verify(ctx context.Context, raw string) (*oidc.IDToken, error) {
	issuer := s.base + "/dex"
	for attempt := 0; ; attempt++ {
		v := oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: s.keys.all()}, &oidc.Config{SkipClientIDCheck: true})
		t, err := v.Verify(ctx, raw)
		if err == nil || !strings.Contains(err.Error(), "signature") || attempt == 20 {
			return t, err
		}
		_ = s.keys.refresh(ctx)
		if !sleep(ctx, time.Second) {
			return nil, err
		}
	}
}

// idClaims are the claims of Dex's ID token the soak checks.
type idClaims struct {
	Email             string `json:"email"`
	EmailVerified     bool   `json:"email_verified"`
	PreferredUsername string `json:"preferred_username"`
}

// checkTokens checks a 200 token answer: an access token and an ID token
// that verify against Dex's keys, issued to the login's client (aud) for
// its user (Dex's sub names the user and the connector ciba; the e-mail
// and username are the user's). It returns what is wrong, or "".
func (s *stack) checkTokens(ctx context.Context, lg *login, body []byte) string {
	var tok oauthBody
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" || tok.IDToken == "" {
		return fmt.Sprintf("unverifiable: the 200 lacks tokens (%v)", err)
	}
	id, err := s.verify(ctx, tok.IDToken)
	if err != nil {
		return fmt.Sprintf("unverifiable: the ID token: %v", err)
	}
	if !slices.Equal(id.Audience, []string{lg.client.id}) {
		return fmt.Sprintf("wrong client: ID token aud %v, want %s", id.Audience, lg.client.id)
	}
	var c idClaims
	if err := id.Claims(&c); err != nil {
		return fmt.Sprintf("unverifiable: the ID token's claims: %v", err)
	}
	sub, err := base64.RawURLEncoding.DecodeString(id.Subject)
	if err != nil || !bytes.Contains(sub, []byte(lg.user.Username)) || !bytes.Contains(sub, []byte("ciba")) {
		return fmt.Sprintf("wrong user: ID token sub %q does not name %s of connector ciba", id.Subject, lg.user.Username)
	}
	if c.Email != lg.user.Email || !c.EmailVerified || c.PreferredUsername != lg.user.Username {
		return fmt.Sprintf("wrong user: ID token email %q (verified %v), preferred_username %q; want %s, %s",
			c.Email, c.EmailVerified, c.PreferredUsername, lg.user.Email, lg.user.Username)
	}
	at, err := s.verify(ctx, tok.AccessToken)
	if err != nil {
		return fmt.Sprintf("unverifiable: the access token: %v", err)
	}
	if !slices.Contains(at.Audience, lg.client.id) {
		return fmt.Sprintf("wrong client: access token aud %v, want %s", at.Audience, lg.client.id)
	}
	if at.Subject != id.Subject {
		return fmt.Sprintf("wrong user: access token sub %q, ID token sub %q", at.Subject, id.Subject)
	}
	return ""
}
