package cibaproxy

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// caJWKSServer is a client's jwks_uri serving a JWK Set the test changes.
type caJWKSServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int32
}

func caStartJWKS(t *testing.T, keys ...caKey) *caJWKSServer {
	t.Helper()
	s := &caJWKSServer{body: caJWKS(keys...)}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		body := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	}))
	s.srv.Listener = cibatest.ListenLoopback(t)
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *caJWKSServer) set(body []byte) {
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

// TestJWKSURIRotation: a private_key_jwt client with a jwks_uri rotates its
// key; its next assertion, under the new kid, is accepted once the keys
// were fetched again.
func TestJWKSURIRotation(t *testing.T) {
	old, rotated := caTestKey("es1"), caTestKey("es-rotated")
	srv := caStartJWKS(t, old)
	h := newHarness(t, func(c *Config) {
		rk, err := clients.NewRemoteKeys(clients.RemoteKeysConfig{URL: srv.srv.URL, Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Clients = append(c.Clients, &clients.Client{ID: "remote", AuthMethod: clients.AuthPrivateKeyJWT, Keys: rk, UpstreamSecret: "x"})
	})
	sign := func(k caKey) string { return caSign(t, k, jose.ES256, "", h.caAssertionClaims("remote")) }
	caBCID(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(old)))
	srv.set(caJWKS(rotated))
	h.clock.Advance(clients.DefaultJWKSMinRefetch)
	caBCID(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(rotated)))
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// The old key is gone from the set: refused (401), and an unknown kid
	// right after does not fetch again.
	wantOAuthError(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(old)), 401, oauth.CodeInvalidClient)
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want none within the minimum interval", n)
	}
	// An unreachable jwks_uri on the first use is invalid_client, not a 5xx.
	rk2, err := clients.NewRemoteKeys(clients.RemoteKeysConfig{URL: "http://" + cibatest.FreeAddr(t) + "/jwks", Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, func(c *Config) {
		c.Clients = append(c.Clients, &clients.Client{ID: "remote", AuthMethod: clients.AuthPrivateKeyJWT, Keys: rk2, UpstreamSecret: "x"})
	})
	wantOAuthError(t, h2.caPostAssertion(DefaultEndpoint, hForm(), caSign(t, old, jose.ES256, "", h2.caAssertionClaims("remote"))), 401, oauth.CodeInvalidClient)
}
