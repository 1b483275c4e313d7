package cibatest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Keys and JWTs: the signing keys of the tests' clients, their JWK Sets
// and a jwks_uri serving one, signing a JWT and verifying one against a
// JWK Set.

var rsaKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

// RSAKey returns a 2048-bit RSA key made once per process (RSA key
// generation is slow under -race): the key of every FakeOP without
// WithES256 or WithKey.
func RSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsaKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// ECKey returns a fresh P-256 key.
func ECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// Key is a signing key and its key id: a client's (private_key_jwt, signed
// requests), or that of any party a test signs for.
type Key struct {
	Signer crypto.Signer
	ID     string
}

// NewKey returns a fresh P-256 key with key id kid.
func NewKey(t testing.TB, kid string) Key {
	t.Helper()
	return Key{Signer: ECKey(t), ID: kid}
}

// clientKeys are the keys of ClientKey, made once per process.
var clientKeys = sync.OnceValues(func() (map[string]Key, error) {
	keys := map[string]Key{}
	for _, name := range []string{"es1", "es2", "es3", "es-rotated"} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		keys[name] = Key{Signer: k, ID: "kid-" + name}
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	keys["rsa"] = Key{Signer: k, ID: "kid-rsa"}
	return keys, nil
})

// ClientKey returns the named key of a test client, made once per process:
// "es1", "es2", "es3" and "es-rotated" are P-256 keys, "rsa" a 2048-bit RSA
// key that is not RSAKey (the FakeOP's), so that it also stands for a
// stranger's key there. Its key id is "kid-" and the name.
func ClientKey(t testing.TB, name string) Key {
	t.Helper()
	keys, err := clientKeys()
	if err != nil {
		t.Fatal(err)
	}
	k, ok := keys[name]
	if !ok {
		t.Fatalf("no client key %q", name)
	}
	return k
}

// KeyFromJWK returns the key of a private JWK: a fixed key, whose
// signatures over stored inputs (fuzz seeds) verify in every run.
func KeyFromJWK(t testing.TB, jwk string) Key {
	t.Helper()
	var k jose.JSONWebKey
	if err := json.Unmarshal([]byte(jwk), &k); err != nil {
		t.Fatal(err)
	}
	signer, ok := k.Key.(crypto.Signer)
	if !ok {
		t.Fatalf("the JWK %s holds no private key", k.KeyID)
	}
	return Key{Signer: signer, ID: k.KeyID}
}

// PEMKeyFile writes signer to a PKCS#8 PEM file in a fresh temporary
// directory (an upstream_key, a signing_key) and returns its path and the
// key under its RFC 7638 thumbprint (SHA-256) as key id, the kid the proxy
// signs with.
func PEMKeyFile(t testing.TB, signer crypto.Signer) (string, Key) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	tp, err := (&jose.JSONWebKey{Key: signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return path, Key{Signer: signer, ID: base64.RawURLEncoding.EncodeToString(tp)}
}

// Public returns the key's public JWK, for signatures.
func (k Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Signer.Public(), KeyID: k.ID, Use: "sig"}
}

// JWKSJSON returns a JWK Set of the keys' public halves, as JSON.
func JWKSJSON(t testing.TB, keys ...Key) []byte {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Sign returns a compact JWT (typ JWT) of claims signed by k with alg. The
// header names the key id kid: "" for the key's own, "-" for none at all.
func (k Key) Sign(t testing.TB, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	return k.SignBytes(t, alg, kid, marshalClaims(t, claims))
}

// SignBytes is Sign of a payload taken as it is, JSON or not.
func (k Key) SignBytes(t testing.TB, alg jose.SignatureAlgorithm, kid string, payload []byte) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: k.Signer}
	switch kid {
	case "":
		jwk.KeyID = k.ID
	case "-":
	default:
		jwk.KeyID = kid
	}
	return signPayload(t, jose.SigningKey{Algorithm: alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"), payload)
}

// SignTyped returns a compact JWT of claims signed by k (ES256, k's kid)
// with the typ header typ (any JSON value); nil leaves typ out.
func (k Key) SignTyped(t testing.TB, typ any, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != nil {
		opts.WithHeader(jose.HeaderType, typ)
	}
	key := jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k.Signer, KeyID: k.ID}}
	return signPayload(t, key, opts, marshalClaims(t, claims))
}

// SignJWT returns a compact JWT (typ JWT) of claims signed with key; the
// kid of a jose.JSONWebKey key goes in the header.
func SignJWT(t testing.TB, key jose.SigningKey, claims map[string]any) string {
	t.Helper()
	return signPayload(t, key, (&jose.SignerOptions{}).WithType("JWT"), marshalClaims(t, claims))
}

func marshalClaims(t testing.TB, claims map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signPayload(t testing.TB, key jose.SigningKey, opts *jose.SignerOptions, payload []byte) string {
	t.Helper()
	signer, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// VerifyJWT verifies the compact JWS tok against set and returns its
// header and claims: it must carry one signature, whose kid names exactly
// one key of set, made with the algorithm that key is published for.
func VerifyJWT(t testing.TB, tok string, set jose.JSONWebKeySet) (jose.Header, map[string]any) {
	t.Helper()
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256})
	if err != nil {
		t.Fatalf("parsing the token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		t.Fatalf("%d signatures", len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Header
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		kids := make([]string, 0, len(set.Keys))
		for _, k := range set.Keys {
			kids = append(kids, k.KeyID)
		}
		t.Fatalf("kid %q is in the JWKS %d times (published: %v)", hdr.KeyID, len(keys), kids)
	}
	if keys[0].Algorithm != hdr.Algorithm {
		t.Errorf("token alg %s, JWKS key alg %s", hdr.Algorithm, keys[0].Algorithm)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("the token does not verify against the JWKS: %v", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	return hdr, claims
}

// JWKSServer is a client's jwks_uri: an HTTP server on loopback serving a
// JWK Set (application/jwk-set+json) that the test changes, counting the
// fetches.
type JWKSServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	status  int
	body    []byte
	fetches atomic.Int32
}

// StartJWKS starts a JWKSServer answering 200 with body, on any path;
// t.Cleanup closes it.
func StartJWKS(t testing.TB, body []byte) *JWKSServer {
	t.Helper()
	s := &JWKSServer{status: http.StatusOK, body: body}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		status, body := s.status, s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	s.srv.Listener = ListenLoopback(t)
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

// URL returns the server's base URL (http://127.0.0.1:port).
func (s *JWKSServer) URL() string { return s.srv.URL }

// Set changes the answer from now on.
func (s *JWKSServer) Set(status int, body []byte) {
	s.mu.Lock()
	s.status, s.body = status, body
	s.mu.Unlock()
}

// Fetches returns how many requests the server answered.
func (s *JWKSServer) Fetches() int { return int(s.fetches.Load()) }

// StoreKey returns a random AES-256 key for a store's encryption at rest.
func StoreKey(t testing.TB) []byte {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}
