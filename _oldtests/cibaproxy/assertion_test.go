package cibaproxy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ---- keys and JWTs for the tests ----

// testKey is a client's signing key.
type testKey struct {
	priv crypto.Signer
	kid  string
}

var (
	testKeysOnce sync.Once
	testKeyMap   map[string]testKey
)

// tKey returns the named test key, made once per run: "es1", "es2",
// "es3", "es-rotated" (P-256) and "rsa" (2048 bits).
func tKey(name string) testKey {
	testKeysOnce.Do(func() {
		testKeyMap = map[string]testKey{}
		for _, n := range []string{"es1", "es2", "es3", "es-rotated"} {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				panic(err)
			}
			testKeyMap[n] = testKey{priv: k, kid: "kid-" + n}
		}
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKeyMap["rsa"] = testKey{priv: k, kid: "kid-rsa"}
	})
	k, ok := testKeyMap[name]
	if !ok {
		panic("no test key " + name)
	}
	return k
}

// public returns the key's public JWK.
func (k testKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Use: "sig"}
}

// jwksJSON returns a JWK Set of the public keys.
func jwksJSON(keys ...testKey) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// staticKeys returns ClientKeys holding the public keys.
func staticKeys(t testing.TB, keys ...testKey) *StaticKeys {
	t.Helper()
	sk, err := NewStaticKeys(jwksJSON(keys...))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// signJWT signs claims with k using alg; kid "" keeps the key's kid, "-"
// sends none.
func signJWT(t testing.TB, k testKey, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	if kid == "" {
		kid = k.kid
	}
	opts := &jose.SignerOptions{}
	if kid != "-" {
		opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
	opts.WithType("JWT")
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsignedJWT builds a JWT with the given header and claims and an
// arbitrary (or empty) signature part.
func unsignedJWT(header, claims map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + sig
}

// breakSignature flips a bit in the signature of a compact JWS.
func breakSignature(jwt string) string {
	i := strings.LastIndexByte(jwt, '.')
	sig, err := base64.RawURLEncoding.DecodeString(jwt[i+1:])
	if err != nil || len(sig) == 0 {
		panic("bad signature part")
	}
	sig[len(sig)/2] ^= 0x01
	return jwt[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

func newJTI() string {
	id, err := randomToken(12)
	if err != nil {
		panic(err)
	}
	return id
}

// ---- clients with keys in the harness ----

const pkUpstreamSecret = "pk-upstream-secret"

// withKeyClients adds clients with keys:
//   - pk, pk2: private_key_jwt (keys es1 + rsa, es2), request_signing_alg ES256
//   - signer: client_secret_basic with keys es3, request_signing_alg ES256
//   - strict: like signer, with require_signed_requests
func withKeyClients(t testing.TB) harnessOption {
	return func(c *Config) {
		c.Clients = append(c.Clients,
			&Client{ID: "pk", AuthMethod: AuthPrivateKeyJWT, Keys: staticKeys(t, tKey("es1"), tKey("rsa")),
				UpstreamSecret: pkUpstreamSecret, RequestSigningAlg: "ES256"},
			&Client{ID: "pk2", AuthMethod: AuthPrivateKeyJWT, Keys: staticKeys(t, tKey("es2")),
				UpstreamSecret: "pk2-upstream", RequestSigningAlg: "ES256"},
			&Client{ID: "signer", SecretHashes: [][32]byte{HashSecret("signer-secret")},
				Keys: staticKeys(t, tKey("es3")), RequestSigningAlg: "ES256"},
			&Client{ID: "strict", SecretHashes: [][32]byte{HashSecret("strict-secret")},
				Keys: staticKeys(t, tKey("es3")), RequestSigningAlg: "ES256", RequireSignedRequests: true},
		)
	}
}

// keySecrets are the secrets of the withKeyClients clients that have one.
var keySecrets = map[string]string{"signer": "signer-secret", "rs": "rs-secret", "strict": "strict-secret"}

// withRS256Client adds rs, a client_secret_basic client with key rsa and
// request_signing_alg RS256, and allows RS256.
func withRS256Client(t testing.TB) harnessOption {
	return func(c *Config) {
		c.AssertionAlgs = []string{"ES256", "PS256", "RS256"}
		c.Clients = append(c.Clients, &Client{ID: "rs", SecretHashes: [][32]byte{HashSecret("rs-secret")},
			Keys: staticKeys(t, tKey("rsa")), RequestSigningAlg: "RS256"})
	}
}

// postAs sends form to path with Basic credentials id:secret.
func (h *harness) postAs(path, id, secret string, form url.Values) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodPost, testPublic+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	return h.serve(req)
}

// assertionClaims are valid client-assertion claims for client at the
// harness clock's now.
func (h *harness) assertionClaims(client string) map[string]any {
	now := h.clock.Now()
	return map[string]any{
		"iss": client, "sub": client, "aud": testIssuer,
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": newJTI(),
	}
}

// assertion signs a fresh valid client assertion for pk with es1.
func (h *harness) assertion(client string) string {
	k := tKey("es1")
	if client == "pk2" {
		k = tKey("es2")
	}
	return signJWT(h.t, k, jose.ES256, "", h.assertionClaims(client))
}

// postAssertion sends form to path with a client assertion and no other
// client authentication.
func (h *harness) postAssertion(path string, form url.Values, assertion string) *httptest.ResponseRecorder {
	h.t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set("client_assertion_type", ClientAssertionType)
	f.Set("client_assertion", assertion)
	return h.post(path, "", f)
}

func pollForm(id string) url.Values {
	return url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {id}}
}

func bcID(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel request: %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
		ExpiresIn int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.AuthReqID == "" {
		t.Fatalf("backchannel answer %s", rec.Body)
	}
	return resp.AuthReqID
}

// ---- tests ----

// TestClientAssertion covers private_key_jwt (RFC 7523 §2.2, §3) at the
// backchannel endpoint: each rule with a passing and a failing case.
func TestClientAssertion(t *testing.T) {
	es1, es2, rsaKey := tKey("es1"), tKey("es2"), tKey("rsa")
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
		{name: "wrong aud", claims: set("aud", "https://other.example.com/realms/main"), status: 401, code: CodeInvalidClient},
		{name: "aud = the upstream's token endpoint on another origin", claims: set("aud", "https://internal.example.com"+testTokenURL), status: 401, code: CodeInvalidClient},
		{name: "missing aud", claims: set("aud", nil), status: 401, code: CodeInvalidClient},
		{name: "aud not a string", claims: set("aud", 42), status: 401, code: CodeInvalidClient},
		{name: "expired", claims: at("exp", -time.Minute), status: 401, code: CodeInvalidClient},
		{name: "expired within the skew", claims: at("exp", -10*time.Second)},
		{name: "missing exp", claims: set("exp", nil), status: 401, code: CodeInvalidClient},
		{name: "exp as a string", claims: set("exp", "2030-01-01"), status: 401, code: CodeInvalidClient},
		{name: "exp 9 minutes ahead", claims: at("exp", 9*time.Minute)},
		{name: "exp an hour ahead", claims: at("exp", time.Hour), status: 401, code: CodeInvalidClient},
		{name: "nbf in the future", claims: at("nbf", 5*time.Minute), status: 401, code: CodeInvalidClient},
		{name: "nbf now", claims: at("nbf", 0)},
		{name: "iat in the future", claims: at("iat", 5*time.Minute), status: 401, code: CodeInvalidClient},
		{name: "missing jti", claims: set("jti", nil), status: 401, code: CodeInvalidClient},
		{name: "iss differs from sub", claims: set("sub", "pk2"), status: 401, code: CodeInvalidClient},
		{name: "missing sub", claims: set("sub", nil), status: 401, code: CodeInvalidClient},
		{name: "missing iss", claims: set("iss", nil), status: 401, code: CodeInvalidClient},
		{name: "unknown client", claims: set("iss", "nobody", "sub", "nobody"), status: 401, code: CodeInvalidClient},
		{name: "secret client sends an assertion", claims: set("iss", "signer", "sub", "signer"), status: 401, code: CodeInvalidClient},
		{name: "another private_key_jwt client's assertion by its own key", claims: set("iss", "pk2", "sub", "pk2"),
			sign: func(t *testing.T, c map[string]any) string { return signJWT(t, es2, jose.ES256, "", c) }},
		{name: "signed by another client's key", sign: func(t *testing.T, c map[string]any) string {
			return signJWT(t, es2, jose.ES256, "-", c)
		}, status: 401, code: CodeInvalidClient},
		{name: "another client's key under its kid", sign: func(t *testing.T, c map[string]any) string {
			return signJWT(t, es2, jose.ES256, es1.kid, c)
		}, status: 401, code: CodeInvalidClient},
		{name: "unknown kid", sign: func(t *testing.T, c map[string]any) string {
			return signJWT(t, es1, jose.ES256, "kid-unknown", c)
		}, status: 401, code: CodeInvalidClient},
		{name: "no kid", sign: func(t *testing.T, c map[string]any) string { return signJWT(t, es1, jose.ES256, "-", c) }},
		{name: "PS256", sign: func(t *testing.T, c map[string]any) string { return signJWT(t, rsaKey, jose.PS256, "", c) }},
		{name: "RS256 when not allowed", sign: func(t *testing.T, c map[string]any) string {
			return signJWT(t, rsaKey, jose.RS256, "", c)
		}, status: 401, code: CodeInvalidClient},
		{name: "RS256 when allowed", opts: []harnessOption{func(c *Config) { c.AssertionAlgs = []string{"ES256", "RS256"} }},
			sign: func(t *testing.T, c map[string]any) string { return signJWT(t, rsaKey, jose.RS256, "", c) }},
		{name: "PS256 when only ES256 is allowed", opts: []harnessOption{func(c *Config) { c.AssertionAlgs = []string{"ES256"} }},
			sign: func(t *testing.T, c map[string]any) string { return signJWT(t, rsaKey, jose.PS256, "", c) }, status: 401, code: CodeInvalidClient},
		{name: "HS256 configured is still refused", setup: func(h *harness) {
			// past Config.validateSigning, which refuses it
			h.srv.cfg.AssertionAlgs = []string{"HS256", "ES256"}
		},
			sign: func(t *testing.T, c map[string]any) string {
				return unsignedJWT(map[string]any{"alg": "HS256", "kid": es1.kid}, c, "c2ln")
			}, status: 401, code: CodeInvalidClient},
		{name: "alg none", sign: func(t *testing.T, c map[string]any) string {
			return unsignedJWT(map[string]any{"alg": "none"}, c, "")
		}, status: 401, code: CodeInvalidClient},
		{name: "broken signature", sign: func(t *testing.T, c map[string]any) string {
			return breakSignature(signJWT(t, es1, jose.ES256, "", c))
		}, status: 401, code: CodeInvalidClient},
		{name: "encrypted (five parts)", sign: func(t *testing.T, c map[string]any) string { return "a.b.c.d.e" }, status: 401, code: CodeInvalidClient},
		{name: "not a JWT", sign: func(t *testing.T, c map[string]any) string { return "garbage" }, status: 401, code: CodeInvalidClient},
		{name: "matching client_id", form: url.Values{"client_id": {"pk"}}},
		{name: "another client_id", form: url.Values{"client_id": {"pk2"}}, status: 401, code: CodeInvalidClient},
		{name: "unknown client_assertion_type", form: url.Values{"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}},
			status: 401, code: CodeInvalidClient},
		{name: "assertion and Basic", basic: "cc:cc-secret", status: 400, code: CodeInvalidRequest},
		{name: "assertion and client_secret", form: url.Values{"client_id": {"pk"}, "client_secret": {"x"}}, status: 400, code: CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, append([]harnessOption{withKeyClients(t)}, tc.opts...)...)
			if tc.setup != nil {
				tc.setup(h)
			}
			c := h.assertionClaims("pk")
			if tc.claims != nil {
				tc.claims(h, c)
			}
			var a string
			if tc.sign != nil {
				a = tc.sign(t, c)
			} else {
				a = signJWT(t, es1, jose.ES256, "", c)
			}
			form := hForm()
			form.Set("client_assertion_type", ClientAssertionType)
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
				bcID(t, rec)
				return
			}
			wantOAuthError(t, rec, tc.status, tc.code)
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
	h := newHarness(t, withKeyClients(t), func(c *Config) {
		for _, cl := range c.Clients {
			if cl.ID == "pk" {
				// A private_key_jwt client may have a secret (its
				// upstream secret, say); it never authenticates with it.
				cl.SecretHashes = [][32]byte{HashSecret("pk-secret")}
			}
		}
	})
	id := bcID(t, h.postAssertion(DefaultEndpoint, hForm(), h.assertion("pk")))
	for _, ep := range []struct {
		name string
		path string
		form url.Values
	}{
		{"backchannel", DefaultEndpoint, hForm()},
		{"token", testTokenURL, pollForm(id)},
	} {
		t.Run(ep.name, func(t *testing.T) {
			f := url.Values{"client_id": {"pk"}}
			for k, v := range ep.form {
				f[k] = v
			}
			wantOAuthError(t, h.post(ep.path, "", f), 401, CodeInvalidClient)
			wantOAuthError(t, h.postAs(ep.path, "pk", "pk-secret", ep.form), 401, CodeInvalidClient)
			f.Set("client_secret", "pk-secret")
			wantOAuthError(t, h.post(ep.path, "", f), 401, CodeInvalidClient)
		})
	}
	if n := h.records(); n != 1 {
		t.Errorf("%d requests stored, want 1", n)
	}
}

// TestClientAssertionReplay: a jti is accepted once, at either endpoint,
// and remembered per client.
func TestClientAssertionReplay(t *testing.T) {
	h := newHarness(t, withKeyClients(t))
	a := h.assertion("pk")
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), a))
	wantOAuthError(t, h.postAssertion(DefaultEndpoint, hForm(), a), 401, CodeInvalidClient)
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm("x"), a), 401, CodeInvalidClient)

	// The same jti from another client is that client's own.
	c1 := h.assertionClaims("pk")
	c2 := h.assertionClaims("pk2")
	c2["jti"] = c1["jti"]
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), signJWT(t, tKey("es1"), jose.ES256, "", c1)))
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), signJWT(t, tKey("es2"), jose.ES256, "", c2)))

	// A replayed assertion stays refused after a restart of the server on
	// the same store, until it expires.
	c3 := h.assertionClaims("pk")
	a3 := signJWT(t, tKey("es1"), jose.ES256, "", c3)
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), a3))
	h.srv = NewServer(h.cfg)
	wantOAuthError(t, h.postAssertion(DefaultEndpoint, hForm(), a3), 401, CodeInvalidClient)
}

// TestClientAssertionTokenEndpoint: the token endpoint takes assertions
// as the backchannel endpoint does, with the same rules.
func TestClientAssertionTokenEndpoint(t *testing.T) {
	h := newHarness(t, withKeyClients(t))
	id := bcID(t, h.postAssertion(DefaultEndpoint, hForm(), h.assertion("pk")))

	rs := h.assertionClaims("pk")
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), signJWT(t, tKey("rsa"), jose.RS256, "", rs)), 401, CodeInvalidClient)
	wrong := h.assertionClaims("pk")
	wrong["aud"] = "https://other.example.com"
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), signJWT(t, tKey("es1"), jose.ES256, "", wrong)), 401, CodeInvalidClient)

	for _, aud := range []string{testIssuer, testPublic + testTokenURL, testPublic + DefaultEndpoint} {
		c := h.assertionClaims("pk")
		c["aud"] = aud
		h.clock.Advance(6 * time.Second)
		wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), signJWT(t, tKey("es1"), jose.ES256, "", c)), 400, CodeAuthorizationPending)
	}
	// Another private_key_jwt client cannot poll pk's request.
	h.clock.Advance(6 * time.Second)
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), h.assertion("pk2")), 400, CodeInvalidGrant)
}

// TestPrivateKeyJWTPollFlow: a private_key_jwt client with a signed
// request, approved, polls its tokens.
func TestPrivateKeyJWTPollFlow(t *testing.T) {
	h := newHarness(t, withKeyClients(t))
	now := h.clock.Now()
	req := signJWT(t, tKey("es1"), jose.ES256, "", map[string]any{
		"iss": "pk", "aud": testIssuer, "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(),
		"nbf": now.Unix(), "jti": newJTI(), "scope": "openid email", "login_hint": "bob",
		"binding_message": "K7-QX", "requested_expiry": "120",
	})
	rec := h.postAssertion(DefaultEndpoint, url.Values{"request": {req}}, h.assertion("pk"))
	id := bcID(t, rec)
	var ack bcResponse
	_ = json.Unmarshal(rec.Body.Bytes(), &ack)
	if ack.ExpiresIn != 120 {
		t.Errorf("expires_in %d, want 120", ack.ExpiresIn)
	}
	stored := h.get(id)
	if stored.ClientID != "pk" || stored.User.Username != "bob" || stored.BindingMessage != "K7-QX" {
		t.Errorf("stored %+v", stored)
	}
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), h.assertion("pk")), 400, CodeAuthorizationPending)
	h.approve(id)
	h.clock.Advance(5 * time.Second)
	rec = h.postAssertion(testTokenURL, pollForm(id), h.assertion("pk"))
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
	if g.Client == nil || g.Client.ID != "pk" || g.Client.UpstreamSecret != pkUpstreamSecret {
		t.Errorf("minted for %+v, want pk with its upstream secret", g.Client)
	}
	// Redeemed once.
	h.clock.Advance(5 * time.Second)
	wantOAuthError(t, h.postAssertion(testTokenURL, pollForm(id), h.assertion("pk")), 400, CodeInvalidGrant)
}

// TestAssertionAudienceLearnsTokenPath: without token_path, aud = the
// token endpoint is recognised from discovery.
func TestAssertionAudienceLearnsTokenPath(t *testing.T) {
	h := newHarness(t, withKeyClients(t), func(c *Config) { c.TokenPath = "" })
	c := h.assertionClaims("pk")
	c["aud"] = testIssuer + "/protocol/openid-connect/token"
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), signJWT(t, tKey("es1"), jose.ES256, "", c)))
	h.upstream.down.Store(true)
	c = h.assertionClaims("pk")
	c["aud"] = testIssuer + "/protocol/openid-connect/token"
	// learned and remembered: no discovery needed any more
	bcID(t, h.postAssertion(DefaultEndpoint, hForm(), signJWT(t, tKey("es1"), jose.ES256, "", c)))
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
			h.upstream.doc["token_endpoint_auth_methods_supported"] = []string{"client_secret_basic", "client_secret_post"}
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

func TestParseClientJWTClaims(t *testing.T) {
	for _, tc := range []struct {
		name, payload string
		ok            bool
		check         func(t *testing.T, c *clientJWTClaims)
	}{
		{"full", `{"iss":"a","sub":"b","aud":["x","y"],"jti":"j","exp":1700000000,"nbf":1700000000.5,"iat":0}`, true,
			func(t *testing.T, c *clientJWTClaims) {
				if c.Issuer != "a" || c.Subject != "b" || len(c.Audience) != 2 || c.ID != "j" ||
					c.Expiry.Unix() != 1700000000 || c.NotBefore.Nanosecond() != 5e8 || c.IssuedAt.Unix() != 0 {
					t.Errorf("%+v", c)
				}
			}},
		{"aud string", `{"aud":"x"}`, true, func(t *testing.T, c *clientJWTClaims) {
			if len(c.Audience) != 1 || c.Audience[0] != "x" {
				t.Errorf("aud %v", c.Audience)
			}
		}},
		{"nulls are absent", `{"iss":null,"exp":null,"aud":null}`, true, func(t *testing.T, c *clientJWTClaims) {
			if c.Issuer != "" || !c.Expiry.IsZero() || c.Audience != nil {
				t.Errorf("%+v", c)
			}
		}},
		{"not an object", `[1]`, false, nil},
		{"null", `null`, false, nil},
		{"iss a number", `{"iss":1}`, false, nil},
		{"aud mixed", `{"aud":["x",1]}`, false, nil},
		{"exp a string", `{"exp":"1700000000"}`, false, nil},
		{"exp negative", `{"exp":-1}`, false, nil},
		{"exp huge", `{"exp":1e300}`, false, nil},
		{"jti an object", `{"jti":{}}`, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClientJWTClaims([]byte(tc.payload))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}
