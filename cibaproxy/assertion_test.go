package cibaproxy

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// Client authentication by private_key_jwt and the keys of the clients, at
// the endpoints of the Server.

// ---- keys and JWTs for the tests ----

// caStaticKeys returns client keys holding the public keys.
func caStaticKeys(t testing.TB, keys ...cibatest.Key) *clients.StaticKeys {
	t.Helper()
	sk, err := clients.NewStaticKeys(cibatest.JWKSJSON(t, keys...))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// caUnsigned builds a JWT with the given header and claims and an
// arbitrary (or empty) signature part.
func caUnsigned(header, claims map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

// caBreakSig flips a bit in the signature of a compact JWS.
func caBreakSig(jwt string) string {
	i := strings.LastIndexByte(jwt, '.')
	sig, err := base64.RawURLEncoding.DecodeString(jwt[i+1:])
	if err != nil || len(sig) == 0 {
		panic("bad signature part")
	}
	sig[len(sig)/2] ^= 0x01
	return jwt[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// caJTI returns a fresh jti.
func caJTI() string {
	id, err := random.Token(12)
	if err != nil {
		panic(err)
	}
	return id
}

// ---- clients with keys in the harness ----

const caPKUpstreamSecret = "pk-upstream-secret"

// caWithKeyClients adds clients with keys:
//   - pk, pk2: private_key_jwt (keys es1 + rsa, es2), request_signing_alg ES256
//   - signer: client_secret_basic with keys es3, request_signing_alg ES256
//   - strict: like signer, with require_signed_requests
func caWithKeyClients(t testing.TB) harnessOption {
	return func(c *Config) {
		c.Clients = append(c.Clients,
			&clients.Client{ID: "pk", AuthMethod: clients.AuthPrivateKeyJWT, Keys: caStaticKeys(t, cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "rsa")),
				UpstreamSecret: caPKUpstreamSecret, RequestSigningAlg: "ES256"},
			&clients.Client{ID: "pk2", AuthMethod: clients.AuthPrivateKeyJWT, Keys: caStaticKeys(t, cibatest.ClientKey(t, "es2")),
				UpstreamSecret: "pk2-upstream", RequestSigningAlg: "ES256"},
			&clients.Client{ID: "signer", SecretHashes: [][32]byte{clients.HashSecret("signer-secret")},
				Keys: caStaticKeys(t, cibatest.ClientKey(t, "es3")), RequestSigningAlg: "ES256"},
			&clients.Client{ID: "strict", SecretHashes: [][32]byte{clients.HashSecret("strict-secret")},
				Keys: caStaticKeys(t, cibatest.ClientKey(t, "es3")), RequestSigningAlg: "ES256", RequireSignedRequests: true},
		)
	}
}

// caKeySecrets are the secrets of the key clients that have one.
var caKeySecrets = map[string]string{"signer": "signer-secret", "rs": "rs-secret", "strict": "strict-secret"}

// caWithRS256Client adds rs, a client_secret_basic client with key rsa and
// request_signing_alg RS256, and allows RS256.
func caWithRS256Client(t testing.TB) harnessOption {
	return func(c *Config) {
		c.AssertionAlgs = []string{"ES256", "PS256", "RS256"}
		c.Clients = append(c.Clients, &clients.Client{ID: "rs", SecretHashes: [][32]byte{clients.HashSecret("rs-secret")},
			Keys: caStaticKeys(t, cibatest.ClientKey(t, "rsa")), RequestSigningAlg: "RS256"})
	}
}

// caSetAcceptedAlgs gives the Server a client registry accepting algs, as
// New would build it had the configuration passed validation: to check
// that what validation refuses is refused at the endpoints all the same.
func caSetAcceptedAlgs(h *harness, algs []string) {
	s := h.srv
	// In place: the endpoints hold the site's registry.
	*s.clients = *clients.NewRegistry(clients.Config{
		Clients:          s.cfg.Clients,
		AssertionAlgs:    algs,
		Issuer:           s.cfg.Issuer,
		BackchannelURL:   s.BackchannelURL(),
		TokenEndpointURL: s.tokenPath.endpointURL,
		Replay:           s.cfg.Backend.Store,
		Now:              s.cfg.Now,
	})
}

// caPostAs sends form to path with Basic credentials id:secret.
func (h *harness) caPostAs(path, id, secret string, form url.Values) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodPost, testPublic+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	return h.serve(req)
}

// caAssertionClaims are valid client-assertion claims for client at the
// harness clock's now.
func (h *harness) caAssertionClaims(client string) map[string]any {
	now := h.clock.Now()
	return map[string]any{
		"iss": client, "sub": client, "aud": testIssuer,
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": caJTI(),
	}
}

// caAssertion signs a fresh valid client assertion for pk (with es1) or
// pk2 (with es2).
func (h *harness) caAssertion(client string) string {
	k := cibatest.ClientKey(h.t, "es1")
	if client == "pk2" {
		k = cibatest.ClientKey(h.t, "es2")
	}
	return k.Sign(h.t, jose.ES256, "", h.caAssertionClaims(client))
}

// caPostAssertion sends form to path with a client assertion and no other
// client authentication.
func (h *harness) caPostAssertion(path string, form url.Values, assertion string) *httptest.ResponseRecorder {
	h.t.Helper()
	f := maps.Clone(form)
	if f == nil {
		f = url.Values{}
	}
	f.Set("client_assertion_type", clients.ClientAssertionType)
	f.Set("client_assertion", assertion)
	return h.post(path, "", f)
}

// caPollForm is the form of a CIBA token request for id.
func caPollForm(id string) url.Values {
	return url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}}
}

// ---- tests ----

// TestClientAssertion covers private_key_jwt (RFC 7523 §2.2, §3) at the
// backchannel endpoint: each rule with a passing and a failing case.
func TestClientAssertion(t *testing.T) {
	es1, es2, rsaKey := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es2"), cibatest.ClientKey(t, "rsa")
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
	at := func(name string, d time.Duration) mod {
		return func(h *harness, c map[string]any) { c[name] = h.clock.Now().Add(d).Unix() }
	}
	tests := []struct {
		name   string
		opts   []harnessOption
		setup  func(h *harness)
		claims mod
		// sign overrides how the assertion is made from the claims.
		sign   func(t *testing.T, c map[string]any) string
		form   url.Values // extra form parameters
		basic  string     // "id:secret" sent as Basic as well
		status int        // 0: success
		code   string
	}{
		{name: "valid, aud = issuer"},
		{name: "aud = token endpoint", claims: set("aud", testPublic+testTokenURL)},
		{name: "aud = backchannel endpoint", claims: set("aud", testPublic+DefaultEndpoint)},
		{name: "aud array with the issuer", claims: set("aud", []string{"https://other.example.com", testIssuer})},
		{name: "wrong aud", claims: set("aud", "https://other.example.com/realms/main"), status: 401, code: oauth.CodeInvalidClient},
		{name: "aud = the upstream's token endpoint on another origin", claims: set("aud", "https://internal.example.com"+testTokenURL), status: 401, code: oauth.CodeInvalidClient},
		{name: "missing aud", claims: set("aud", nil), status: 401, code: oauth.CodeInvalidClient},
		{name: "aud not a string", claims: set("aud", 42), status: 401, code: oauth.CodeInvalidClient},
		{name: "expired", claims: at("exp", -time.Minute), status: 401, code: oauth.CodeInvalidClient},
		{name: "expired within the skew", claims: at("exp", -10*time.Second)},
		{name: "missing exp", claims: set("exp", nil), status: 401, code: oauth.CodeInvalidClient},
		{name: "exp as a string", claims: set("exp", "2030-01-01"), status: 401, code: oauth.CodeInvalidClient},
		{name: "exp 9 minutes ahead", claims: at("exp", 9*time.Minute)},
		{name: "exp an hour ahead", claims: at("exp", time.Hour), status: 401, code: oauth.CodeInvalidClient},
		{name: "nbf in the future", claims: at("nbf", 5*time.Minute), status: 401, code: oauth.CodeInvalidClient},
		{name: "nbf now", claims: at("nbf", 0)},
		{name: "iat in the future", claims: at("iat", 5*time.Minute), status: 401, code: oauth.CodeInvalidClient},
		{name: "missing jti", claims: set("jti", nil), status: 401, code: oauth.CodeInvalidClient},
		{name: "iss differs from sub", claims: set("sub", "pk2"), status: 401, code: oauth.CodeInvalidClient},
		{name: "missing sub", claims: set("sub", nil), status: 401, code: oauth.CodeInvalidClient},
		{name: "missing iss", claims: set("iss", nil), status: 401, code: oauth.CodeInvalidClient},
		{name: "unknown client", claims: set("iss", "nobody", "sub", "nobody"), status: 401, code: oauth.CodeInvalidClient},
		{name: "secret client sends an assertion", claims: set("iss", "signer", "sub", "signer"), status: 401, code: oauth.CodeInvalidClient},
		{name: "another private_key_jwt client's assertion by its own key", claims: set("iss", "pk2", "sub", "pk2"),
			sign: func(t *testing.T, c map[string]any) string { return es2.Sign(t, jose.ES256, "", c) }},
		{name: "signed by another client's key", sign: func(t *testing.T, c map[string]any) string {
			return es2.Sign(t, jose.ES256, "-", c)
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "another client's key under its kid", sign: func(t *testing.T, c map[string]any) string {
			return es2.Sign(t, jose.ES256, es1.ID, c)
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "unknown kid", sign: func(t *testing.T, c map[string]any) string {
			return es1.Sign(t, jose.ES256, "kid-unknown", c)
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "no kid", sign: func(t *testing.T, c map[string]any) string { return es1.Sign(t, jose.ES256, "-", c) }},
		{name: "PS256", sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.PS256, "", c) }},
		{name: "RS256 when not allowed", sign: func(t *testing.T, c map[string]any) string {
			return rsaKey.Sign(t, jose.RS256, "", c)
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "RS256 when allowed", opts: []harnessOption{func(c *Config) { c.AssertionAlgs = []string{"ES256", "RS256"} }},
			sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.RS256, "", c) }},
		{name: "PS256 when only ES256 is allowed", opts: []harnessOption{func(c *Config) { c.AssertionAlgs = []string{"ES256"} }},
			sign: func(t *testing.T, c map[string]any) string { return rsaKey.Sign(t, jose.PS256, "", c) }, status: 401, code: oauth.CodeInvalidClient},
		{name: "HS256 configured is still refused", setup: func(h *harness) {
			// past the validation of the configuration, which refuses it
			caSetAcceptedAlgs(h, []string{"HS256", "ES256"})
		},
			sign: func(t *testing.T, c map[string]any) string {
				return caUnsigned(map[string]any{"alg": "HS256", "kid": es1.ID}, c, "c2ln")
			}, status: 401, code: oauth.CodeInvalidClient},
		{name: "alg none", sign: func(t *testing.T, c map[string]any) string {
			return caUnsigned(map[string]any{"alg": "none"}, c, "")
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "broken signature", sign: func(t *testing.T, c map[string]any) string {
			return caBreakSig(es1.Sign(t, jose.ES256, "", c))
		}, status: 401, code: oauth.CodeInvalidClient},
		{name: "encrypted (five parts)", sign: func(t *testing.T, c map[string]any) string { return "a.b.c.d.e" }, status: 401, code: oauth.CodeInvalidClient},
		{name: "not a JWT", sign: func(t *testing.T, c map[string]any) string { return "garbage" }, status: 401, code: oauth.CodeInvalidClient},
		{name: "matching client_id", form: url.Values{"client_id": {"pk"}}},
		{name: "another client_id", form: url.Values{"client_id": {"pk2"}}, status: 401, code: oauth.CodeInvalidClient},
		{name: "unknown client_assertion_type", form: url.Values{"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}},
			status: 401, code: oauth.CodeInvalidClient},
		{name: "assertion and Basic", basic: "cc:cc-secret", status: 400, code: oauth.CodeInvalidRequest},
		{name: "assertion and client_secret", form: url.Values{"client_id": {"pk"}, "client_secret": {"x"}}, status: 400, code: oauth.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, append([]harnessOption{caWithKeyClients(t)}, tc.opts...)...)
			if tc.setup != nil {
				tc.setup(h)
			}
			c := h.caAssertionClaims("pk")
			if tc.claims != nil {
				tc.claims(h, c)
			}
			var a string
			if tc.sign != nil {
				a = tc.sign(t, c)
			} else {
				a = es1.Sign(t, jose.ES256, "", c)
			}
			form := hForm()
			form.Set("client_assertion_type", clients.ClientAssertionType)
			form.Set("client_assertion", a)
			for k, v := range tc.form {
				form[k] = v
			}
			req := httptest.NewRequest(http.MethodPost, testPublic+DefaultEndpoint, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.basic != "" {
				id, secret, _ := strings.Cut(tc.basic, ":")
				req.SetBasicAuth(id, secret)
			}
			rec := h.serve(req)
			if tc.status == 0 {
				cibatest.AuthReqID(t, rec)
				return
			}
			cibatest.WantOAuthError(t, rec, tc.status, tc.code)
			if tc.status == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if n := h.records(); n != 0 {
				t.Errorf("%d requests stored", n)
			}
		})
	}
}

// TestClientAssertionMissing: a private_key_jwt client must authenticate
// with an assertion at both endpoints, and a secret does not do instead.
func TestClientAssertionMissing(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t), func(c *Config) {
		for _, cl := range c.Clients {
			if cl.ID == "pk" {
				// A private_key_jwt client may have a secret (its
				// upstream secret, say); it never authenticates with it.
				cl.SecretHashes = [][32]byte{clients.HashSecret("pk-secret")}
			}
		}
	})
	id := cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), h.caAssertion("pk")))
	for _, ep := range []struct {
		name string
		path string
		form url.Values
	}{
		{"backchannel", DefaultEndpoint, hForm()},
		{"token", testTokenURL, caPollForm(id)},
	} {
		t.Run(ep.name, func(t *testing.T) {
			f := url.Values{"client_id": {"pk"}}
			for k, v := range ep.form {
				f[k] = v
			}
			cibatest.WantOAuthError(t, h.post(ep.path, "", f), 401, oauth.CodeInvalidClient)
			cibatest.WantOAuthError(t, h.caPostAs(ep.path, "pk", "pk-secret", ep.form), 401, oauth.CodeInvalidClient)
			f.Set("client_secret", "pk-secret")
			cibatest.WantOAuthError(t, h.post(ep.path, "", f), 401, oauth.CodeInvalidClient)
		})
	}
	if n := h.records(); n != 1 {
		t.Errorf("%d requests stored, want 1", n)
	}
}

// TestClientAssertionReplay: a jti is accepted once, at either endpoint,
// and remembered per client.
func TestClientAssertionReplay(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	a := h.caAssertion("pk")
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), a))
	cibatest.WantOAuthError(t, h.caPostAssertion(DefaultEndpoint, hForm(), a), 401, oauth.CodeInvalidClient)
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm("x"), a), 401, oauth.CodeInvalidClient)

	// The same jti from another client is that client's own.
	c1 := h.caAssertionClaims("pk")
	c2 := h.caAssertionClaims("pk2")
	c2["jti"] = c1["jti"]
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c1)))
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), cibatest.ClientKey(t, "es2").Sign(t, jose.ES256, "", c2)))

	// A replayed assertion stays refused after a restart of the server on
	// the same store, until it expires.
	c3 := h.caAssertionClaims("pk")
	a3 := cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c3)
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), a3))
	h.srv.Close()
	srv, err := New(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	h.srv = srv
	cibatest.WantOAuthError(t, h.caPostAssertion(DefaultEndpoint, hForm(), a3), 401, oauth.CodeInvalidClient)
}

// TestClientAssertionTokenEndpoint: the token endpoint takes assertions
// as the backchannel endpoint does, with the same rules.
func TestClientAssertionTokenEndpoint(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	id := cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), h.caAssertion("pk")))

	rs := h.caAssertionClaims("pk")
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), cibatest.ClientKey(t, "rsa").Sign(t, jose.RS256, "", rs)), 401, oauth.CodeInvalidClient)
	wrong := h.caAssertionClaims("pk")
	wrong["aud"] = "https://other.example.com"
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", wrong)), 401, oauth.CodeInvalidClient)

	for _, aud := range []string{testIssuer, testPublic + testTokenURL, testPublic + DefaultEndpoint} {
		c := h.caAssertionClaims("pk")
		c["aud"] = aud
		h.clock.Advance(6 * time.Second)
		cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c)), 400, oauth.CodeAuthorizationPending)
	}
	// Another private_key_jwt client cannot poll pk's request.
	h.clock.Advance(6 * time.Second)
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), h.caAssertion("pk2")), 400, oauth.CodeInvalidGrant)
}

// TestPrivateKeyJWTPollFlow: a private_key_jwt client with a signed
// request, approved, polls its tokens.
func TestPrivateKeyJWTPollFlow(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t))
	now := h.clock.Now()
	req := cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", map[string]any{
		"iss": "pk", "aud": testIssuer, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(),
		"nbf": now.Unix(), "jti": caJTI(), "scope": "openid email", "login_hint": "bob",
		"binding_message": "K7-QX", "requested_expiry": "120",
	})
	rec := h.caPostAssertion(DefaultEndpoint, url.Values{"request": {req}}, h.caAssertion("pk"))
	id := cibatest.AuthReqID(t, rec)
	var ack bcResponse
	_ = json.Unmarshal(rec.Body.Bytes(), &ack)
	if ack.ExpiresIn != 120 {
		t.Errorf("expires_in %d, want 120", ack.ExpiresIn)
	}
	stored := h.get(id)
	if stored.ClientID != "pk" || stored.User.Username != "bob" || stored.BindingMessage != "K7-QX" {
		t.Errorf("stored %+v", stored)
	}
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), h.caAssertion("pk")), 400, oauth.CodeAuthorizationPending)
	h.approve(id)
	h.clock.Advance(5 * time.Second)
	rec = h.caPostAssertion(testTokenURL, caPollForm(id), h.caAssertion("pk"))
	if rec.Code != 200 {
		t.Fatalf("poll after approval: %d %s", rec.Code, rec.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || tok.AccessToken == "" || tok.IDToken == "" {
		t.Fatalf("token response %s", rec.Body)
	}
	h.minter.mu.Lock()
	g := h.minter.grants[len(h.minter.grants)-1]
	h.minter.mu.Unlock()
	if g.Client == nil || g.Client.ID != "pk" || g.Client.UpstreamSecret != caPKUpstreamSecret {
		t.Errorf("minted for %+v, want pk with its upstream secret", g.Client)
	}
	// Redeemed once.
	h.clock.Advance(5 * time.Second)
	cibatest.WantOAuthError(t, h.caPostAssertion(testTokenURL, caPollForm(id), h.caAssertion("pk")), 400, oauth.CodeInvalidGrant)
}

// TestAssertionAudienceLearnsTokenPath: without token_path, aud = the
// token endpoint is recognised from discovery.
func TestAssertionAudienceLearnsTokenPath(t *testing.T) {
	h := newHarness(t, caWithKeyClients(t), func(c *Config) { c.TokenPath = "" })
	c := h.caAssertionClaims("pk")
	c["aud"] = testIssuer + "/protocol/openid-connect/token"
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c)))
	h.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	c = h.caAssertionClaims("pk")
	c["aud"] = testIssuer + "/protocol/openid-connect/token"
	// learned and remembered: no discovery needed any more
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), cibatest.ClientKey(t, "es1").Sign(t, jose.ES256, "", c)))
}

// TestDiscoveryAdvertisesKeys: discovery lists private_key_jwt with the
// accepted algorithms, and the request-object algorithms.
func TestDiscoveryAdvertisesKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		algs []string
		want string
	}{
		{"defaults", nil, "ES256 PS256"},
		{"configured", []string{"ES256"}, "ES256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.AssertionAlgs = tc.algs })
			h.upstream.EditDoc(func(doc map[string]any) {
				doc["token_endpoint_auth_methods_supported"] = []string{"client_secret_basic", "client_secret_post"}
			})
			rec := h.serve(httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil))
			if rec.Code != 200 {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			list := func(k string) string {
				var out []string
				l, _ := doc[k].([]any)
				for _, v := range l {
					out = append(out, v.(string))
				}
				return strings.Join(out, " ")
			}
			if got := list("token_endpoint_auth_methods_supported"); got != "client_secret_basic client_secret_post private_key_jwt" {
				t.Errorf("token_endpoint_auth_methods_supported = %s", got)
			}
			if got := list("token_endpoint_auth_signing_alg_values_supported"); got != tc.want {
				t.Errorf("token_endpoint_auth_signing_alg_values_supported = %s, want %s", got, tc.want)
			}
			if got := list("backchannel_authentication_request_signing_alg_values_supported"); got != tc.want {
				t.Errorf("backchannel_authentication_request_signing_alg_values_supported = %s, want %s", got, tc.want)
			}
		})
	}
}
