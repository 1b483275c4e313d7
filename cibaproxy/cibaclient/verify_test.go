package cibaclient

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/go-jose/go-jose/v4"
)

func TestVerifyIDToken(t *testing.T) {
	e := newEnv(t)
	c, _ := e.client(testSecret, nil)

	// A key the upstream does not publish, under the kid it does.
	impostor := jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cibatest.ECKey(t), KeyID: e.upstream.KeyID()}}

	now := time.Now()
	base := func(kv ...any) map[string]any {
		m := map[string]any{
			"iss": e.issuer, "sub": "alice", "aud": testClientID, "email": "alice@example.com",
			"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
				continue
			}
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		token   func() *Token
		wantErr string // "" for a valid token
	}{
		{"valid", func() *Token { return &Token{AccessToken: "at", IDToken: e.sign(base())} }, ""},
		{"valid with at_hash", func() *Token {
			return &Token{AccessToken: "at", IDToken: e.sign(base("at_hash", atHash("at")))}
		}, ""},
		{"several audiences with azp", func() *Token {
			return &Token{AccessToken: "at", IDToken: e.sign(base("aud", []string{"other", testClientID}, "azp", testClientID))}
		}, ""},
		{"another audience", func() *Token { return &Token{IDToken: e.sign(base("aud", "other"))} }, `expected audience "cc"`},
		{"several audiences without azp", func() *Token {
			return &Token{IDToken: e.sign(base("aud", []string{testClientID, "other"}))}
		}, "aud has 2 entries and there is no azp"},
		{"azp of another client", func() *Token { return &Token{IDToken: e.sign(base("azp", "other"))} }, `azp is "other"`},
		{"expired", func() *Token {
			return &Token{IDToken: e.sign(base("exp", now.Add(-time.Minute).Unix()))}
		}, "token is expired"},
		{"another issuer", func() *Token { return &Token{IDToken: e.sign(base("iss", "https://evil.example.com"))} }, "id token issued by a different provider"},
		{"signed by an unpublished key", func() *Token { return &Token{IDToken: e.sign(base(), impostor)} }, "failed to verify signature"},
		{"at_hash of another access token", func() *Token {
			return &Token{AccessToken: "at", IDToken: e.sign(base("at_hash", atHash("other")))}
		}, "at_hash"},
		{"no ID token", func() *Token { return &Token{AccessToken: "at"} }, "no id_token"},
		{"not a JWT", func() *Token { return &Token{AccessToken: "at", IDToken: "not-a-jwt"} }, "malformed jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := c.VerifyIDToken(context.Background(), tc.token())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("VerifyIDToken = %s, %v; want an error containing %q", claims, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var cl map[string]any
			if err := json.Unmarshal(claims, &cl); err != nil {
				t.Fatal(err)
			}
			if cl["sub"] != "alice" || cl["email"] != "alice@example.com" || cl["iss"] != e.issuer {
				t.Errorf("claims = %s", claims)
			}
		})
	}

	// A client of another id rejects the token minted for cc.
	other := &Client{Metadata: c.Metadata, ClientID: "other"}
	if _, err := other.VerifyIDToken(context.Background(), &Token{IDToken: e.sign(base())}); err == nil {
		t.Error("a token for cc verified for client other")
	}
}
