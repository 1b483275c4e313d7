package clients

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// staticKeys returns Keys holding the public keys.
func staticKeys(t testing.TB, keys ...cibatest.Key) *StaticKeys {
	t.Helper()
	sk, err := NewStaticKeys(cibatest.JWKSJSON(t, keys...))
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// ---- tests ----

func TestStaticKeys(t *testing.T) {
	es1, rsaKey := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "rsa")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := json.Marshal(jose.JSONWebKey{Key: es1.Signer, KeyID: "p"})
	smallJWK, _ := json.Marshal(jose.JSONWebKey{Key: small.Public(), KeyID: "s"})
	encJWK, _ := json.Marshal(jose.JSONWebKey{Key: es1.Signer.Public(), KeyID: "e", Use: "enc"})
	hsJWK, _ := json.Marshal(jose.JSONWebKey{Key: es1.Signer.Public(), KeyID: "h", Algorithm: "HS256"})
	for _, tc := range []struct {
		name, data string
		ok         bool
	}{
		{"EC and RSA", string(cibatest.JWKSJSON(t, es1, rsaKey)), true},
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
			one, _ := k.Keys(context.Background(), es1.ID)
			none, _ := k.Keys(context.Background(), "nope")
			if len(all) != 2 || len(one) != 1 || one[0].KeyID != es1.ID || len(none) != 0 {
				t.Errorf("keys: all %d, by kid %d, unknown %d", len(all), len(one), len(none))
			}
		})
	}
	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "jwks.json")
		if err := os.WriteFile(path, cibatest.JWKSJSON(t, es1), 0o600); err != nil {
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
	es1 := cibatest.ClientKey(t, "es1")
	dir := t.TempDir()
	good := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(good, cibatest.JWKSJSON(t, es1), 0o600); err != nil {
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

func TestRemoteKeys(t *testing.T) {
	ctx := context.Background()
	es1, es2 := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es-rotated")
	srv := cibatest.StartJWKS(t, cibatest.JWKSJSON(t, es1))
	clock := cibatest.NewClock(time.Time{})
	rk, err := NewRemoteKeys(RemoteKeysConfig{URL: srv.URL() + "/jwks", Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.Fetches(); n != 0 {
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
	if keys(es1.ID) != 1 || srv.Fetches() != 1 {
		t.Fatalf("first use: fetches %d", srv.Fetches())
	}
	// cached
	keys(es1.ID)
	keys("")
	if n := srv.Fetches(); n != 1 {
		t.Errorf("fetched %d times, want the cache used", n)
	}
	// The client rotates its key: an unknown kid is fetched again, but not
	// more often than every DefaultJWKSMinRefetch.
	srv.Set(200, cibatest.JWKSJSON(t, es2))
	clock.Advance(time.Second)
	if keys(es2.ID) != 0 || srv.Fetches() != 1 {
		t.Errorf("refetched %d within the minimum interval", srv.Fetches())
	}
	clock.Advance(DefaultJWKSMinRefetch)
	if keys(es2.ID) != 1 || srv.Fetches() != 2 {
		t.Errorf("rotated key: fetches %d", srv.Fetches())
	}
	if keys(es1.ID) != 0 {
		t.Error("the removed key is still served")
	}
	// A failing endpoint: the keys fetched before stay in use.
	srv.Set(500, []byte("oops"))
	clock.Advance(DefaultJWKSRefresh)
	if keys(es2.ID) != 1 {
		t.Error("keys lost when a refresh failed")
	}
	if n := srv.Fetches(); n != 3 {
		t.Errorf("fetches %d, want a refresh attempt", n)
	}
	// Recovered: the next allowed attempt fetches again (failures are not
	// cached).
	srv.Set(200, cibatest.JWKSJSON(t, es1, es2))
	clock.Advance(DefaultJWKSMinRefetch)
	if keys(es1.ID) != 1 || srv.Fetches() != 4 {
		t.Errorf("after recovery: fetches %d", srv.Fetches())
	}
}

func TestRemoteKeysFailures(t *testing.T) {
	ctx := context.Background()
	es1 := cibatest.ClientKey(t, "es1")
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
			srv := cibatest.StartJWKS(t, nil)
			srv.Set(tc.status, tc.body)
			clock := cibatest.NewClock(time.Time{})
			rk, err := NewRemoteKeys(RemoteKeysConfig{URL: srv.URL(), Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rk.Keys(ctx, es1.ID); err == nil {
				t.Fatal("no error")
			}
			// not retried at once
			if _, err := rk.Keys(ctx, es1.ID); err == nil || srv.Fetches() != 1 {
				t.Errorf("second call: %v, fetches %d", err, srv.Fetches())
			}
			srv.Set(200, cibatest.JWKSJSON(t, es1))
			clock.Advance(DefaultJWKSMinRefetch)
			if ks, err := rk.Keys(ctx, es1.ID); err != nil || len(ks) != 1 {
				t.Errorf("after recovery: %v, %d keys", err, len(ks))
			}
		})
	}
	t.Run("unusable keys are skipped", func(t *testing.T) {
		priv, _ := json.Marshal(jose.JSONWebKey{Key: es1.Signer, KeyID: "p"})
		pub, _ := json.Marshal(es1.Public())
		srv := cibatest.StartJWKS(t, nil)
		srv.Set(200, []byte(`{"keys":[{"kty":"XYZ"},`+string(priv)+`,`+string(pub)+`]}`))
		rk, _ := NewRemoteKeys(RemoteKeysConfig{URL: srv.URL()})
		ks, err := rk.Keys(ctx, "")
		if err != nil || len(ks) != 1 || ks[0].KeyID != es1.ID {
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
	es1 := cibatest.ClientKey(t, "es1")
	srv := cibatest.StartJWKS(t, cibatest.JWKSJSON(t, es1))
	rk, _ := NewRemoteKeys(RemoteKeysConfig{URL: srv.URL()})
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if ks, err := rk.Keys(context.Background(), es1.ID); err != nil || len(ks) != 1 {
				t.Errorf("%v %d", err, len(ks))
			}
		})
	}
	wg.Wait()
	if n := srv.Fetches(); n > 2 {
		t.Errorf("%d fetches for concurrent first uses", n)
	}
}

// TestKeyFitsAlg: a key verifies only the algorithms of its type and curve.
func TestKeyFitsAlg(t *testing.T) {
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	es, rs := cibatest.ClientKey(t, "es1").Signer.Public(), cibatest.ClientKey(t, "rsa").Signer.Public()
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
