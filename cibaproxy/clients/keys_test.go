package clients

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
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
// "es-rotated" (P-256) and "rsa" (the kit's 2048-bit key).
func tKey(t testing.TB, name string) testKey {
	t.Helper()
	testKeysOnce.Do(func() {
		testKeyMap = map[string]testKey{}
		for _, n := range []string{"es1", "es2", "es-rotated"} {
			testKeyMap[n] = testKey{priv: cibatest.ECKey(t), kid: "kid-" + n}
		}
		testKeyMap["rsa"] = testKey{priv: cibatest.RSAKey(t), kid: "kid-rsa"}
	})
	k, ok := testKeyMap[name]
	if !ok {
		t.Fatalf("no test key %s", name)
	}
	return k
}

// public returns the key's public JWK.
func (k testKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Use: "sig"}
}

// jwksJSON returns a JWK Set of the public keys.
func jwksJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// staticKeys returns Keys holding the public keys.
func staticKeys(t testing.TB, keys ...testKey) *StaticKeys {
	t.Helper()
	sk, err := NewStaticKeys(jwksJSON(t, keys...))
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
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "-" {
		opts.WithHeader(jose.HeaderKey("kid"), kid)
	}
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

// checkOAuthErr fails unless err is an *oauth.Error with the given code
// and HTTP status.
func checkOAuthErr(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%d)", code, status)
	}
	var e *oauth.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want an *oauth.Error", err, err)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("got %s (%d) %q, want %s (%d)", e.Code, e.Status, e.Description, code, status)
	}
}

// ---- tests ----

func TestStaticKeys(t *testing.T) {
	es1, rsaKey := tKey(t, "es1"), tKey(t, "rsa")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := json.Marshal(jose.JSONWebKey{Key: es1.priv, KeyID: "p"})
	smallJWK, _ := json.Marshal(jose.JSONWebKey{Key: small.Public(), KeyID: "s"})
	encJWK, _ := json.Marshal(jose.JSONWebKey{Key: es1.priv.Public(), KeyID: "e", Use: "enc"})
	hsJWK, _ := json.Marshal(jose.JSONWebKey{Key: es1.priv.Public(), KeyID: "h", Algorithm: "HS256"})
	for _, tc := range []struct {
		name, data string
		ok         bool
	}{
		{"EC and RSA", string(jwksJSON(t, es1, rsaKey)), true},
		{"empty set", `{"keys":[]}`, false},
		{"not JSON", `keys`, false},
		{"no keys member", `{}`, false},
		{"a private key", `{"keys":[` + string(priv) + `]}`, false},
		{"a symmetric key", `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`, false},
		{"a short RSA key", `{"keys":[` + string(smallJWK) + `]}`, false},
		{"an encryption key", `{"keys":[` + string(encJWK) + `]}`, false},
		{"a key for HS256", `{"keys":[` + string(hsJWK) + `]}`, false},
		{"an unknown key type", `{"keys":[{"kty":"XYZ"}]}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewStaticKeys([]byte(tc.data))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				return
			}
			all, _ := k.Keys(context.Background(), "")
			one, _ := k.Keys(context.Background(), es1.kid)
			none, _ := k.Keys(context.Background(), "nope")
			if len(all) != 2 || len(one) != 1 || one[0].KeyID != es1.kid || len(none) != 0 {
				t.Errorf("keys: all %d, by kid %d, unknown %d", len(all), len(one), len(none))
			}
		})
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		if err := os.WriteFile(path, jwksJSON(t, es1), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadStaticKeys(path); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadStaticKeys(path + ".missing"); err == nil {
			t.Error("a missing file loaded")
		}
	})
}

// TestLoadKeys: a jwks file is read at once, a jwks_uri is fetched later,
// both at once are refused, and neither means no keys (a nil interface,
// not a typed nil).
func TestLoadKeys(t *testing.T) {
	es1 := tKey(t, "es1")
	dir := t.TempDir()
	good := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(good, jwksJSON(t, es1), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	k, err := LoadKeys(good, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.(*StaticKeys); !ok {
		t.Errorf("a jwks file gave %T", k)
	}
	k, err = LoadKeys("", "https://client.example.com/jwks")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.(*RemoteKeys); !ok {
		t.Errorf("a jwks_uri gave %T", k)
	}
	if k, err := LoadKeys("", ""); err != nil || k != nil {
		t.Errorf("neither: %v, %v; want no keys", k, err)
	}
	for _, tc := range []struct {
		name, file, uri, want string
	}{
		{"both", good, "https://client.example.com/jwks", "mutually exclusive"},
		{"missing file", filepath.Join(dir, "absent.json"), "", "reading jwks"},
		{"empty set", bad, "", bad},
		{"plain http jwks_uri", "", "http://client.example.com/jwks", "must be https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := LoadKeys(tc.file, tc.uri)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if k != nil {
				t.Errorf("keys %T beside the error", k)
			}
		})
	}
}

// jwksServer serves a JWK Set that the test changes.
type jwksServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	body    []byte
	status  int
	fetches atomic.Int32
}

func newJWKSServer(t *testing.T, keys ...testKey) *jwksServer {
	t.Helper()
	s := &jwksServer{body: jwksJSON(t, keys...), status: 200}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	s.srv.Listener = cibatest.ListenLoopback(t)
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *jwksServer) set(status int, body []byte) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

func TestRemoteKeys(t *testing.T) {
	ctx := context.Background()
	es1, es2 := tKey(t, "es1"), tKey(t, "es-rotated")
	srv := newJWKSServer(t, es1)
	clock := cibatest.NewClock(time.Time{})
	rk, err := NewRemoteKeys(RemoteKeysConfig{URL: srv.srv.URL + "/jwks", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.fetches.Load(); n != 0 {
		t.Fatalf("fetched %d times before the first use", n)
	}
	keys := func(kid string) int {
		t.Helper()
		ks, err := rk.Keys(ctx, kid)
		if err != nil {
			t.Fatalf("Keys(%q): %v", kid, err)
		}
		return len(ks)
	}
	if keys(es1.kid) != 1 || srv.fetches.Load() != 1 {
		t.Fatalf("first use: fetches %d", srv.fetches.Load())
	}
	// cached
	keys(es1.kid)
	keys("")
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("fetched %d times, want the cache used", n)
	}
	// The client rotates its key: an unknown kid is fetched again, but not
	// more often than every DefaultJWKSMinRefetch.
	srv.set(200, jwksJSON(t, es2))
	clock.Advance(time.Second)
	if keys(es2.kid) != 0 || srv.fetches.Load() != 1 {
		t.Errorf("refetched %d within the minimum interval", srv.fetches.Load())
	}
	clock.Advance(DefaultJWKSMinRefetch)
	if keys(es2.kid) != 1 || srv.fetches.Load() != 2 {
		t.Errorf("rotated key: fetches %d", srv.fetches.Load())
	}
	if keys(es1.kid) != 0 {
		t.Error("the removed key is still served")
	}
	// A failing endpoint: the keys fetched before stay in use.
	srv.set(500, []byte("oops"))
	clock.Advance(DefaultJWKSRefresh)
	if keys(es2.kid) != 1 {
		t.Error("keys lost when a refresh failed")
	}
	if n := srv.fetches.Load(); n != 3 {
		t.Errorf("fetches %d, want a refresh attempt", n)
	}
	// Recovered: the next allowed attempt fetches again (failures are not
	// cached).
	srv.set(200, jwksJSON(t, es1, es2))
	clock.Advance(DefaultJWKSMinRefetch)
	if keys(es1.kid) != 1 || srv.fetches.Load() != 4 {
		t.Errorf("after recovery: fetches %d", srv.fetches.Load())
	}
}

func TestRemoteKeysFailures(t *testing.T) {
	ctx := context.Background()
	es1 := tKey(t, "es1")
	for _, tc := range []struct {
		name   string
		status int
		body   []byte
	}{
		{"500", 500, []byte("oops")},
		{"404", 404, nil},
		{"not JSON", 200, []byte("<html>")},
		{"too large", 200, []byte(`{"keys":[],"pad":"` + strings.Repeat("x", maxJWKSBytes) + `"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t)
			srv.set(tc.status, tc.body)
			clock := cibatest.NewClock(time.Time{})
			rk, err := NewRemoteKeys(RemoteKeysConfig{URL: srv.srv.URL, Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rk.Keys(ctx, es1.kid); err == nil {
				t.Fatal("no error")
			}
			// not retried at once
			if _, err := rk.Keys(ctx, es1.kid); err == nil || srv.fetches.Load() != 1 {
				t.Errorf("second call: %v, fetches %d", err, srv.fetches.Load())
			}
			srv.set(200, jwksJSON(t, es1))
			clock.Advance(DefaultJWKSMinRefetch)
			if ks, err := rk.Keys(ctx, es1.kid); err != nil || len(ks) != 1 {
				t.Errorf("after recovery: %v, %d keys", err, len(ks))
			}
		})
	}
	t.Run("unusable keys are skipped", func(t *testing.T) {
		priv, _ := json.Marshal(jose.JSONWebKey{Key: es1.priv, KeyID: "p"})
		pub, _ := json.Marshal(es1.public())
		srv := newJWKSServer(t)
		srv.set(200, []byte(`{"keys":[{"kty":"XYZ"},`+string(priv)+`,`+string(pub)+`]}`))
		rk, _ := NewRemoteKeys(RemoteKeysConfig{URL: srv.srv.URL})
		ks, err := rk.Keys(ctx, "")
		if err != nil || len(ks) != 1 || ks[0].KeyID != es1.kid {
			t.Errorf("%v, %v", err, ks)
		}
	})
}

func TestRemoteKeysURL(t *testing.T) {
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"https://client.example.com/jwks", true},
		{"http://127.0.0.1:8080/jwks", true},
		{"http://localhost/jwks", true},
		{"http://[::1]:9/jwks", true},
		{"http://client.example.com/jwks", false},
		{"http://10.0.0.1/jwks", false},
		{"ftp://client.example.com/jwks", false},
		{"/jwks", false},
		{"https://user:pw@client.example.com/jwks", false},
		{"", false},
	} {
		_, err := NewRemoteKeys(RemoteKeysConfig{URL: tc.url})
		if (err == nil) != tc.ok {
			t.Errorf("%q: err = %v, want ok %v", tc.url, err, tc.ok)
		}
	}
	// A redirect to plain http off loopback is not followed.
	redirect := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://client.example.com/jwks", http.StatusFound)
	}))
	redirect.Listener = cibatest.ListenLoopback(t)
	redirect.Start()
	defer redirect.Close()
	rk, _ := NewRemoteKeys(RemoteKeysConfig{URL: redirect.URL})
	if _, err := rk.Keys(context.Background(), ""); err == nil {
		t.Error("followed a redirect to plain http")
	}
}

// TestRemoteKeysConcurrent: concurrent first uses fetch once.
func TestRemoteKeysConcurrent(t *testing.T) {
	es1 := tKey(t, "es1")
	srv := newJWKSServer(t, es1)
	rk, _ := NewRemoteKeys(RemoteKeysConfig{URL: srv.srv.URL})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if ks, err := rk.Keys(context.Background(), es1.kid); err != nil || len(ks) != 1 {
				t.Errorf("%v %d", err, len(ks))
			}
		})
	}
	wg.Wait()
	if n := srv.fetches.Load(); n > 2 {
		t.Errorf("%d fetches for concurrent first uses", n)
	}
}

// TestKeyFitsAlg: a key verifies only the algorithms of its type and curve.
func TestKeyFitsAlg(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	es, rs := tKey(t, "es1").priv.Public(), tKey(t, "rsa").priv.Public()
	for _, tc := range []struct {
		key  any
		alg  string
		want bool
	}{
		{es, "ES256", true}, {es, "ES384", false}, {es, "RS256", false}, {es, "EdDSA", false},
		{&p384.PublicKey, "ES384", true}, {&p384.PublicKey, "ES256", false},
		{rs, "RS256", true}, {rs, "PS512", true}, {rs, "ES256", false},
		{[]byte("secret"), "HS256", false},
	} {
		if got := keyFitsAlg(tc.key, tc.alg); got != tc.want {
			t.Errorf("keyFitsAlg(%T, %s) = %v", tc.key, tc.alg, got)
		}
	}
}
