package cibaproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// hintOP is a small OpenID issuer for the tests: discovery and a JWKS of
// one ES256 key, on an httptest server of its own. It stands for the
// upstream (reached through upstream_via) or for a login_hint_token issuer.
type hintOP struct {
	srv      *httptest.Server
	issuer   string
	key      *ecdsa.PrivateKey
	kid      string
	jwksDown atomic.Bool
	jwksHits atomic.Int32
}

// newHintOP starts an issuer; issuer "" means the server's own URL (a
// login_hint_token issuer), else the public issuer it is the upstream of.
func newHintOP(t *testing.T, issuer string) *hintOP {
	t.Helper()
	o := &hintOP{key: hintKey(t), kid: "k1"}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
			_ = json.NewEncoder(w).Encode(map[string]any{
				"issuer":                                o.issuer,
				"token_endpoint":                        o.issuer + "/token",
				"jwks_uri":                              o.issuer + "/jwks",
				"authorization_endpoint":                o.issuer + "/auth",
				"response_types_supported":              []string{"code"},
				"subject_types_supported":               []string{"public"},
				"id_token_signing_alg_values_supported": []string{"ES256"},
			})
		case strings.HasSuffix(r.URL.Path, "/jwks"):
			o.jwksHits.Add(1)
			if o.jwksDown.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
				{Key: o.key.Public(), KeyID: o.kid, Algorithm: "ES256", Use: "sig"},
			}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(o.srv.Close)
	o.issuer = issuer
	if issuer == "" {
		o.issuer = o.srv.URL
	}
	return o
}

func hintKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign returns a compact JWT of claims signed with the issuer's key.
func (o *hintOP) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	return hintSign(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: o.key, KeyID: o.kid}}, claims)
}

func hintSign(t *testing.T, key jose.SigningKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// withUpstream makes op the upstream: its discovery and keys are fetched
// through upstream_via = op's server.
func withUpstream(t *testing.T, op *hintOP) harnessOption {
	return func(c *Config) {
		d, err := NewDiscovery(testIssuer, op.srv.URL, nil, c.Now)
		if err != nil {
			t.Fatal(err)
		}
		c.Discovery = d
	}
}

// hintJWTClaims returns the claims of a hint issued by iss to aud at the
// harness's time, for bob by sub, with kv overriding (a nil value removes
// the claim).
func hintJWTClaims(h *harness, iss, aud string, kv ...any) map[string]any {
	now := h.clock.Now()
	c := map[string]any{
		"iss": iss,
		"aud": aud,
		"sub": "u-bob",
		"iat": now.Add(-time.Minute).Unix(),
		"exp": now.Add(10 * time.Minute).Unix(),
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(c, k)
			continue
		}
		c[k] = kv[i+1]
	}
	return c
}

// wantUser checks a 200 answer whose stored request is for username.
func wantUser(t *testing.T, h *harness, rec *httptest.ResponseRecorder, username string) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if got := h.get(resp.AuthReqID).User.Username; got != username {
		t.Errorf("the request is for %q, want %q", got, username)
	}
}

// wantPhantom checks a 200 answer whose stored request names nobody
// (hide_unknown_users): nobody is reached, the request simply expires.
func wantPhantom(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200 (as for a known user); body %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	if u := h.get(resp.AuthReqID).User; u.Username != "" || u.Email != "" {
		t.Errorf("the phantom request names user %q <%s>", u.Username, u.Email)
	}
}

// wantDescription checks that an error answer says why.
func wantDescription(t *testing.T, rec *httptest.ResponseRecorder, want string) {
	t.Helper()
	var e oauthErrorBody
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if !strings.Contains(e.Description, want) {
		t.Errorf("error_description %q does not contain %q", e.Description, want)
	}
}

func TestIDTokenHint(t *testing.T) {
	t.Parallel()
	up := newHintOP(t, testIssuer)
	stranger := hintKey(t)
	other := newHintOP(t, "")

	tests := []struct {
		name    string
		maxAge  time.Duration
		hide    bool
		token   func(h *harness) string
		user    string // 200 for this user
		status  int    // else this error
		code    string
		desc    string // in error_description
		phantom bool   // 200 without a user
	}{
		{name: "mapped by sub", user: "bob",
			token: func(h *harness) string { return up.sign(t, hintJWTClaims(h, testIssuer, "cc")) }},
		{name: "mapped by email when sub is the upstream's own", user: "alice",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "CgVhbGljZRIEY2liYQ", "email", "alice@example.com", "email_verified", true))
			}},
		{name: "email without email_verified", user: "alice",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "x", "email", "ALICE@example.com"))
			}},
		{name: "aud list with the client and azp", user: "bob",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "", "aud", []string{"cc", "api"}, "azp", "cc"))
			}},
		{name: "unverified email is not used", status: 400, code: CodeUnknownUserID, desc: "id_token_hint",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "x", "email", "alice@example.com", "email_verified", false))
			}},
		{name: "email_verified false as a string", status: 400, code: CodeUnknownUserID,
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "x", "email", "alice@example.com", "email_verified", "false"))
			}},
		{name: "username in the email claim is not an e-mail match", status: 400, code: CodeUnknownUserID,
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "x", "email", "alice", "email_verified", true))
			}},
		{name: "unknown user", status: 400, code: CodeUnknownUserID,
			token: func(h *harness) string { return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "nobody")) }},
		{name: "unknown user hidden", hide: true, phantom: true,
			token: func(h *harness) string { return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "sub", "nobody")) }},
		{name: "expired within the default max age", user: "bob",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-23*time.Hour).Unix()))
			}},
		{name: "expired beyond the default max age", status: 400, code: CodeInvalidRequest, desc: "expired more than 24h0m0s ago",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-25*time.Hour).Unix()))
			}},
		{name: "expired within id_token_hint_max_age", maxAge: 10 * time.Minute, user: "bob",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-9*time.Minute).Unix()))
			}},
		{name: "expired beyond id_token_hint_max_age", maxAge: 10 * time.Minute, status: 400, code: CodeInvalidRequest, desc: "expired more than 10m0s ago",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-11*time.Minute).Unix()))
			}},
		{name: "no exp", status: 400, code: CodeInvalidRequest, desc: "no exp",
			token: func(h *harness) string { return up.sign(t, hintJWTClaims(h, testIssuer, "cc", "exp", nil)) }},
		{name: "signed by another key with the upstream's kid", status: 400, code: CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string {
				return hintSign(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: up.kid}}, hintJWTClaims(h, testIssuer, "cc"))
			}},
		{name: "signed by another key", status: 400, code: CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string {
				return hintSign(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: "k9"}}, hintJWTClaims(h, testIssuer, "cc"))
			}},
		{name: "signed with HS256", status: 400, code: CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(h *harness) string {
				return hintSign(t, jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, hintJWTClaims(h, testIssuer, "cc"))
			}},
		{name: "alg none", status: 400, code: CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(h *harness) string {
				payload, _ := json.Marshal(hintJWTClaims(h, testIssuer, "cc"))
				return b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(string(payload)) + "."
			}},
		{name: "another issuer", status: 400, code: CodeInvalidRequest, desc: "not issued by this provider",
			token: func(h *harness) string { return other.sign(t, hintJWTClaims(h, other.issuer, "cc")) }},
		{name: "another issuer claiming the upstream's iss", status: 400, code: CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string { return other.sign(t, hintJWTClaims(h, testIssuer, "cc")) }},
		{name: "another client's ID token", status: 400, code: CodeInvalidRequest, desc: "another client",
			token: func(h *harness) string { return up.sign(t, hintJWTClaims(h, testIssuer, "other")) }},
		{name: "issued to another client through azp", status: 400, code: CodeInvalidRequest, desc: "another client",
			token: func(h *harness) string {
				return up.sign(t, hintJWTClaims(h, testIssuer, "", "aud", []string{"cc", "other"}, "azp", "other"))
			}},
		{name: "malformed", status: 400, code: CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(*harness) string { return "not.a.jwt" }},
		{name: "encrypted (five parts)", status: 400, code: CodeInvalidRequest, desc: "decrypted",
			token: func(*harness) string { return "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, withUpstream(t, up), harnessOption(func(c *Config) {
				c.IDTokenHintMaxAge = tc.maxAge
				c.Limits.HideUnknownUsers = tc.hide
			}))
			rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", tc.token(h)))
			switch {
			case tc.user != "":
				wantUser(t, h, rec, tc.user)
			case tc.phantom:
				wantPhantom(t, h, rec)
			default:
				wantOAuthError(t, rec, tc.status, tc.code)
				wantDescription(t, rec, tc.desc)
				if n := h.records(); n != 0 {
					t.Errorf("%d requests stored after a refused hint", n)
				}
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestIDTokenHintKeysUnavailable: the upstream's keys cannot be fetched:
// temporarily_unavailable, not a refused hint; once they are back, the
// same hint is accepted.
func TestIDTokenHintKeysUnavailable(t *testing.T) {
	t.Parallel()
	up := newHintOP(t, testIssuer)
	h := newHarness(t, withUpstream(t, up))
	up.jwksDown.Store(true)
	hint := up.sign(t, hintJWTClaims(h, testIssuer, "cc"))
	rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint))
	wantOAuthError(t, rec, http.StatusServiceUnavailable, CodeTemporarilyUnavailable)
	up.jwksDown.Store(false)
	wantUser(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), "bob")

	// The key set is kept: further hints do not fetch it again.
	hits := up.jwksHits.Load()
	wantUser(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), "bob")
	if n := up.jwksHits.Load(); n != hits {
		t.Errorf("the upstream's JWKS was fetched %d more times for a known key", n-hits)
	}
}

func TestLoginHintToken(t *testing.T) {
	t.Parallel()
	trusted := newHintOP(t, "")
	second := newHintOP(t, "")
	untrusted := newHintOP(t, "")
	stranger := hintKey(t)
	// A trusted issuer that is down.
	gone := newHintOP(t, "")
	gone.srv.Close()

	tests := []struct {
		name    string
		hide    bool
		token   func(h *harness) string
		user    string
		status  int
		code    string
		desc    string
		phantom bool
	}{
		{name: "mapped by sub", user: "bob",
			token: func(h *harness) string { return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "", "aud", nil)) }},
		{name: "mapped by email", user: "alice",
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "anyone", "sub", "e-42", "email", "alice@example.com", "email_verified", true))
			}},
		{name: "second trusted issuer", user: "bob",
			token: func(h *harness) string { return second.sign(t, hintJWTClaims(h, second.issuer, "x")) }},
		{name: "unverified email is not used", status: 400, code: CodeUnknownUserID, desc: "login_hint_token",
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "sub", "e-42", "email", "alice@example.com", "email_verified", false))
			}},
		{name: "unknown user", status: 400, code: CodeUnknownUserID, desc: "login_hint_token",
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "sub", "nobody"))
			}},
		{name: "unknown user hidden", hide: true, phantom: true,
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "sub", "nobody"))
			}},
		{name: "untrusted issuer", status: 400, code: CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return untrusted.sign(t, hintJWTClaims(h, untrusted.issuer, "x")) }},
		{name: "no issuer", status: 400, code: CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return trusted.sign(t, hintJWTClaims(h, "", "x", "iss", nil)) }},
		{name: "the upstream is not a login_hint_token issuer", status: 400, code: CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return trusted.sign(t, hintJWTClaims(h, testIssuer, "cc")) }},
		{name: "bad signature", status: 400, code: CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string {
				return hintSign(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: trusted.kid}}, hintJWTClaims(h, trusted.issuer, "x"))
			}},
		{name: "another trusted issuer's key", status: 400, code: CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string { return second.sign(t, hintJWTClaims(h, trusted.issuer, "x")) }},
		{name: "tampered payload", status: 400, code: CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string {
				parts := strings.Split(trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x")), ".")
				payload, _ := json.Marshal(hintJWTClaims(h, trusted.issuer, "x", "sub", "alice"))
				return parts[0] + "." + b64(string(payload)) + "." + parts[2]
			}},
		{name: "expired", status: 400, code: CodeExpiredLoginHintToken,
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "exp", h.clock.Now().Add(-time.Second).Unix()))
			}},
		{name: "expired with a bad signature is a bad signature", status: 400, code: CodeInvalidRequest,
			token: func(h *harness) string {
				return hintSign(t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: trusted.kid}},
					hintJWTClaims(h, trusted.issuer, "x", "exp", h.clock.Now().Add(-time.Hour).Unix()))
			}},
		{name: "no exp", status: 400, code: CodeInvalidRequest, desc: "no exp",
			token: func(h *harness) string { return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "exp", nil)) }},
		{name: "not valid yet", status: 400, code: CodeInvalidRequest, desc: "nbf",
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "nbf", h.clock.Now().Add(5*time.Minute).Unix()))
			}},
		{name: "nbf within the skew", user: "bob",
			token: func(h *harness) string {
				return trusted.sign(t, hintJWTClaims(h, trusted.issuer, "x", "nbf", h.clock.Now().Add(30*time.Second).Unix()))
			}},
		{name: "malformed", status: 400, code: CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(*harness) string { return "eyJhbGciOiJFUzI1NiJ9.e30" }},
		{name: "issuer unreachable", status: http.StatusServiceUnavailable, code: CodeTemporarilyUnavailable,
			token: func(h *harness) string { return gone.sign(t, hintJWTClaims(h, gone.issuer, "x")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOption(func(c *Config) {
				c.LoginHintTokenIssuers = []string{trusted.issuer, second.issuer, gone.issuer}
				c.Limits.HideUnknownUsers = tc.hide
			}))
			rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "login_hint_token", tc.token(h)))
			switch {
			case tc.user != "":
				wantUser(t, h, rec, tc.user)
			case tc.phantom:
				wantPhantom(t, h, rec)
			default:
				wantOAuthError(t, rec, tc.status, tc.code)
				wantDescription(t, rec, tc.desc)
				if n := h.records(); n != 0 {
					t.Errorf("%d requests stored after a refused hint", n)
				}
			}
		})
	}
}

// TestLoginHintUnknownUserHidden: with hide_unknown_users, a login_hint
// naming nobody is a phantom as before.
func TestLoginHintUnknownUserHidden(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOption(func(c *Config) { c.Limits.HideUnknownUsers = true }))
	wantPhantom(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "nobody")))
	h2 := newHarness(t)
	rec := h2.post(DefaultEndpoint, "cc", hForm("login_hint", "nobody"))
	wantOAuthError(t, rec, http.StatusBadRequest, CodeUnknownUserID)
	wantDescription(t, rec, "login_hint does not identify")
}

func TestValidateHintSettings(t *testing.T) {
	tests := []struct {
		name    string
		issuers []string
		maxAge  time.Duration
		wantErr string
	}{
		{name: "none"},
		{name: "https and loopback http", issuers: []string{"https://login.example.com", "http://127.0.0.1:9000/realm", "http://localhost:8080"}, maxAge: time.Hour},
		{name: "plain http elsewhere", issuers: []string{"http://login.example.com"}, wantErr: "must be https"},
		{name: "not a URL", issuers: []string{"login.example.com"}, wantErr: "absolute http or https URL"},
		{name: "twice", issuers: []string{"https://a.example", "https://a.example"}, wantErr: "listed twice"},
		{name: "negative max age", maxAge: -time.Second, wantErr: "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{LoginHintTokenIssuers: tc.issuers, IDTokenHintMaxAge: tc.maxAge}
			err := c.validateHintSettings()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
