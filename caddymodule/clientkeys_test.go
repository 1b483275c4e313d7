package caddymodule

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	jose "github.com/go-jose/go-jose/v4"
)

// writeJWKS writes the JWK Set of k's public key to a file and returns
// its path.
func writeJWKS(t *testing.T, k cibatest.Key) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, cibatest.JWKSJSON(t, k), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// assertion signs a fresh client assertion of client with k.
func assertion(t *testing.T, k cibatest.Key, client string) string {
	t.Helper()
	now := time.Now()
	return k.Sign(t, jose.ES256, "", map[string]any{
		"iss": client, "sub": client, "aud": "https://idp.example.com/realms/main",
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(),
		"jti": rand.Text(),
	})
}

// serveForm posts form to the handler's backchannel endpoint, with Basic
// credentials when id is not empty.
func serveForm(t *testing.T, h *Handler, form url.Values, id, secret string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "https://idp.example.com/bc-authorize", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(id, secret)
	}
	rec := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Error("the request reached the next handler")
		return nil
	})
	if err := h.ServeHTTP(rec, req, next); err != nil {
		t.Fatalf("ServeHTTP: %v", err)
	}
	return rec
}

func assertionForm(assertion string) url.Values {
	return url.Values{
		"scope": {"openid"}, "login_hint": {"alice"},
		"client_assertion_type": {clients.ClientAssertionType}, "client_assertion": {assertion},
	}
}

// TestClientJWKSFile: a private_key_jwt client with a jwks file
// authenticates with an assertion signed by its key, and no other.
func TestClientJWKSFile(t *testing.T) {
	key, other := cibatest.NewKey(t, "k1"), cibatest.NewKey(t, "k1")
	h := validHandler(t)
	h.Clients = append(h.Clients, &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: writeJWKS(t, key), UpstreamSecret: "up"})
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	if rec := serveForm(t, h, assertionForm(assertion(t, key, "pk")), "", ""); rec.Code != http.StatusOK {
		t.Fatalf("with the client's key: %d %s", rec.Code, rec.Body)
	}
	if rec := serveForm(t, h, assertionForm(assertion(t, other, "pk")), "", ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("with another key: %d %s, want 401", rec.Code, rec.Body)
	}
}

// TestClientJWKSURI: the keys of a jwks_uri client are fetched on first
// use, not at provisioning, and its signed requests are accepted.
func TestClientJWKSURI(t *testing.T) {
	key := cibatest.NewKey(t, "k1")
	srv := cibatest.StartJWKS(t, cibatest.JWKSJSON(t, key))
	h := validHandler(t)
	h.Clients = append(h.Clients, &Client{ID: "signer", Secrets: []string{"signer-secret"}, JWKSURI: srv.URL() + "/jwks", RequestSigningAlg: "ES256", RequireSignedRequests: true})
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	if n := srv.Fetches(); n != 0 {
		t.Errorf("fetched %d times while provisioning", n)
	}
	if rec := serveForm(t, h, url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "signer", "signer-secret"); rec.Code != http.StatusBadRequest {
		t.Errorf("unsigned request: %d %s, want 400", rec.Code, rec.Body)
	}
	now := time.Now()
	req := key.Sign(t, jose.ES256, "", map[string]any{
		"iss": "signer", "aud": "https://idp.example.com/realms/main", "exp": now.Add(5 * time.Minute).Unix(),
		"iat": now.Unix(), "nbf": now.Unix(), "jti": "r1", "scope": "openid", "login_hint": "alice", "requested_expiry": "60",
	})
	rec := serveForm(t, h, url.Values{"request": {req}}, "signer", "signer-secret")
	if rec.Code != http.StatusOK {
		t.Fatalf("signed request: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"expires_in":60`) {
		t.Errorf("answer %s, want expires_in 60", rec.Body)
	}
	if n := srv.Fetches(); n != 1 {
		t.Errorf("fetched %d times, want 1", n)
	}
}

func TestClientKeysRefused(t *testing.T) {
	key := cibatest.NewKey(t, "k1")
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) *Client
		want   string
	}{
		{"jwks and jwks_uri", func(t *testing.T) *Client {
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: writeJWKS(t, key), JWKSURI: "https://pk.example.com/jwks", UpstreamSecret: "u"}
		}, "mutually exclusive"},
		{"jwks file missing", func(t *testing.T) *Client {
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: filepath.Join(t.TempDir(), "nope.json"), UpstreamSecret: "u"}
		}, "jwks"},
		{"jwks file with a private key", func(t *testing.T) *Client {
			b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Signer, KeyID: "k1"}}})
			path := filepath.Join(t.TempDir(), "jwks.json")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: path, UpstreamSecret: "u"}
		}, "private"},
		{"jwks_uri plain http off loopback", func(t *testing.T) *Client {
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKSURI: "http://pk.example.com/jwks", UpstreamSecret: "u"}
		}, "jwks_uri"},
		{"private_key_jwt without keys", func(t *testing.T) *Client {
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", UpstreamSecret: "u"}
		}, "jwks"},
		{"private_key_jwt without upstream_secret", func(t *testing.T) *Client {
			return &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: writeJWKS(t, key)}
		}, "upstream_secret"},
		{"request_signing_alg HS256", func(t *testing.T) *Client {
			return &Client{ID: "pk", Secrets: []string{"s"}, JWKS: writeJWKS(t, key), RequestSigningAlg: "HS256"}
		}, "request_signing_alg"},
		{"require_signed_requests without request_signing_alg", func(t *testing.T) *Client {
			return &Client{ID: "pk", Secrets: []string{"s"}, JWKS: writeJWKS(t, key), RequireSignedRequests: true}
		}, "request_signing_alg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			h.Clients = append(h.Clients, tc.client(t))
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestPrivateKeyJWTSecretIsUpstreamSecret: a private_key_jwt client's
// secret serves as its upstream secret; it does not authenticate it here.
func TestPrivateKeyJWTSecretIsUpstreamSecret(t *testing.T) {
	key := cibatest.NewKey(t, "k1")
	h := validHandler(t)
	h.Clients = append(h.Clients, &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: writeJWKS(t, key), Secrets: []string{"pk-secret"}})
	if err := provision(t, h); err != nil {
		t.Fatal(err)
	}
	if rec := serveForm(t, h, url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "pk", "pk-secret"); rec.Code != http.StatusUnauthorized {
		t.Errorf("with the secret: %d %s, want 401", rec.Code, rec.Body)
	}
	if rec := serveForm(t, h, assertionForm(assertion(t, key, "pk")), "", ""); rec.Code != http.StatusOK {
		t.Errorf("with an assertion: %d %s", rec.Code, rec.Body)
	}
}

// TestHydraUpstreamKey: with mint hydra token_auth private_key_jwt, every
// client needs an upstream_key (a private_key_jwt client then needs no
// upstream_secret); a client without one, or with a key file that is not a
// usable key, is refused by name. The exchange does not use the key.
func TestHydraUpstreamKey(t *testing.T) {
	ecPath, ecKey := cibatest.PEMKeyFile(t, cibatest.ECKey(t))
	jwks := writeJWKS(t, cibatest.NewKey(t, "k1"))
	hydra := func(h *Handler) {
		h.Mint = &Mint{Hydra: &HydraMint{Admin: "http://127.0.0.1:4445", RedirectURI: "https://idp.example.com/ciba/hydra/callback", TokenAuth: "private_key_jwt"}}
	}
	t.Run("accepted", func(t *testing.T) {
		h := validHandler(t)
		hydra(h)
		h.Clients[0].UpstreamKey = ecPath
		h.Clients = append(h.Clients, &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: jwks, UpstreamKey: ecPath})
		if err := provision(t, h); err != nil {
			t.Fatal(err)
		}
		for _, c := range coreClients(t, h) {
			if c.UpstreamKey == nil || c.UpstreamKey.ID != ecKey.ID || c.UpstreamKey.Alg != jose.ES256 {
				t.Errorf("client %s: upstream key %+v, want ES256 kid %s", c.ID, c.UpstreamKey, ecKey.ID)
			}
		}
	})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not-a-key-7f3e\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallPath, _ := cibatest.PEMKeyFile(t, small)
	for _, tc := range []struct {
		name   string
		modify func(h *Handler)
		want   string
	}{
		{"client without upstream_key", func(h *Handler) { hydra(h) }, `client "cc": mint hydra token_auth private_key_jwt needs the client's upstream_key`},
		{"upstream_key not PEM", func(h *Handler) { hydra(h); h.Clients[0].UpstreamKey = garbage }, `client "cc": upstream_key`},
		{"upstream_key RSA 1024", func(h *Handler) { hydra(h); h.Clients[0].UpstreamKey = smallPath }, "2048"},
		{"upstream_key missing", func(h *Handler) { hydra(h); h.Clients[0].UpstreamKey = garbage + ".missing" }, `client "cc": upstream_key`},
		{"exchange with upstream_key only", func(h *Handler) {
			h.Clients = append(h.Clients, &Client{ID: "pk", AuthMethod: "private_key_jwt", JWKS: jwks, UpstreamKey: ecPath})
		}, `client "pk": the exchange with credentials client needs the client's upstream_secret`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := validHandler(t)
			tc.modify(h)
			err := provision(t, h)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "not-a-key-7f3e") {
				t.Errorf("error %q reveals the key file's content", err)
			}
		})
	}
}
