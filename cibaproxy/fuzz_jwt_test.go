package cibaproxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math"
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
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// Fuzz targets of the signed-request and client-assertion parsers. Each
// input is tried twice: as the JWT itself (mostly exercising the JOSE
// parsing), and as a claims set signed with the client's key (exercising
// every claim check behind a valid signature). The clock stands still at
// fzjNow, so the seeds in testdata/fuzz stay valid.

// fzjNow is the fuzz targets' clock.
var fzjNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Test-only keys of the fuzz clients fz and fz2 (P-256).
const (
	fzjKey1 = `{"kty":"EC","kid":"fuzz-1","crv":"P-256","x":"svpetjh5UPN-Gib0aSBsBQ1ngiSKJlURxL9yARTHjTs","y":"roQ8WC2yqMu9-4alZoKwfRm38zwHXkc52lwcS1lmZ9c","d":"fkSbHJt_yvSrmk-fJyqmeI2SSwYY3rYKpwYrSKUnNBU"}`
	fzjKey2 = `{"kty":"EC","kid":"fuzz-2","crv":"P-256","x":"D88NXuhkSYqc0J67gORS_bZSz5Hwc5ddpKFM2_iz31U","y":"cg10AUEfXaPW49rSh62HgraCfExIQ_-QVMgnyd1XLW0","d":"pv2eBklRkaQ_g-XornJT3el8t3fXAmxwO_2ubUX0HsE"}`
)

// fzjStore is the Badger store of the fuzz targets, whose replay cache
// finds every jti fresh, so that an input behaves the same each time it
// runs (the fuzzer minimizes and replays inputs; the replay cache has its
// own tests).
type fzjStore struct{ store.Store }

func (fzjStore) Remember(context.Context, string, string, time.Time) (bool, error) { return true, nil }

// fzjServer is a Server with the private_key_jwt clients fz (key fuzz-1)
// and fz2 (key fuzz-2), both sending ES256 signed requests. Its upstream is
// never reached: the parsers fuzzed do not need it.
func fzjServer(tb testing.TB) (*Server, cibatest.Key) {
	tb.Helper()
	k1, k2 := cibatest.KeyFromJWK(tb, fzjKey1), cibatest.KeyFromJWK(tb, fzjKey2)
	now := func() time.Time { return fzjNow }
	st, err := badgerstore.Open(tb.TempDir(), nil, now)
	if err != nil {
		tb.Fatal(err)
	}
	backend := NewBackend(fzjStore{st}, nil, now)
	tb.Cleanup(func() { _ = backend.Close() })
	disc, err := upstream.NewDiscovery(testIssuer, "http://"+cibatest.FreeAddr(tb), nil, now)
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(Config{
		Issuer:    testIssuer,
		PublicURL: testPublic,
		TokenPath: testTokenURL,
		Clients: []*clients.Client{
			{ID: "fz", AuthMethod: clients.AuthPrivateKeyJWT, Keys: caStaticKeys(tb, k1), UpstreamSecret: "u", RequestSigningAlg: "ES256"},
			{ID: "fz2", AuthMethod: clients.AuthPrivateKeyJWT, Keys: caStaticKeys(tb, k2), UpstreamSecret: "u", RequestSigningAlg: "ES256"},
			{ID: "cc", SecretHashes: [][32]byte{clients.HashSecret("cc-secret")}},
		},
		Users:     dir,
		Backend:   backend,
		Discovery: disc,
		Now:       now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s, k1
}

func fzjJSON(v map[string]any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// fzjRequestSeedClaims are claims sets for FuzzRequestObject: valid ones
// and each kind of mistake.
func fzjRequestSeedClaims() [][]byte {
	n := fzjNow.Unix()
	base := func(kv ...any) []byte {
		c := map[string]any{"iss": "fz", "aud": testIssuer, "exp": n + 300, "iat": n, "nbf": n,
			"jti": "seed", "scope": "openid email", "login_hint": "alice"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return fzjJSON(c)
	}
	return [][]byte{
		base(),
		base("jti", "seed-2", "requested_expiry", "120", "binding_message", "W4SCT", "acr_values", "urn:a urn:b"),
		base("jti", "seed-3", "requested_expiry", 120, "client_notification_token", "8d67dc78-7faa-4d41-aabd-67707b374255"),
		base("jti", "seed-4", "requested_expiry", 1.5),
		base("aud", []string{"x", testIssuer}),
		base("aud", nil),
		base("iss", "fz2"),
		base("exp", n+4200),
		base("nbf", n+600),
		base("nbf", n-4200),
		base("exp", n-60),
		base("iat", "yesterday"),
		base("jti", nil),
		base("login_hint_token", "a.b.c"),
		base("binding_message", strings.Repeat("é", 100)),
		base("request", "a.b.c"),
		base("client_id", "cc"),
		// Each of these breaks one rule only.
		base("aud", "https://other.example.com"),
		base("nbf", n+60, "exp", n+400),
		base("iat", n+60),
		base("nbf", n-600, "iat", n-600, "exp", n-31),
		base("nbf", n-3620, "iat", n-3620, "exp", n-25),
		base("jti", ""),
		[]byte(`{"exp":1e309}`),
		[]byte(`[]`),
		[]byte(`null`),
		[]byte(``),
	}
}

// FuzzRequestObject: a signed authentication request is accepted with
// parameters that pass every check, or refused with a 4xx *oauth.Error of a
// known code; never a panic.
func FuzzRequestObject(f *testing.F) {
	s, key := fzjServer(f)
	cl := s.clients.Get("fz")
	for _, c := range fzjRequestSeedClaims() {
		f.Add(key.SignBytes(f, jose.ES256, "", c), c)
	}
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJmeiJ9.", []byte(nil))
	f.Add("eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJmeiJ9.c2ln", []byte(nil))
	f.Add("a.b.c.d.e", []byte(nil))
	f.Add("...", []byte(`{}`))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw string, claims []byte) {
		check := func(jwt string) {
			p, err := s.backchannel.backchannelParams(ctx, cl, url.Values{"request": {jwt}})
			if err != nil {
				fuzzCheckErr(t, "backchannelParams", jwt, err)
				if p != nil {
					t.Fatalf("params with an error for %q", jwt)
				}
				return
			}
			fzjCheckParams(t, jwt, p, s.cfg.BindingMessageMax)
			fzjCheckRequestObject(t, jwt, key)
		}
		check(raw)
		if len(claims) > 0 {
			check(key.SignBytes(t, jose.ES256, "", claims))
		}
	})
}

// fzjCheckParams checks the invariants of accepted parameters.
func fzjCheckParams(t *testing.T, in string, p *backchannelParams, max int) {
	t.Helper()
	if len(p.Scopes) == 0 {
		t.Fatalf("%q: no scopes", in)
	}
	for _, sc := range p.Scopes {
		if !oauth.ValidScopeToken(sc) {
			t.Fatalf("%q: scope %q", in, sc)
		}
	}
	hints := 0
	for _, h := range []string{p.LoginHint, p.IDTokenHint, p.LoginHintToken} {
		if h != "" {
			hints++
		}
	}
	if hints != 1 {
		t.Fatalf("%q: %d hints", in, hints)
	}
	if p.BindingMessage != "" && checkBindingMessage(p.BindingMessage, max) != nil {
		t.Fatalf("%q: binding message %q", in, p.BindingMessage)
	}
	if p.RequestedExpiry < 0 {
		t.Fatalf("%q: requested_expiry %d", in, p.RequestedExpiry)
	}
	if p.NotificationToken != "" && !validBearerToken(p.NotificationToken) {
		t.Fatalf("%q: notification token %q", in, p.NotificationToken)
	}
}

// fzjDecoded is a JWT the fuzz targets saw accepted, decoded on its own,
// apart from the code under test.
type fzjDecoded struct {
	alg    string
	claims map[string]any
}

// fzjDecode checks that jwt is a compact JWS signed with alg by key and
// returns its claims.
func fzjDecode(t *testing.T, jwt string, key cibatest.Key, algs []string) *fzjDecoded {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted %q: not three parts", jwt)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &h) != nil || !slices.Contains(algs, h.Alg) {
		t.Fatalf("accepted %q: header %q, alg not one of %v", jwt, hb, algs)
	}
	jws, err := jose.ParseSignedCompact(jwt, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(h.Alg)})
	if err != nil {
		t.Fatalf("accepted %q: %v", jwt, err)
	}
	payload, err := jws.Verify(key.Signer.Public())
	if err != nil {
		t.Fatalf("accepted %q: the signature does not verify with the client's key: %v", jwt, err)
	}
	d := &fzjDecoded{alg: h.Alg}
	if err := json.Unmarshal(payload, &d.claims); err != nil || d.claims == nil {
		t.Fatalf("accepted %q: claims %q are not a JSON object", jwt, payload)
	}
	return d
}

// str returns the string claim name ("" when absent or not a string).
func (d *fzjDecoded) str(name string) string {
	v, _ := d.claims[name].(string)
	return v
}

// date returns the NumericDate claim name, to the nanosecond, and whether
// it is there.
func (d *fzjDecoded) date(name string) (time.Time, bool) {
	v, ok := d.claims[name].(float64)
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9)), ok
}

// audience reports whether the aud claim names one of want.
func (d *fzjDecoded) audience(want ...string) bool {
	switch a := d.claims["aud"].(type) {
	case string:
		return slices.Contains(want, a)
	case []any:
		for _, v := range a {
			if s, ok := v.(string); ok && slices.Contains(want, s) {
				return true
			}
		}
	}
	return false
}

// fzjCheckRequestObject fails unless an accepted signed request met every
// rule: signed ES256 by fz, iss fz, aud the issuer, a jti, exp, iat and nbf
// within the 30 s skew of now, and exp - nbf and the age of nbf at most 60
// minutes.
func fzjCheckRequestObject(t *testing.T, jwt string, key cibatest.Key) {
	t.Helper()
	d := fzjDecode(t, jwt, key, []string{"ES256"})
	now, skew, limit := fzjNow, 30*time.Second, 60*time.Minute
	exp, okExp := d.date("exp")
	nbf, okNbf := d.date("nbf")
	iat, okIat := d.date("iat")
	for _, bad := range []struct {
		broken bool
		rule   string
	}{
		{d.str("iss") != "fz", "iss is the client"},
		{!d.audience(testIssuer), "aud is the issuer"},
		{d.str("jti") == "", "a jti"},
		{!okExp || !okNbf || !okIat, "exp, nbf and iat"},
		{!exp.Add(skew).After(now), "exp not passed"},
		{nbf.After(now.Add(skew)), "nbf not in the future"},
		{iat.After(now.Add(skew)), "iat not in the future"},
		{!exp.After(nbf) || exp.Sub(nbf) > limit, "0 < exp - nbf <= 60 minutes"},
		{now.Sub(nbf) > limit, "nbf at most 60 minutes ago"},
	} {
		if bad.broken {
			t.Fatalf("accepted %q with claims %v: breaks the rule %s", jwt, d.claims, bad.rule)
		}
	}
}

// fzjCheckAssertion fails unless an accepted client assertion met every
// rule: signed by the key of the client it authenticated, with an
// accepted alg, iss and sub that client, aud the issuer or one of the
// endpoints, a jti, exp not passed and at most 10 minutes ahead, nbf and
// iat (when present) not in the future, each within the 30 s skew.
func fzjCheckAssertion(t *testing.T, jwt, client string, key cibatest.Key, algs []string) {
	t.Helper()
	d := fzjDecode(t, jwt, key, algs)
	now, skew := fzjNow, 30*time.Second
	exp, okExp := d.date("exp")
	nbf, okNbf := d.date("nbf")
	iat, okIat := d.date("iat")
	for _, bad := range []struct {
		broken bool
		rule   string
	}{
		{d.str("iss") != client || d.str("sub") != client, "iss and sub are the client"},
		{!d.audience(testIssuer, testPublic+DefaultEndpoint, testPublic+testTokenURL), "aud is the issuer or an endpoint"},
		{d.str("jti") == "", "a jti"},
		{!okExp, "exp"},
		{!exp.Add(skew).After(now), "exp not passed"},
		{exp.After(now.Add(10*time.Minute + skew)), "exp at most 10 minutes ahead"},
		{okNbf && nbf.After(now.Add(skew)), "nbf not in the future"},
		{okIat && iat.After(now.Add(skew)), "iat not in the future"},
	} {
		if bad.broken {
			t.Fatalf("accepted %q as %s with claims %v: breaks the rule %s", jwt, client, d.claims, bad.rule)
		}
	}
}

// fzjAssertionSeedClaims are claims sets for FuzzClientAssertion.
func fzjAssertionSeedClaims() [][]byte {
	n := fzjNow.Unix()
	base := func(kv ...any) []byte {
		c := map[string]any{"iss": "fz", "sub": "fz", "aud": testIssuer, "exp": n + 60, "iat": n, "jti": "seed"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return fzjJSON(c)
	}
	return [][]byte{
		base(),
		base("jti", "seed-2", "aud", testPublic+testTokenURL),
		base("jti", "seed-3", "aud", []string{testPublic + DefaultEndpoint}),
		base("aud", "https://other.example.com"),
		base("sub", "fz2"),
		base("iss", "cc", "sub", "cc"),
		base("iss", "nobody", "sub", "nobody"),
		base("exp", n-60),
		base("exp", n+3600),
		base("exp", nil),
		base("nbf", n+600),
		base("jti", nil),
		base("exp", -1),
		base("nbf", n+60),
		base("iat", n+60),
		base("aud", []string{"https://other.example.com", testPublic + "/other"}),
		[]byte(`{"iss":1}`),
		[]byte(`"fz"`),
	}
}

// FuzzClientAssertion: a client assertion authenticates its
// private_key_jwt client, or is refused with a 4xx *oauth.Error of a known
// code; never a panic.
func FuzzClientAssertion(f *testing.F) {
	s, key := fzjServer(f)
	for _, c := range fzjAssertionSeedClaims() {
		f.Add(key.SignBytes(f, jose.ES256, "", c), c)
	}
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJmeiIsInN1YiI6ImZ6In0.", []byte(nil))
	f.Add("eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enotMSJ9.e30.AAAA", []byte(nil))
	f.Add("a.b.c.d.e", []byte(nil))
	f.Add("", []byte(`{}`))
	keys := map[string]cibatest.Key{"fz": key, "fz2": cibatest.KeyFromJWK(f, fzjKey2)}
	f.Fuzz(func(t *testing.T, raw string, claims []byte) {
		check := func(jwt string) {
			form := url.Values{"client_assertion_type": {clients.ClientAssertionType}, "client_assertion": {jwt}}
			r := httptest.NewRequest(http.MethodPost, testPublic+DefaultEndpoint, nil)
			cl, err := s.clients.Authenticate(r, form)
			if err != nil {
				fuzzCheckErr(t, "Authenticate", jwt, err)
				if cl != nil {
					t.Fatalf("client with an error for %q", jwt)
				}
				return
			}
			if cl == nil || cl.AuthMethod != clients.AuthPrivateKeyJWT {
				t.Fatalf("%q authenticated %+v", jwt, cl)
			}
			fzjCheckAssertion(t, jwt, cl.ID, keys[cl.ID], s.clients.AcceptedAlgs())
		}
		check(raw)
		if len(claims) > 0 {
			check(key.SignBytes(t, jose.ES256, "", claims))
		}
	})
}

// TestFuzzJWTSeedsReachSuccess: the first seeds of the JWT fuzz targets are
// accepted, so the fuzzers start from the success path.
func TestFuzzJWTSeedsReachSuccess(t *testing.T) {
	s, k1 := fzjServer(t)
	for i, c := range fzjRequestSeedClaims()[:4] {
		_, err := s.backchannel.backchannelParams(context.Background(), s.clients.Get("fz"), url.Values{"request": {k1.SignBytes(t, jose.ES256, "", c)}})
		if (err == nil) != (i < 3) {
			t.Errorf("request seed %d: %v", i, err)
		}
	}
	for i, c := range fzjAssertionSeedClaims()[:3] {
		form := url.Values{"client_assertion_type": {clients.ClientAssertionType}, "client_assertion": {k1.SignBytes(t, jose.ES256, "", c)}}
		if _, err := s.clients.Authenticate(httptest.NewRequest(http.MethodPost, "/", nil), form); err != nil {
			t.Errorf("assertion seed %d: %v", i, err)
		}
	}
}
