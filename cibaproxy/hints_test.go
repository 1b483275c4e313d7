package cibaproxy

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// The id_token_hint and login_hint_token of a backchannel request, resolved
// to users: ID tokens of the harness's upstream (a FakeOP reached through
// upstream_via), and tokens of login_hint_token issuers (FakeOPs of their
// own, reached directly).

// hintJWTClaims returns the claims of a hint issued by iss to aud at the
// harness's time, for bob by sub, with kv overriding (a nil value removes
// the claim).
func htClaims(h *harness, iss, aud string, kv ...any) map[string]any {
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
func htWantUser(t *testing.T, h *harness, rec *httptest.ResponseRecorder, username string) {
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
func htWantPhantom(t *testing.T, h *harness, rec *httptest.ResponseRecorder) {
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
func htWantDescription(t *testing.T, rec *httptest.ResponseRecorder, want string) {
	t.Helper()
	var e oauthErrorBody
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if !strings.Contains(e.Description, want) {
		t.Errorf("error_description %q does not contain %q", e.Description, want)
	}
}

func TestIDTokenHint(t *testing.T) {
	t.Parallel()
	// The upstream is the harness's: it signs RS256 with the kit's key.
	// stranger is another RSA key; other is another issuer, signing RS256
	// with it.
	stranger := cibatest.ClientKey(t, "rsa").Signer
	other := cibatest.StartOP(t, "", cibatest.WithKey(stranger, jose.RS256), cibatest.WithKeyID("k1"))

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
			token: func(h *harness) string { return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc")) }},
		{name: "mapped by email when sub is the upstream's own", user: "alice",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "CgVhbGljZRIEY2liYQ", "email", "alice@example.com", "email_verified", true))
			}},
		{name: "email without email_verified", user: "alice",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "x", "email", "ALICE@example.com"))
			}},
		{name: "aud list with the client and azp", user: "bob",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "", "aud", []string{"cc", "api"}, "azp", "cc"))
			}},
		{name: "unverified email is not used", status: 400, code: oauth.CodeUnknownUserID, desc: "id_token_hint",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "x", "email", "alice@example.com", "email_verified", false))
			}},
		{name: "email_verified false as a string", status: 400, code: oauth.CodeUnknownUserID,
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "x", "email", "alice@example.com", "email_verified", "false"))
			}},
		{name: "username in the email claim is not an e-mail match", status: 400, code: oauth.CodeUnknownUserID,
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "x", "email", "alice", "email_verified", true))
			}},
		{name: "unknown user", status: 400, code: oauth.CodeUnknownUserID,
			token: func(h *harness) string { return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "nobody")) }},
		{name: "unknown user hidden", hide: true, phantom: true,
			token: func(h *harness) string { return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "sub", "nobody")) }},
		{name: "expired within the default max age", maxAge: DefaultIDTokenHintMaxAge, user: "bob",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-23*time.Hour).Unix()))
			}},
		{name: "expired beyond the default max age", maxAge: DefaultIDTokenHintMaxAge, status: 400, code: oauth.CodeInvalidRequest, desc: "expired more than 24h0m0s ago",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-25*time.Hour).Unix()))
			}},
		{name: "expired within id_token_hint_max_age", maxAge: 10 * time.Minute, user: "bob",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-9*time.Minute).Unix()))
			}},
		{name: "expired beyond id_token_hint_max_age", maxAge: 10 * time.Minute, status: 400, code: oauth.CodeInvalidRequest, desc: "expired more than 10m0s ago",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-11*time.Minute).Unix()))
			}},
		{name: "max age 0, unexpired", user: "bob",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(time.Second).Unix()))
			}},
		{name: "max age 0, expired a second ago", status: 400, code: oauth.CodeInvalidRequest, desc: "only unexpired ones are accepted",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Add(-time.Second).Unix()))
			}},
		{name: "max age 0, expiring now", status: 400, code: oauth.CodeInvalidRequest, desc: "only unexpired ones are accepted",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", h.clock.Now().Unix()))
			}},
		{name: "no exp", status: 400, code: oauth.CodeInvalidRequest, desc: "no exp",
			token: func(h *harness) string { return h.upstream.Sign(h.t, htClaims(h, testIssuer, "cc", "exp", nil)) }},
		{name: "signed by another key with the upstream's kid", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string {
				return cibatest.SignJWT(h.t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: stranger, KeyID: h.upstream.KeyID()}}, htClaims(h, testIssuer, "cc"))
			}},
		{name: "signed by another key", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string {
				return cibatest.SignJWT(h.t, jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: stranger, KeyID: "k9"}}, htClaims(h, testIssuer, "cc"))
			}},
		{name: "signed with HS256", status: 400, code: oauth.CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(h *harness) string {
				return cibatest.SignJWT(h.t, jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, htClaims(h, testIssuer, "cc"))
			}},
		{name: "alg none", status: 400, code: oauth.CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(h *harness) string {
				payload, _ := json.Marshal(htClaims(h, testIssuer, "cc"))
				return htB64(`{"alg":"none","typ":"JWT"}`) + "." + htB64(string(payload)) + "."
			}},
		{name: "another issuer", status: 400, code: oauth.CodeInvalidRequest, desc: "not issued by this provider",
			token: func(h *harness) string { return other.Sign(h.t, htClaims(h, other.Issuer(), "cc")) }},
		{name: "another issuer claiming the upstream's iss", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by this provider",
			token: func(h *harness) string { return other.Sign(h.t, htClaims(h, testIssuer, "cc")) }},
		{name: "another client's ID token", status: 400, code: oauth.CodeInvalidRequest, desc: "another client",
			token: func(h *harness) string { return h.upstream.Sign(h.t, htClaims(h, testIssuer, "other")) }},
		{name: "issued to another client through azp", status: 400, code: oauth.CodeInvalidRequest, desc: "another client",
			token: func(h *harness) string {
				return h.upstream.Sign(h.t, htClaims(h, testIssuer, "", "aud", []string{"cc", "other"}, "azp", "other"))
			}},
		{name: "malformed", status: 400, code: oauth.CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(*harness) string { return "not.a.jwt" }},
		{name: "encrypted (five parts)", status: 400, code: oauth.CodeInvalidRequest, desc: "decrypted",
			token: func(*harness) string { return "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOption(func(c *Config) {
				c.IDTokenHintMaxAge = tc.maxAge
				c.Limits.HideUnknownUsers = tc.hide
			}))
			rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", tc.token(h)))
			switch {
			case tc.user != "":
				htWantUser(t, h, rec, tc.user)
			case tc.phantom:
				htWantPhantom(t, h, rec)
			default:
				cibatest.WantOAuthError(t, rec, tc.status, tc.code)
				htWantDescription(t, rec, tc.desc)
				if n := h.records(); n != 0 {
					t.Errorf("%d requests stored after a refused hint", n)
				}
			}
		})
	}
}

func htB64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestIDTokenHintKeysUnavailable: the upstream's keys cannot be fetched:
// temporarily_unavailable, not a refused hint; once they are back, the
// same hint is accepted.
func TestIDTokenHintKeysUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.upstream.SetJWKSStatus(http.StatusServiceUnavailable)
	hint := h.upstream.Sign(t, htClaims(h, testIssuer, "cc"))
	rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint))
	cibatest.WantOAuthError(t, rec, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	h.upstream.SetJWKSStatus(0)
	htWantUser(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), "bob")

	// The key set is kept: further hints do not fetch it again.
	hits := h.upstream.JWKSFetches()
	htWantUser(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "id_token_hint", hint)), "bob")
	if n := h.upstream.JWKSFetches(); n != hits {
		t.Errorf("the upstream's JWKS was fetched %d more times for a known key", n-hits)
	}

	// The jwks_uri of the discovery document (on the public issuer) was
	// reached through upstream_via, with the public Host.
	reached := false
	for _, r := range h.upstream.Requests() {
		if r.Path == h.upstream.JWKSPath() {
			reached = true
			if r.Host != "idp.example.com" || r.ForwardedProto != "https" {
				t.Errorf("the JWKS was fetched with Host %q, X-Forwarded-Proto %q", r.Host, r.ForwardedProto)
			}
		}
	}
	if !reached {
		t.Errorf("the upstream's JWKS at %s was never fetched", h.upstream.JWKSPath())
	}
}

func TestLoginHintToken(t *testing.T) {
	t.Parallel()
	issuer := func() *cibatest.FakeOP {
		return cibatest.StartOP(t, "", cibatest.WithES256(), cibatest.WithKeyID("k1"))
	}
	trusted, second, untrusted := issuer(), issuer(), issuer()
	stranger := cibatest.ECKey(t)
	// A trusted issuer that is down.
	gone := issuer()
	gone.Close()

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
			token: func(h *harness) string { return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "", "aud", nil)) }},
		{name: "mapped by email", user: "alice",
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "anyone", "sub", "e-42", "email", "alice@example.com", "email_verified", true))
			}},
		{name: "second trusted issuer", user: "bob",
			token: func(h *harness) string { return second.Sign(h.t, htClaims(h, second.Issuer(), "x")) }},
		{name: "unverified email is not used", status: 400, code: oauth.CodeUnknownUserID, desc: "login_hint_token",
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "sub", "e-42", "email", "alice@example.com", "email_verified", false))
			}},
		{name: "unknown user", status: 400, code: oauth.CodeUnknownUserID, desc: "login_hint_token",
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "sub", "nobody"))
			}},
		{name: "unknown user hidden", hide: true, phantom: true,
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "sub", "nobody"))
			}},
		{name: "untrusted issuer", status: 400, code: oauth.CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return untrusted.Sign(h.t, htClaims(h, untrusted.Issuer(), "x")) }},
		{name: "no issuer", status: 400, code: oauth.CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return trusted.Sign(h.t, htClaims(h, "", "x", "iss", nil)) }},
		{name: "the upstream is not a login_hint_token issuer", status: 400, code: oauth.CodeInvalidRequest, desc: "not issued by a trusted",
			token: func(h *harness) string { return trusted.Sign(h.t, htClaims(h, testIssuer, "cc")) }},
		{name: "bad signature", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string {
				return cibatest.SignJWT(h.t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: trusted.KeyID()}}, htClaims(h, trusted.Issuer(), "x"))
			}},
		{name: "another trusted issuer's key", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string { return second.Sign(h.t, htClaims(h, trusted.Issuer(), "x")) }},
		{name: "tampered payload", status: 400, code: oauth.CodeInvalidRequest, desc: "not signed by its issuer",
			token: func(h *harness) string {
				parts := strings.Split(trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x")), ".")
				payload, _ := json.Marshal(htClaims(h, trusted.Issuer(), "x", "sub", "alice"))
				return parts[0] + "." + htB64(string(payload)) + "." + parts[2]
			}},
		{name: "expired", status: 400, code: oauth.CodeExpiredLoginHintToken,
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "exp", h.clock.Now().Add(-time.Second).Unix()))
			}},
		{name: "expired with a bad signature is a bad signature", status: 400, code: oauth.CodeInvalidRequest,
			token: func(h *harness) string {
				return cibatest.SignJWT(h.t, jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: stranger, KeyID: trusted.KeyID()}},
					htClaims(h, trusted.Issuer(), "x", "exp", h.clock.Now().Add(-time.Hour).Unix()))
			}},
		{name: "no exp", status: 400, code: oauth.CodeInvalidRequest, desc: "no exp",
			token: func(h *harness) string { return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "exp", nil)) }},
		{name: "not valid yet", status: 400, code: oauth.CodeInvalidRequest, desc: "nbf",
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "nbf", h.clock.Now().Add(5*time.Minute).Unix()))
			}},
		{name: "nbf within the skew", user: "bob",
			token: func(h *harness) string {
				return trusted.Sign(h.t, htClaims(h, trusted.Issuer(), "x", "nbf", h.clock.Now().Add(30*time.Second).Unix()))
			}},
		{name: "malformed", status: 400, code: oauth.CodeInvalidRequest, desc: "not a JWT signed with a public-key algorithm",
			token: func(*harness) string { return "eyJhbGciOiJFUzI1NiJ9.e30" }},
		{name: "issuer unreachable", status: http.StatusServiceUnavailable, code: oauth.CodeTemporarilyUnavailable,
			token: func(h *harness) string { return gone.Sign(h.t, htClaims(h, gone.Issuer(), "x")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOption(func(c *Config) {
				c.LoginHintTokenIssuers = []string{trusted.Issuer(), second.Issuer(), gone.Issuer()}
				c.Limits.HideUnknownUsers = tc.hide
			}))
			rec := h.post(DefaultEndpoint, "cc", hForm("login_hint", "", "login_hint_token", tc.token(h)))
			switch {
			case tc.user != "":
				htWantUser(t, h, rec, tc.user)
			case tc.phantom:
				htWantPhantom(t, h, rec)
			default:
				cibatest.WantOAuthError(t, rec, tc.status, tc.code)
				htWantDescription(t, rec, tc.desc)
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
	htWantPhantom(t, h, h.post(DefaultEndpoint, "cc", hForm("login_hint", "nobody")))
	h2 := newHarness(t)
	rec := h2.post(DefaultEndpoint, "cc", hForm("login_hint", "nobody"))
	cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeUnknownUserID)
	htWantDescription(t, rec, "login_hint does not identify")
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
