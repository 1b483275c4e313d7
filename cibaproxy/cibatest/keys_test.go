package cibatest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// TestKeySignAndVerify: a JWT signed by a Key carries typ JWT and the kid
// asked for, verifies against its published JWK Set, and carries the
// claims as signed.
func TestKeySignAndVerify(t *testing.T) {
	es1, rsaKey := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "rsa")
	if es1.ID != "kid-es1" || rsaKey.ID != "kid-rsa" || rsaKey.Signer == cibatest.RSAKey(t) {
		t.Fatalf("client keys %s, %s: want kid-es1 and kid-rsa, the latter not the FakeOP's key", es1.ID, rsaKey.ID)
	}
	if again := cibatest.ClientKey(t, "es1"); again.Signer != es1.Signer {
		t.Error("ClientKey made a second es1")
	}
	claims := map[string]any{"iss": "c", "n": 7.0}
	for _, tc := range []struct {
		key     cibatest.Key
		alg     jose.SignatureAlgorithm
		kid     string
		wantKid string
	}{
		{es1, jose.ES256, "", "kid-es1"},
		{es1, jose.ES256, "other", "other"},
		{es1, jose.ES256, "-", ""},
		{rsaKey, jose.PS256, "", "kid-rsa"},
	} {
		tok := tc.key.Sign(t, tc.alg, tc.kid, claims)
		jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{tc.alg})
		if err != nil {
			t.Fatal(err)
		}
		hdr := jws.Signatures[0].Header
		if hdr.KeyID != tc.wantKid || hdr.ExtraHeaders[jose.HeaderType] != "JWT" {
			t.Errorf("kid %q: header kid %q typ %v, want kid %q typ JWT", tc.kid, hdr.KeyID, hdr.ExtraHeaders[jose.HeaderType], tc.wantKid)
		}
	}

	var set jose.JSONWebKeySet
	if err := json.Unmarshal(cibatest.JWKSJSON(t, es1, rsaKey), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || !set.Keys[0].IsPublic() || !set.Keys[1].IsPublic() || set.Keys[0].Use != "sig" {
		t.Fatalf("JWKS %+v: want the two public keys, for signatures", set.Keys)
	}
	set.Keys[0].Algorithm = string(jose.ES256)
	hdr, got := cibatest.VerifyJWT(t, es1.Sign(t, jose.ES256, "", claims), set)
	if hdr.KeyID != "kid-es1" || got["iss"] != "c" || got["n"] != 7.0 {
		t.Errorf("verified %v with kid %q", got, hdr.KeyID)
	}
}

// TestStartJWKS: the jwks_uri serves the set given, then what Set gives,
// and counts its fetches.
func TestStartJWKS(t *testing.T) {
	k := cibatest.NewKey(t, "k1")
	srv := cibatest.StartJWKS(t, cibatest.JWKSJSON(t, k))
	get := func() (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL() + "/jwks")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	if code, ct, body := get(); code != http.StatusOK || ct != "application/jwk-set+json" || body != string(cibatest.JWKSJSON(t, k)) {
		t.Errorf("first fetch: %d %q %s", code, ct, body)
	}
	srv.Set(http.StatusInternalServerError, []byte("oops"))
	if code, _, body := get(); code != http.StatusInternalServerError || body != "oops" {
		t.Errorf("after Set: %d %s", code, body)
	}
	if n := srv.Fetches(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
}
