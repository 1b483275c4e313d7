package cibaproxy

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// roRequestClaims are valid signed-request claims of client at the harness
// clock's now.
func (h *harness) roRequestClaims(client string) map[string]any {
	now := h.clock.Now()
	return map[string]any{
		"iss": client, "aud": testIssuer,
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(), "jti": caJTI(),
		"scope": "openid email", "login_hint": "alice", "binding_message": "W4SCT",
	}
}

// TestRequestObject covers signed authentication requests (CIBA Core
// §7.1.1, FAPI-CIBA §5.2.2) and each request-object case of the OIDF
// conformance suite, with a passing case for each rule.
func TestRequestObject(t *testing.T) {
	es1, es2, es3, rsaKey := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es2"), cibatest.ClientKey(t, "es3"), cibatest.ClientKey(t, "rsa")
	type mod func(h *harness, c map[string]any)
	set := func(kv ...any) mod {
		return func(h *harness, c map[string]any) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == nil {
					delete(c, kv[i].(string))
					continue
				}
				c[kv[i].(string)] = kv[i+1]
			}
		}
	}
	at := func(kv ...any) mod {
		return func(h *harness, c map[string]any) {
			for i := 0; i+1 < len(kv); i += 2 {
				c[kv[i].(string)] = h.clock.Now().Add(kv[i+1].(time.Duration)).Unix()
			}
		}
	}
	tests := []struct {
		name   string
		opts   []harnessOption
		setup  func(h *harness)
		client string // Basic-authenticated client; default signer
		claims mod
		sign   func(t *testing.T, c map[string]any) string
		form   url.Values // beside the request
		status int        // 0: success
		code   string
		check  func(t *testing.T, h *harness, id string)
	}{
		{name: "valid", check: func(t *testing.T, h *harness, id string) {
			r := h.get(id)
			if r.ClientID != "signer" || r.User.Username != "alice" || r.BindingMessage != "W4SCT" || strings.Join(r.Scopes, " ") != "openid email" {
				t.Errorf("stored %+v", r)
			}
		}},
		{name: "missing aud", claims: set("aud", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "bad aud", claims: set("aud", "https://other.example.com/realms/main"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "aud = backchannel endpoint", claims: set("aud", testPublic+DefaultEndpoint), status: 400, code: oauth.CodeInvalidRequest},
		{name: "aud array with the issuer", claims: set("aud", []string{testIssuer, "https://other.example.com"})},
		{name: "missing iss", claims: set("iss", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "iss another valid client", claims: set("iss", "cc"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "missing exp", claims: set("exp", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "expired exp", claims: at("exp", -time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "exp 70 minutes in the future", claims: at("exp", 70*time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "exp 59 minutes in the future", claims: at("exp", 59*time.Minute)},
		{name: "missing iat", claims: set("iat", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "iat in the future", claims: at("iat", 10*time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "missing nbf", claims: set("nbf", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "nbf 10 minutes in the future", claims: at("nbf", 10*time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "nbf within the skew", claims: at("nbf", 20*time.Second)},
		{name: "nbf 70 minutes in the past", claims: at("nbf", -70*time.Minute, "iat", -70*time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "nbf 50 minutes in the past", claims: at("nbf", -50*time.Minute, "iat", -50*time.Minute)},
		{name: "exp before nbf", claims: at("nbf", 20*time.Second, "exp", 10*time.Second), status: 400, code: oauth.CodeInvalidRequest},
		// The lifetime is exp - nbf, at most 60 minutes (FAPI-CIBA §5.2.2),
		// however much of it is left.
		{name: "lifetime 70 minutes, 40 left", claims: at("nbf", -30*time.Minute, "iat", -30*time.Minute, "exp", 40*time.Minute), status: 400, code: oauth.CodeInvalidRequest},
		{name: "lifetime 60 minutes, 40 left", claims: at("nbf", -20*time.Minute, "iat", -20*time.Minute, "exp", 40*time.Minute)},
		{name: "lifetime 60 minutes and a second", claims: at("nbf", -20*time.Minute, "iat", -20*time.Minute, "exp", 40*time.Minute+time.Second), status: 400, code: oauth.CodeInvalidRequest},
		// The clocks may differ by 30 s, either way.
		{name: "nbf 29 s in the future", claims: at("nbf", 29*time.Second)},
		{name: "nbf 30 s in the future", claims: at("nbf", 30*time.Second)},
		{name: "nbf 31 s in the future", claims: at("nbf", 31*time.Second), status: 400, code: oauth.CodeInvalidRequest},
		{name: "iat 30 s in the future", claims: at("iat", 30*time.Second)},
		{name: "iat 31 s in the future", claims: at("iat", 31*time.Second), status: 400, code: oauth.CodeInvalidRequest},
		{name: "exp 29 s ago", claims: at("nbf", -time.Minute, "iat", -time.Minute, "exp", -29*time.Second)},
		{name: "exp 30 s ago", claims: at("nbf", -time.Minute, "iat", -time.Minute, "exp", -30*time.Second), status: 400, code: oauth.CodeInvalidRequest},
		// nbf at most 60 minutes ago.
		{name: "nbf 60 minutes ago", claims: at("nbf", -60*time.Minute, "iat", -60*time.Minute, "exp", time.Duration(0))},
		{name: "nbf 60 minutes and a second ago", claims: at("nbf", -60*time.Minute-time.Second, "iat", -61*time.Minute, "exp", -time.Second), status: 400, code: oauth.CodeInvalidRequest},
		{name: "missing jti", claims: set("jti", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "jti not a string", claims: set("jti", 7), status: 400, code: oauth.CodeInvalidRequest},
		{name: "alg none", sign: func(t *testing.T, c map[string]any) string {
			return caUnsigned(map[string]any{"alg": "none"}, c, "")
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "HS256", sign: func(t *testing.T, c map[string]any) string {
			return caUnsigned(map[string]any{"alg": "HS256"}, c, "c2ln")
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "broken signature", sign: func(t *testing.T, c map[string]any) string {
			return caBreakSig(es3.Sign(t, jose.ES256, "", c))
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "signed by another client's key", sign: func(t *testing.T, c map[string]any) string {
			return es2.Sign(t, jose.ES256, "", c)
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "another client's key under the client's kid", sign: func(t *testing.T, c map[string]any) string {
			return es1.Sign(t, jose.ES256, es3.ID, c)
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "no kid", sign: func(t *testing.T, c map[string]any) string { return es3.Sign(t, jose.ES256, "-", c) }},
		{name: "RS256 when not allowed", sign: func(t *testing.T, c map[string]any) string {
			return rsaKey.Sign(t, jose.RS256, "", c)
		}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "RS256 when allowed and registered", client: "rs", claims: set("iss", "rs"), opts: []harnessOption{caWithRS256Client(t)},
			sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.RS256, "", c) }},
		{name: "an algorithm other than the registered one", client: "rs", claims: set("iss", "rs"), opts: []harnessOption{caWithRS256Client(t)},
			sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.PS256, "", c) }, status: 400, code: oauth.CodeInvalidRequest},
		{name: "registered algorithm no longer allowed", client: "rs", claims: set("iss", "rs"),
			opts: []harnessOption{caWithRS256Client(t)}, setup: func(h *harness) {
				// past the validation of the configuration, which refuses it
				caSetAcceptedAlgs(h, []string{"ES256"})
			},
			sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.RS256, "", c) }, status: 400, code: oauth.CodeInvalidRequest},
		{name: "client without request_signing_alg", client: "cc", claims: set("iss", "cc"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "encrypted", sign: func(t *testing.T, c map[string]any) string { return "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d" }, status: 400, code: oauth.CodeInvalidRequest},
		{name: "not a JWT", sign: func(t *testing.T, c map[string]any) string { return "eyJ.eyJ.sig" }, status: 400, code: oauth.CodeInvalidRequest},

		// parameters inside and outside the JWT
		{name: "login_hint also outside", form: url.Values{"login_hint": {"alice"}}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "scope only outside", claims: set("scope", nil), form: url.Values{"scope": {"openid"}}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "binding_message outside", form: url.Values{"binding_message": {"X"}}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "unknown parameter outside", form: url.Values{"foo": {"bar"}}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "request_uri outside", form: url.Values{"request_uri": {"urn:x"}}, status: 400, code: oauth.CodeInvalidRequest},
		{name: "client_id outside", form: url.Values{"client_id": {"signer"}}},
		{name: "unknown claim inside is ignored", claims: set("foo", map[string]any{"a": 1})},

		// claim types and the parameter checks
		{name: "requested_expiry as a string", claims: set("requested_expiry", "120"), check: roWantExpiresIn(120)},
		{name: "requested_expiry as a number", claims: set("requested_expiry", 90), check: roWantExpiresIn(90)},
		{name: "requested_expiry as a fraction", claims: set("requested_expiry", 90.5), status: 400, code: oauth.CodeInvalidRequest},
		{name: "requested_expiry negative", claims: set("requested_expiry", -90), status: 400, code: oauth.CodeInvalidRequest},
		{name: "requested_expiry a bool", claims: set("requested_expiry", true), status: 400, code: oauth.CodeInvalidRequest},
		{name: "requested_expiry a non-numeric string", claims: set("requested_expiry", "ten"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "binding_message a number", claims: set("binding_message", 1234), status: 400, code: oauth.CodeInvalidRequest},
		{name: "binding_message too long", claims: set("binding_message", strings.Repeat("x", DefaultBindingMessageMax+1)), status: 400, code: oauth.CodeInvalidBindingMessage},
		{name: "empty binding_message is absent", claims: set("binding_message", ""), check: func(t *testing.T, h *harness, id string) {
			if m := h.get(id).BindingMessage; m != "" {
				t.Errorf("binding message %q", m)
			}
		}},
		{name: "null login_hint is absent", claims: set("login_hint", nil, "login_hint_token", nil), status: 400, code: oauth.CodeInvalidRequest},
		{name: "two hints inside", claims: set("id_token_hint", "a.b.c"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "scope without openid", claims: set("scope", "email"), status: 400, code: oauth.CodeInvalidScope},
		{name: "scope an array", claims: set("scope", []string{"openid"}), status: 400, code: oauth.CodeInvalidRequest},
		{name: "unknown user", claims: set("login_hint", "mallory"), status: 400, code: oauth.CodeUnknownUserID},
		{name: "request claim inside", claims: set("request", "a.b.c"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "request_uri claim inside", claims: set("request_uri", "urn:x"), status: 400, code: oauth.CodeInvalidRequest},
		{name: "client_id claim of the client", claims: set("client_id", "signer")},
		{name: "client_id claim of another client", claims: set("client_id", "cc"), status: 400, code: oauth.CodeInvalidRequest},

		// the client authenticates by private_key_jwt
		{name: "private_key_jwt client", client: "pk", claims: set("iss", "pk"),
			sign: func(t *testing.T, c map[string]any) string { return es1.Sign(t, jose.ES256, "", c) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, append([]harnessOption{caWithKeyClients(t)}, tc.opts...)...)
			if tc.setup != nil {
				tc.setup(h)
			}
			c := h.roRequestClaims("signer")
			if tc.claims != nil {
				tc.claims(h, c)
			}
			var jwt string
			if tc.sign != nil {
				jwt = tc.sign(t, c)
			} else {
				jwt = es3.Sign(t, jose.ES256, "", c)
			}
			form := url.Values{"request": {jwt}}
			for k, v := range tc.form {
				form[k] = v
			}
			client := tc.client
			if client == "" {
				client = "signer"
			}
			rec := func() *httptest.ResponseRecorder {
				if client == "pk" {
					return h.caPostAssertion(DefaultEndpoint, form, h.caAssertion("pk"))
				}
				secret := caKeySecrets[client]
				if secret == "" {
					secret = harnessSecrets[client]
				}
				return h.caPostAs(DefaultEndpoint, client, secret, form)
			}()
			if tc.status == 0 {
				id := cibatest.AuthReqID(t, rec)
				if tc.check != nil {
					tc.check(t, h, id)
				}
				return
			}
			cibatest.WantOAuthError(t, rec, tc.status, tc.code)
			if n := h.records(); n != 0 {
				t.Errorf("%d requests stored", n)
			}
		})
	}
}

func roWantExpiresIn(n int64) func(t *testing.T, h *harness, id string) {
	return func(t *testing.T, h *harness, id string) {
		r := h.get(id)
		if got := int64(r.Expires.Sub(r.Created) / time.Second); got != n {
			t.Errorf("lifetime %ds, want %d", got, n)
		}
	}
}

// TestRequestObjectReplay: a signed request's jti is accepted once per
// client; the replay cache of client assertions is apart.
func TestRequestObjectReplay(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	c := h.roRequestClaims("signer")
	jwt := cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c)
	cibatest.AuthReqID(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret", url.Values{"request": {jwt}}))
	rec := h.caPostAs(DefaultEndpoint, "signer", "signer-secret", url.Values{"request": {jwt}})
	cibatest.WantOAuthError(t, rec, 400, oauth.CodeInvalidRequest)
	if !strings.Contains(rec.Body.String(), "jti") {
		t.Errorf("replay answered %s", rec.Body)
	}
	// Re-signed with the same jti: still a replay.
	cibatest.WantOAuthError(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret",
		url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "-", c)}}), 400, oauth.CodeInvalidRequest)

	// The same jti in another client's request is that client's own, and a
	// client assertion may share it with the signed request it carries.
	c2 := h.roRequestClaims("pk")
	c2["jti"] = c["jti"]
	a := h.caAssertionClaims("pk")
	a["jti"] = c["jti"]
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, url.Values{"request": {cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c2)}},
		cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", a)))

	// A request whose parameters are refused does not use up its jti.
	c3 := h.roRequestClaims("signer")
	c3["binding_message"] = strings.Repeat("x", 100)
	cibatest.WantOAuthError(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret",
		url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c3)}}), 400, oauth.CodeInvalidBindingMessage)
	c3["binding_message"] = "ok"
	cibatest.AuthReqID(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret",
		url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c3)}}))
}

// TestRequireSignedRequests: require_signed_requests, for one client or
// for all, refuses unsigned requests and accepts signed ones.
func TestRequireSignedRequests(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		h := newHarness(t, caWithKeyClients(t))
		cibatest.WantOAuthError(t, h.caPostAs(DefaultEndpoint, "strict", "strict-secret", hForm()), 400, oauth.CodeInvalidRequest)
		c := h.roRequestClaims("strict")
		cibatest.AuthReqID(t, h.caPostAs(DefaultEndpoint, "strict", "strict-secret", url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c)}}))
		// other clients may still send unsigned requests
		cibatest.AuthReqID(t, h.post(DefaultEndpoint, "cc", hForm()))
	})
	t.Run("proxy", func(t *testing.T) {
		h := newHarness(t, caWithKeyClients(t), func(c *Config) {
			c.RequireSignedRequests = true
			// Config.Validate: every client can sign then.
			c.Clients = slices.DeleteFunc(c.Clients, func(cl *clients.Client) bool { return cl.RequestSigningAlg == "" })
		})
		if err := h.cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		cibatest.WantOAuthError(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret", hForm()), 400, oauth.CodeInvalidRequest)
		cibatest.WantOAuthError(t, h.caPostAssertion(DefaultEndpoint, hForm(), h.caAssertion("pk")), 400, oauth.CodeInvalidRequest)
		c := h.roRequestClaims("signer")
		cibatest.AuthReqID(t, h.caPostAs(DefaultEndpoint, "signer", "signer-secret", url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c)}}))
		if n := h.records(); n != 1 {
			t.Errorf("%d requests stored, want 1", n)
		}
	})
}

// TestRequestObjectAfterClientAuthentication: CIBA Core §7.2 authenticates
// the client before the request is looked at.
func TestRequestObjectAfterClientAuthentication(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	c := h.roRequestClaims("signer")
	rec := h.caPostAs(DefaultEndpoint, "signer", "wrong", url.Values{"request": {"not-a-jwt"}})
	cibatest.WantOAuthError(t, rec, http.StatusUnauthorized, oauth.CodeInvalidClient)
	// A valid request of signer sent by another client is that client's
	// request with a foreign iss.
	rec = h.post(DefaultEndpoint, "cc", url.Values{"request": {cibatest.ClientKey(t, "es3").Sign(t, jose.ES256, "", c)}})
	cibatest.WantOAuthError(t, rec, 400, oauth.CodeInvalidRequest)
}
