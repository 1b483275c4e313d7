package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
)

const (
	issTestPublic = "https://idp.example.com"
	// issUpstream is the upstream issuer, the audience subject tokens are
	// addressed to.
	issUpstream = issTestPublic + "/realms/main"
)

// issOpenStore opens a Badger store in a fresh directory on the clock,
// closed when the test ends.
func issOpenStore(t *testing.T, clock *cibatest.Clock) *badgerstore.Store {
	t.Helper()
	st, err := badgerstore.Open(t.TempDir(), nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// issNew builds an issuer on st with the fake clock; mod adjusts the
// configuration first.
func issNew(t *testing.T, st Settings, clock *cibatest.Clock, mod func(*Config)) *Issuer {
	t.Helper()
	cfg := Config{PublicURL: issTestPublic, Store: st, Now: clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	iss, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return iss
}

// issWithAlg builds an issuer signing with alg on a fresh store and fake
// clock, and returns the store, the issuer and its key set, which must
// hold one key.
func issWithAlg(t *testing.T, alg string) (*badgerstore.Store, *Issuer, jose.JSONWebKeySet) {
	t.Helper()
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	iss := issNew(t, st, clock, func(c *Config) { c.Alg = alg })
	set := issJWKS(t, iss)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS holds %d keys", len(set.Keys))
	}
	return st, iss, set
}

// issServe sends a request to the issuer's handler.
func issServe(t *testing.T, iss *Issuer, method, path string) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	handled := iss.Serve(rec, httptest.NewRequest(method, issTestPublic+path, nil))
	return rec, handled
}

// issJWKS fetches the served key set.
func issJWKS(t *testing.T, iss *Issuer) jose.JSONWebKeySet {
	t.Helper()
	rec, handled := issServe(t, iss, http.MethodGet, "/ciba/jwks")
	if !handled || rec.Code != http.StatusOK {
		t.Fatalf("GET /ciba/jwks: handled %v, %d %s", handled, rec.Code, rec.Body)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatalf("JWKS %s: %v", rec.Body, err)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Fatalf("the JWKS publishes a private key (kid %s)", k.KeyID)
		}
	}
	return set
}

func issKIDs(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// issToken signs a subject token for g, addressed to the upstream issuer.
func issToken(t *testing.T, iss *Issuer, g Subject) string {
	t.Helper()
	tok, err := iss.SubjectToken(context.Background(), g, issUpstream)
	if err != nil {
		t.Fatalf("SubjectToken: %v", err)
	}
	return tok
}

// issKID returns the kid of a token without verifying it.
func issKID(t *testing.T, tok string) string {
	t.Helper()
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

// issGrant is the subject of a grant to u, approved half a minute before
// the clock's start.
func issGrant(u store.User) Subject {
	return Subject{
		User:     u,
		AuthTime: time.Date(2026, 11, 25, 11, 59, 30, 0, time.UTC),
	}
}

var (
	issAlice = store.User{Username: "alice", Email: "alice@example.com", Subject: "alice", Name: "Alice Example"}
	issBob   = store.User{Username: "bob", Email: "bob@example.com", Subject: "u-bob"}
)

// issRing reads the key ring as stored.
func issRing(t *testing.T, st *badgerstore.Store) keyRing {
	t.Helper()
	raw, err := st.Setting(context.Background(), ringSetting(issTestPublic+Path))
	if err != nil {
		t.Fatalf("reading the key ring: %v", err)
	}
	var r keyRing
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// issThumbprint computes the RFC 7638 SHA-256 thumbprint by hand, from the
// required members in lexicographic order (RFC 7638 §3.2).
func issThumbprint(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	var members string
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		x := k.X.FillBytes(make([]byte, size))
		y := k.Y.FillBytes(make([]byte, size))
		members = fmt.Sprintf(`{"crv":"%s","kty":"EC","x":"%s","y":"%s"}`, k.Curve.Params().Name, b64(x), b64(y))
	case *rsa.PublicKey:
		e := big.NewInt(int64(k.E)).Bytes()
		members = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(k.N.Bytes()))
	default:
		t.Fatalf("unexpected key type %T", pub)
	}
	sum := sha256.Sum256([]byte(members))
	return b64(sum[:])
}

// issJoseThumbprint computes the thumbprint with go-jose, from the public
// key alone.
func issJoseThumbprint(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func TestIssuerReloadKeepsKey(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	first := issNew(t, st, clock, nil)
	before := issKIDs(issJWKS(t, first))
	second := issNew(t, st, clock, nil) // a config reload
	after := issKIDs(issJWKS(t, second))
	if len(before) != 1 || !slices.Equal(before, after) {
		t.Fatalf("JWKS before reload %v, after %v", before, after)
	}
	if a, b := issKID(t, issToken(t, first, issGrant(issAlice))), issKID(t, issToken(t, second, issGrant(issAlice))); a != b || a != before[0] {
		t.Fatalf("old issuer signs with %s, new with %s, published %v", a, b, before)
	}
	if n := len(issRing(t, st).Keys); n != 1 {
		t.Fatalf("%d keys stored after a reload", n)
	}
}

func TestIssuerConcurrentCreateOneKey(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	const n = 10
	issuers := make([]*Issuer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			issuers[i], errs[i] = New(context.Background(), Config{PublicURL: issTestPublic, Store: st, Now: clock.Now})
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("NewIssuer %d: %v", i, err)
		}
	}
	ring := issRing(t, st)
	if len(ring.Keys) != 1 {
		t.Fatalf("%d concurrent NewIssuer stored %d keys, want 1", n, len(ring.Keys))
	}
	for i, iss := range issuers {
		if kids := issKIDs(issJWKS(t, iss)); !slices.Equal(kids, []string{ring.Keys[0].KID}) {
			t.Errorf("issuer %d publishes %v, stored %s", i, kids, ring.Keys[0].KID)
		}
		if kid := issKID(t, issToken(t, iss, issGrant(issAlice))); kid != ring.Keys[0].KID {
			t.Errorf("issuer %d signs with %s, stored %s", i, kid, ring.Keys[0].KID)
		}
	}
}

func TestIssuerKIDIsThumbprint(t *testing.T) {
	for _, alg := range []string{"ES256", "RS256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			st, _, set := issWithAlg(t, alg)
			k := set.Keys[0]
			byHand, byJose := issThumbprint(t, k.Key), issJoseThumbprint(t, k.Key)
			if byHand != byJose {
				t.Fatalf("thumbprint by hand %s, by go-jose %s", byHand, byJose)
			}
			if k.KeyID != byHand {
				t.Errorf("kid %s, RFC 7638 thumbprint %s", k.KeyID, byHand)
			}
			if k.Algorithm != alg || k.Use != "sig" {
				t.Errorf("JWKS key alg %q use %q", k.Algorithm, k.Use)
			}
			// The stored private key is the published one.
			ring := issRing(t, st)
			priv, err := x509.ParsePKCS8PrivateKey(ring.Keys[0].PKCS8)
			if err != nil {
				t.Fatal(err)
			}
			if tp := issThumbprint(t, priv.(crypto.Signer).Public()); tp != k.KeyID || ring.Keys[0].KID != k.KeyID {
				t.Errorf("stored key: kid %s, thumbprint %s; published %s", ring.Keys[0].KID, tp, k.KeyID)
			}
		})
	}
}

func TestIssuerDiscoveryDocument(t *testing.T) {
	cases := []struct {
		name, publicURL, alg string
		wantAlgs             []any
	}{
		{"default ES256", issTestPublic, "", []any{"ES256", "PS256", "RS256"}},
		{"trailing slash", issTestPublic + "/", "ES256", []any{"ES256", "PS256", "RS256"}},
		{"PS256 first", issTestPublic, "PS256", []any{"PS256", "ES256", "RS256"}},
		{"RS256 first", issTestPublic, "RS256", []any{"RS256", "ES256", "PS256"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := cibatest.NewClock(time.Time{})
			st := issOpenStore(t, clock)
			iss := issNew(t, st, clock, func(c *Config) { c.PublicURL, c.Alg = tc.publicURL, tc.alg })
			if iss.URL() != issTestPublic+"/ciba" {
				t.Errorf("URL() = %q", iss.URL())
			}
			rec, handled := issServe(t, iss, http.MethodGet, "/ciba/.well-known/openid-configuration")
			if !handled || rec.Code != http.StatusOK {
				t.Fatalf("handled %v, %d %s", handled, rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var doc map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"issuer":                                "https://idp.example.com/ciba",
				"jwks_uri":                              "https://idp.example.com/ciba/jwks",
				"authorization_endpoint":                "https://idp.example.com/ciba/authorize",
				"token_endpoint":                        "https://idp.example.com/ciba/token",
				"id_token_signing_alg_values_supported": tc.wantAlgs,
				"response_types_supported":              []any{"id_token"},
				"subject_types_supported":               []any{"public"},
			}
			for k, v := range want {
				if !reflect.DeepEqual(doc[k], v) {
					t.Errorf("%s = %#v, want %#v", k, doc[k], v)
				}
			}
			// Every claim a subject token carries is listed, if the list
			// is there at all.
			if cs, ok := doc["claims_supported"].([]any); ok {
				for _, c := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "email", "email_verified", "name", "preferred_username", "auth_time", "acr", "amr"} {
					if !slices.Contains(cs, any(c)) {
						t.Errorf("claims_supported lacks %s", c)
					}
				}
			}
		})
	}
}

func TestIssuerServeMethods(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	iss := issNew(t, st, clock, nil)

	for _, path := range []string{"/ciba/.well-known/openid-configuration", "/ciba/jwks"} {
		t.Run("GET and HEAD "+path, func(t *testing.T) {
			get, _ := issServe(t, iss, http.MethodGet, path)
			head, handled := issServe(t, iss, http.MethodHead, path)
			if !handled || head.Code != http.StatusOK {
				t.Fatalf("HEAD: handled %v, %d", handled, head.Code)
			}
			if head.Body.Len() != 0 {
				t.Errorf("HEAD has a body: %q", head.Body)
			}
			if cl := head.Header().Get("Content-Length"); cl != strconv.Itoa(get.Body.Len()) {
				t.Errorf("HEAD Content-Length %q, GET body %d bytes", cl, get.Body.Len())
			}
			if ct := head.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("HEAD Content-Type %q", ct)
			}
			if get.Header().Get("Cache-Control") == "" {
				t.Error("GET without Cache-Control")
			}
		})
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			t.Run(m+" "+path, func(t *testing.T) {
				rec, handled := issServe(t, iss, m, path)
				if !handled {
					t.Fatal("not handled")
				}
				cibatest.WantOAuthError(t, rec, http.StatusMethodNotAllowed, oauth.CodeInvalidRequest)
				if a := rec.Header().Get("Allow"); a != "GET, HEAD" {
					t.Errorf("Allow %q", a)
				}
			})
		}
	}

	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
		t.Run(m+" /ciba/authorize", func(t *testing.T) {
			rec, handled := issServe(t, iss, m, "/ciba/authorize?response_type=id_token&client_id=x")
			if !handled || rec.Code != http.StatusBadRequest {
				t.Fatalf("handled %v, %d", handled, rec.Code)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if m != http.MethodHead && !strings.Contains(rec.Body.String(), "subject tokens") {
				t.Errorf("body does not explain: %q", rec.Body)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
		})
	}
	for _, m := range []string{http.MethodPost, http.MethodGet} {
		t.Run(m+" /ciba/token", func(t *testing.T) {
			rec, handled := issServe(t, iss, m, "/ciba/token")
			if !handled {
				t.Fatal("not handled")
			}
			cibatest.WantOAuthError(t, rec, http.StatusBadRequest, oauth.CodeUnsupportedGrantType)
		})
	}
	for _, path := range []string{"/ciba", "/ciba/", "/ciba/jwks/", "/ciba/jwks.json", "/.well-known/openid-configuration",
		"/ciba/.well-known/openid-configuration/x", "/realms/main/ciba/jwks", "/CIBA/jwks"} {
		t.Run("not "+path, func(t *testing.T) {
			rec, handled := issServe(t, iss, http.MethodGet, path)
			if handled || rec.Body.Len() != 0 || rec.Code != http.StatusOK || len(rec.Header()) != 0 {
				t.Fatalf("handled %v, wrote %d %q %v", handled, rec.Code, rec.Body, rec.Header())
			}
		})
	}
}

func TestIssuerJWKSStoreClosed(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st, err := badgerstore.Open(t.TempDir(), nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	iss := issNew(t, st, clock, nil)
	issJWKS(t, iss)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyRefreshPeriod + time.Second) // the cached ring is stale
	rec, _ := issServe(t, iss, http.MethodGet, "/ciba/jwks")
	cibatest.WantOAuthError(t, rec, http.StatusServiceUnavailable, oauth.CodeTemporarilyUnavailable)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if _, err := iss.SubjectToken(context.Background(), issGrant(issAlice), issUpstream); err == nil {
		t.Error("SubjectToken without keys succeeded")
	}
}

func TestSubjectTokenClaims(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	iss := issNew(t, st, clock, nil)
	set := issJWKS(t, iss)
	now := clock.Now().Unix()

	// Both subjects were approved by e-mail link (amr ["email"]); the
	// second under an acr of the site's own.
	cases := []struct {
		name     string
		user     store.User
		acr      string
		authTime time.Time
		wantName string
		wantACR  string
		wantAuth int64
	}{
		{"named user", issAlice, email.DefaultACR, time.Date(2026, 11, 25, 11, 59, 30, 0, time.UTC), "Alice Example", email.DefaultACR, time.Date(2026, 11, 25, 11, 59, 30, 0, time.UTC).Unix()},
		{"no name: the username", issBob, "urn:example:acr", time.Time{}, "bob", "urn:example:acr", now},
	}
	jtis := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := issGrant(tc.user)
			g.ACR, g.AMR, g.AuthTime = tc.acr, email.DefaultAMR, tc.authTime
			hdr, c := cibatest.VerifyJWT(t, issToken(t, iss, g), set)
			if hdr.Algorithm != "ES256" {
				t.Errorf("alg %s", hdr.Algorithm)
			}
			if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
				t.Errorf("typ %q", typ)
			}
			want := map[string]any{
				"iss":                "https://idp.example.com/ciba",
				"sub":                tc.user.Subject,
				"aud":                issUpstream,
				"email":              tc.user.Email,
				"email_verified":     true,
				"name":               tc.wantName,
				"preferred_username": tc.user.Username,
				"auth_time":          float64(tc.wantAuth),
				"amr":                []any{"email"},
				"acr":                tc.wantACR,
				"iat":                float64(now),
			}
			for k, v := range want {
				if !reflect.DeepEqual(c[k], v) {
					t.Errorf("%s = %#v, want %#v", k, c[k], v)
				}
			}
			iat, _ := c["iat"].(float64)
			nbf, _ := c["nbf"].(float64)
			exp, _ := c["exp"].(float64)
			if nbf == 0 || nbf > iat {
				t.Errorf("nbf %v, iat %v", nbf, iat)
			}
			if exp <= iat || exp > iat+300 {
				t.Errorf("exp %v is not within 5 minutes after iat %v", exp, iat)
			}
			jti, _ := c["jti"].(string)
			if len(jti) < 22 { // 128 bits in base64url
				t.Errorf("jti %q is short", jti)
			}
			if jtis[jti] {
				t.Errorf("jti %q repeated", jti)
			}
			jtis[jti] = true
		})
	}

	// Two tokens for the same user at the same instant differ in jti.
	g := issGrant(issAlice)
	_, c1 := cibatest.VerifyJWT(t, issToken(t, iss, g), set)
	_, c2 := cibatest.VerifyJWT(t, issToken(t, iss, g), set)
	if c1["jti"] == c2["jti"] || c1["jti"] == "" {
		t.Errorf("jti %v and %v", c1["jti"], c2["jti"])
	}

	// The audience is the one passed, unless one is configured.
	tok, err := iss.SubjectToken(context.Background(), g, "https://dex.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, c := cibatest.VerifyJWT(t, tok, set); c["aud"] != "https://dex.example.com" {
		t.Errorf("aud %v, want the audience passed", c["aud"])
	}
	fixed := issNew(t, st, clock, func(c *Config) { c.Audience = "urn:fixed" })
	tok, err = fixed.SubjectToken(context.Background(), g, issUpstream)
	if err != nil {
		t.Fatal(err)
	}
	if _, c := cibatest.VerifyJWT(t, tok, set); c["aud"] != "urn:fixed" {
		t.Errorf("aud %v, want the configured audience", c["aud"])
	}
}

func TestIssuerRSAAlgorithms(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256"} {
		t.Run(alg, func(t *testing.T) {
			_, iss, set := issWithAlg(t, alg)
			pub, ok := set.Keys[0].Key.(*rsa.PublicKey)
			if !ok || pub.N.BitLen() != 2048 {
				t.Fatalf("key %T, want a 2048-bit RSA key", set.Keys[0].Key)
			}
			hdr, c := cibatest.VerifyJWT(t, issToken(t, iss, issGrant(issAlice)), set)
			if hdr.Algorithm != alg {
				t.Errorf("alg %s, want %s", hdr.Algorithm, alg)
			}
			if c["sub"] != "alice" {
				t.Errorf("sub %v", c["sub"])
			}
		})
	}
}

// issWritePEM writes a PEM block to a file and returns its path.
func issWritePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func issPKCS8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestIssuerKeyFile(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}

	good := []struct {
		name, alg string
		path      string
		pub       crypto.PublicKey
	}{
		{"EC PKCS#8", "ES256", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, ec)), &ec.PublicKey},
		{"EC SEC 1, default alg", "", issWritePEM(t, "EC PRIVATE KEY", sec1), &ec.PublicKey},
		{"RSA PKCS#1 RS256", "RS256", issWritePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), &rsaKey.PublicKey},
		{"RSA PKCS#8 PS256", "PS256", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, rsaKey)), &rsaKey.PublicKey},
		{"RSA PKCS#1 PS256", "PS256", issWritePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), &rsaKey.PublicKey},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			clock := cibatest.NewClock(time.Time{})
			// No store: the key file is all the issuer needs.
			iss := issNew(t, nil, clock, func(c *Config) { c.Alg, c.KeyFile = tc.alg, tc.path })
			set := issJWKS(t, iss)
			if len(set.Keys) != 1 {
				t.Fatalf("%d keys", len(set.Keys))
			}
			if want := issThumbprint(t, tc.pub); set.Keys[0].KeyID != want {
				t.Errorf("kid %s, thumbprint of the file's key %s", set.Keys[0].KeyID, want)
			}
			tok := issToken(t, iss, issGrant(issAlice))
			hdr, _ := cibatest.VerifyJWT(t, tok, set)
			wantAlg := tc.alg
			if wantAlg == "" {
				wantAlg = "ES256"
			}
			if hdr.Algorithm != wantAlg {
				t.Errorf("alg %s, want %s", hdr.Algorithm, wantAlg)
			}
			// It verifies with the file's public key itself.
			jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(wantAlg)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jws.Verify(tc.pub); err != nil {
				t.Errorf("not signed by the file's key: %v", err)
			}
			// The same file on a reload: the same kid.
			again := issNew(t, nil, clock, func(c *Config) { c.Alg, c.KeyFile = tc.alg, tc.path })
			if k := issKIDs(issJWKS(t, again)); !slices.Equal(k, issKIDs(set)) {
				t.Errorf("reload publishes %v, before %v", k, issKIDs(set))
			}
		})
	}

	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("this is not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name, alg, path string
	}{
		{"EC key, RS256", "RS256", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, ec))},
		{"EC key, PS256", "PS256", issWritePEM(t, "EC PRIVATE KEY", sec1)},
		{"RSA key, ES256", "ES256", issWritePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))},
		{"RSA key, default alg", "", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, rsaKey))},
		{"P-384 key, ES256", "ES256", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, ec384))},
		{"RSA 1024", "RS256", issWritePEM(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaSmall))},
		{"Ed25519", "ES256", issWritePEM(t, "PRIVATE KEY", issPKCS8(t, edKey))},
		{"garbage", "ES256", garbage},
		{"garbage in a PEM block", "ES256", issWritePEM(t, "PRIVATE KEY", []byte("garbage"))},
		{"SEC 1 labelled PKCS#1", "RS256", issWritePEM(t, "RSA PRIVATE KEY", sec1)},
		{"a certificate", "ES256", issWritePEM(t, "CERTIFICATE", []byte("garbage"))},
		{"a public key", "ES256", issWritePEM(t, "PUBLIC KEY", func() []byte {
			der, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
			return der
		}())},
		{"missing file", "ES256", filepath.Join(dir, "missing.pem")},
		{"empty file", "ES256", func() string {
			p := filepath.Join(dir, "empty.pem")
			_ = os.WriteFile(p, nil, 0o600)
			return p
		}()},
	}
	for _, tc := range bad {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			iss, err := New(context.Background(), Config{PublicURL: issTestPublic, Alg: tc.alg, KeyFile: tc.path})
			if err == nil {
				t.Fatalf("accepted (issuer %v)", iss.URL())
			}
		})
	}
}

func TestIssuerConfigRefused(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := issWritePEM(t, "PRIVATE KEY", issPKCS8(t, ec))
	cases := []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"rotation 2×TTL is the minimum", func(c *Config) { c.Rotation = 2 * subjectTokenTTL }, true},
		{"rotation shorter than 2×TTL", func(c *Config) { c.Rotation = 2*subjectTokenTTL - time.Second }, false},
		{"rotation 1m", func(c *Config) { c.Rotation = time.Minute }, false},
		{"negative rotation", func(c *Config) { c.Rotation = -time.Hour }, false},
		{"key file with rotation", func(c *Config) { c.KeyFile, c.Rotation = keyFile, time.Hour }, false},
		{"key file without rotation", func(c *Config) { c.KeyFile = keyFile }, true},
		{"HS256", func(c *Config) { c.Alg = "HS256" }, false},
		{"none", func(c *Config) { c.Alg = "none" }, false},
		{"lower-case es256", func(c *Config) { c.Alg = "es256" }, false},
		{"no store, no key file", func(c *Config) { c.Store = nil }, false},
		{"no public URL", func(c *Config) { c.PublicURL = "" }, false},
		{"relative public URL", func(c *Config) { c.PublicURL = "/ciba" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{PublicURL: issTestPublic, Store: st, Now: clock.Now}
			tc.mod(&cfg)
			_, err := New(context.Background(), cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestIssuerRotation(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	rot := func(c *Config) { c.Rotation = 10 * time.Minute }
	iss := issNew(t, st, clock, rot)
	t0 := clock.Now()
	at := func(d time.Duration) {
		t.Helper()
		if now := clock.Now(); now.After(t0.Add(d)) {
			t.Fatalf("the clock is past %s", d)
		}
		clock.Advance(t0.Add(d).Sub(clock.Now()))
	}
	g := issGrant(issAlice)

	first := issKIDs(issJWKS(t, iss))
	if len(first) != 1 {
		t.Fatalf("at start: JWKS %v", first)
	}
	a := first[0]
	for _, d := range []time.Duration{time.Minute, 4 * time.Minute, 5*time.Minute - time.Second} {
		at(d)
		if kids := issKIDs(issJWKS(t, iss)); !slices.Equal(kids, []string{a}) {
			t.Fatalf("at %s: JWKS %v, want only the first key", d, kids)
		}
		if kid := issKID(t, issToken(t, iss, g)); kid != a {
			t.Fatalf("at %s: signed by %s", d, kid)
		}
	}

	// Half a period in: the next key is published, the first still signs.
	at(5 * time.Minute)
	kids := issKIDs(issJWKS(t, iss))
	if len(kids) != 2 || kids[0] != a {
		t.Fatalf("at 5m: JWKS %v, want the first key and the next", kids)
	}
	b := kids[1]
	set := issJWKS(t, iss)
	if hdr, _ := cibatest.VerifyJWT(t, issToken(t, iss, g), set); hdr.KeyID != a {
		t.Fatalf("at 5m: signed by %s, want the first key %s", hdr.KeyID, a)
	}
	at(10*time.Minute - time.Second)
	if kid := issKID(t, issToken(t, iss, g)); kid != a {
		t.Fatalf("at 9m59s: signed by %s, want the first key", kid)
	}
	// A token signed just before the switch; it must stay verifiable until
	// it expires.
	lastOfA := issToken(t, iss, g)

	// A full period in: the next key signs; the first is still published.
	at(10 * time.Minute)
	set = issJWKS(t, iss)
	if kids := issKIDs(set); !slices.Equal(kids, []string{a, b}) {
		t.Fatalf("at 10m: JWKS %v, want [%s %s]", kids, a, b)
	}
	if hdr, _ := cibatest.VerifyJWT(t, issToken(t, iss, g), set); hdr.KeyID != b {
		t.Fatalf("at 10m: signed by %s, want the next key %s", hdr.KeyID, b)
	}

	// A restarted issuer sees the same ring.
	restarted := issNew(t, st, clock, rot)
	if kids := issKIDs(issJWKS(t, restarted)); !slices.Equal(kids, []string{a, b}) {
		t.Fatalf("restarted at 10m: JWKS %v", kids)
	}
	if kid := issKID(t, issToken(t, restarted, g)); kid != b {
		t.Fatalf("restarted at 10m: signed by %s", kid)
	}

	// The first key's last token expires at 12m; the key stays published
	// until then (and a minute more).
	_, c := cibatest.VerifyJWT(t, lastOfA, set)
	expA := time.Unix(int64(c["exp"].(float64)), 0)
	at(10*time.Minute + subjectTokenTTL + time.Minute)
	set = issJWKS(t, iss)
	if expA.After(clock.Now()) {
		t.Fatalf("the first key's last token expires at %s, after %s", expA, clock.Now())
	}
	if kids := issKIDs(set); !slices.Contains(kids, a) {
		t.Fatalf("at 13m: JWKS %v, the first key dropped early", kids)
	}
	cibatest.VerifyJWT(t, lastOfA, set)

	at(10*time.Minute + subjectTokenTTL + time.Minute + time.Second)
	for name, i := range map[string]*Issuer{"running": iss, "restarted": restarted} {
		if kids := issKIDs(issJWKS(t, i)); !slices.Equal(kids, []string{b}) {
			t.Fatalf("%s issuer after 13m: JWKS %v, want only %s", name, kids, b)
		}
		if kid := issKID(t, issToken(t, i, g)); kid != b {
			t.Fatalf("%s issuer after 13m: signed by %s", name, kid)
		}
	}
	if ring := issRing(t, st); len(ring.Keys) != 1 || ring.Keys[0].KID != b {
		t.Fatalf("stored ring after 13m: %+v", ring.Keys)
	}

	// The next period: a third key is published at 15m and signs at 20m.
	at(15 * time.Minute)
	kids = issKIDs(issJWKS(t, iss))
	if len(kids) != 2 || kids[0] != b {
		t.Fatalf("at 15m: JWKS %v", kids)
	}
	cKey := kids[1]
	if kid := issKID(t, issToken(t, iss, g)); kid != b {
		t.Fatalf("at 15m: signed by %s", kid)
	}
	at(20 * time.Minute)
	if kid := issKID(t, issToken(t, restarted, g)); kid != cKey {
		t.Fatalf("at 20m: signed by %s, want %s", kid, cKey)
	}
}

// A key signs only after it has been published for at least the JWKS's
// cache lifetime, also when nobody asked the issuer for anything when the
// next key was due to be published (a quiet proxy).
func TestIssuerRotationAfterIdle(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	iss := issNew(t, st, clock, func(c *Config) { c.Rotation = 10 * time.Minute })
	seen := issKIDs(issJWKS(t, iss)) // an upstream caches the JWKS
	clock.Advance(11 * time.Minute)  // no request between 0 and 11m
	kid := issKID(t, issToken(t, iss, issGrant(issAlice)))
	if !slices.Contains(seen, kid) {
		// A late next key must still wait half a period: signing at once
		// would sign before any JWKS listed it.
		t.Fatalf("after an idle period the issuer signs with key %s, never published before (published: %v)", kid, seen)
	}
}

func TestIssuerRotationRefusedShort(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	if _, err := New(context.Background(), Config{PublicURL: issTestPublic, Store: st, Now: clock.Now, Rotation: 3 * time.Minute}); err == nil {
		t.Fatal("rotation 3m accepted; tokens live 2m, so a key must sign at least 4m")
	}
	// The refusal stored nothing.
	if _, err := st.Setting(context.Background(), ringSetting(issTestPublic+Path)); err == nil {
		t.Error("a refused issuer created a key")
	}
}

func TestIssuerAlgChange(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	es := issNew(t, st, clock, nil)
	old := issKIDs(issJWKS(t, es))
	if len(old) != 1 {
		t.Fatalf("JWKS %v", old)
	}
	esToken := issToken(t, es, issGrant(issAlice))

	clock.Advance(time.Hour)
	ps := issNew(t, st, clock, func(c *Config) { c.Alg = "PS256" })
	set := issJWKS(t, ps)
	kids := issKIDs(set)
	if len(kids) != 2 || kids[0] != old[0] {
		t.Fatalf("after the change: JWKS %v, want the ES256 key and a PS256 one", kids)
	}
	hdr, _ := cibatest.VerifyJWT(t, issToken(t, ps, issGrant(issAlice)), set)
	if hdr.Algorithm != "PS256" || hdr.KeyID != kids[1] {
		t.Fatalf("signed %s by %s, want PS256 by %s at once", hdr.Algorithm, hdr.KeyID, kids[1])
	}
	if k := set.Key(kids[1]); len(k) != 1 || k[0].Algorithm != "PS256" {
		t.Fatalf("new key %+v", k)
	}
	if k := set.Key(old[0]); len(k) != 1 || k[0].Algorithm != "ES256" {
		t.Fatalf("old key %+v", k)
	}
	cibatest.VerifyJWT(t, esToken, set) // the old token still verifies

	clock.Advance(subjectTokenTTL + time.Minute)
	if got := issKIDs(issJWKS(t, ps)); !slices.Equal(got, kids) {
		t.Fatalf("at TTL+1m: JWKS %v, want both", got)
	}
	clock.Advance(time.Second)
	if got := issKIDs(issJWKS(t, ps)); !slices.Equal(got, kids[1:]) {
		t.Fatalf("after TTL+1m: JWKS %v, want only the PS256 key", got)
	}
	if ring := issRing(t, st); len(ring.Keys) != 1 || ring.Keys[0].Alg != "PS256" {
		t.Fatalf("stored ring %+v", ring.Keys)
	}
}

// Switching the algorithm back (ES256 → PS256 → ES256) signs with ES256 at
// once, and the PS256 key is retired like any key that stopped signing.
func TestIssuerAlgChangeBack(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	issNew(t, st, clock, nil)
	clock.Advance(time.Hour)
	ps := issNew(t, st, clock, func(c *Config) { c.Alg = "PS256" })
	psKID := issKID(t, issToken(t, ps, issGrant(issAlice)))

	clock.Advance(time.Minute) // back before the ES256 key was retired
	es := issNew(t, st, clock, nil)
	set := issJWKS(t, es)
	hdr, _ := cibatest.VerifyJWT(t, issToken(t, es, issGrant(issAlice)), set)
	if hdr.Algorithm != "ES256" {
		t.Fatalf("configured ES256, signed %s by %s", hdr.Algorithm, hdr.KeyID)
	}
	if !slices.Contains(issKIDs(set), psKID) {
		t.Fatalf("the PS256 key was dropped at once; its tokens still live (JWKS %v)", issKIDs(set))
	}

	clock.Advance(subjectTokenTTL + time.Minute + time.Second)
	kids := issKIDs(issJWKS(t, es))
	if slices.Contains(kids, psKID) {
		// A key that stopped signing retires wherever it sits in the ring,
		// also after a newer key of the configured algorithm took over.
		t.Fatalf("the PS256 key that stopped signing %s ago is still published (JWKS %v)", subjectTokenTTL+time.Minute+time.Second, kids)
	}
	if len(kids) != 1 {
		t.Fatalf("JWKS %v, want only the ES256 key", kids)
	}
}

// TestSubjectTokenACRAMR signs subject tokens for grants of each
// authenticator and checks the acr and amr claims.
func TestSubjectTokenACRAMR(t *testing.T) {
	const (
		acrEmail  = "urn:example:acr:email"
		acrDevice = "urn:example:acr:device"
	)
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	iss := issNew(t, st, clock, nil)
	set := issJWKS(t, iss)
	for _, tc := range []struct {
		name    string
		acr     string
		amr     []string
		wantACR any    // nil: no acr claim
		wantAMR string // JSON; "null": no amr claim
	}{
		{"http channel", acrDevice, []string{"hwk", "user"}, acrDevice, `["hwk","user"]`},
		{"http channel defaults", httpchannel.DefaultACR, httpchannel.DefaultAMR, httpchannel.DefaultACR, `["user"]`},
		{"e-mail", acrEmail, email.DefaultAMR, acrEmail, `["email"]`},
		{"e-mail defaults", email.DefaultACR, email.DefaultAMR, email.DefaultACR, `["email"]`},
		// Every request of the product carries its authenticator's acr; a
		// subject without one gets neither claim, not the e-mail link's.
		{"nothing chosen: no acr, no amr", "", nil, nil, `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := issGrant(issAlice)
			g.ACR, g.AMR = tc.acr, tc.amr
			_, claims := cibatest.VerifyJWT(t, issToken(t, iss, g), set)
			if claims["acr"] != tc.wantACR {
				t.Errorf("acr = %v, want %v", claims["acr"], tc.wantACR)
			}
			if amr, _ := json.Marshal(claims["amr"]); string(amr) != tc.wantAMR {
				t.Errorf("amr = %s, want %s", amr, tc.wantAMR)
			}
			if tc.wantACR == nil {
				for _, c := range []string{"acr", "amr"} {
					if v, ok := claims[c]; ok {
						t.Errorf("claim %s = %v is present; want none", c, v)
					}
				}
			}
			if at, _ := claims["auth_time"].(float64); int64(at) != g.AuthTime.Unix() {
				t.Errorf("auth_time = %v", claims["auth_time"])
			}
		})
	}
}

// TestIssuerSitesKeepTheirRings: two sites on one store, one signing ES256
// and one RS256, each keep a ring of their own: serving them in turn,
// across the re-reads of the rings, publishes the same one key each.
func TestIssuerSitesKeepTheirRings(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	es := issNew(t, st, clock, nil)
	rs := issNew(t, st, clock, func(c *Config) { c.Alg = "RS256"; c.PublicURL = "https://other.example.com" })
	esKIDs, rsKIDs := issKIDs(issJWKS(t, es)), issKIDs(issJWKS(t, rs))
	for range 3 {
		clock.Advance(keyRefreshPeriod + time.Second)
		for _, s := range []struct {
			iss  *Issuer
			want []string
			alg  string
		}{{es, esKIDs, "ES256"}, {rs, rsKIDs, "RS256"}} {
			set := issJWKS(t, s.iss)
			if got := issKIDs(set); !slices.Equal(got, s.want) {
				t.Fatalf("%s publishes %v, want its own key %v", s.iss.URL(), got, s.want)
			}
			hdr, _ := cibatest.VerifyJWT(t, issToken(t, s.iss, issGrant(issAlice)), set)
			if hdr.Algorithm != s.alg || hdr.KeyID != s.want[0] {
				t.Fatalf("%s signed %s by %s, want %s by %s", s.iss.URL(), hdr.Algorithm, hdr.KeyID, s.alg, s.want[0])
			}
		}
	}
}

// TestIssuerStartsFromTheRingOfAnEarlierRelease: a ring stored under the
// bare setting name, as an earlier release kept it, is where a site's ring
// starts: the key the upstream already trusts goes on signing.
func TestIssuerStartsFromTheRingOfAnEarlierRelease(t *testing.T) {
	clock := cibatest.NewClock(time.Time{})
	st := issOpenStore(t, clock)
	first := issNew(t, st, clock, nil)
	kids := issKIDs(issJWKS(t, first))
	raw, err := st.Setting(context.Background(), ringSetting(issTestPublic+Path))
	if err != nil {
		t.Fatal(err)
	}
	// The same ring, as the earlier release stored it, in a fresh store.
	st2 := issOpenStore(t, clock)
	if err := st2.PutSetting(context.Background(), settingSignKeys, raw); err != nil {
		t.Fatal(err)
	}
	iss := issNew(t, st2, clock, nil)
	set := issJWKS(t, iss)
	if got := issKIDs(set); !slices.Equal(got, kids) {
		t.Fatalf("JWKS %v, want the earlier release's key %v", got, kids)
	}
	if hdr, _ := cibatest.VerifyJWT(t, issToken(t, iss, issGrant(issAlice)), set); hdr.KeyID != kids[0] {
		t.Fatalf("signed by %s, want %s", hdr.KeyID, kids[0])
	}
	if _, err := st2.Setting(context.Background(), ringSetting(issTestPublic+Path)); err != nil {
		t.Errorf("the site's own ring was not stored: %v", err)
	}
}
