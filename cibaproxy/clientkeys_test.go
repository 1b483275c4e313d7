package cibaproxy

import (
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// TestJWKSURIRotation: a private_key_jwt client with a jwks_uri rotates its
// key; its next assertion, under the new kid, is accepted once the keys
// were fetched again.
func TestJWKSURIRotation(t *testing.T) {
	old, rotated := cibatest.ClientKey(t, "es1"), cibatest.ClientKey(t, "es-rotated")
	srv := cibatest.StartJWKS(t, cibatest.JWKSJSON(t, old))
	h := newHarness(t, func(c *Config) {
		rk, err := clients.NewRemoteKeys(clients.RemoteKeysConfig{URL: srv.URL(), Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		c.Clients = append(c.Clients, &clients.Client{ID: "remote", AuthMethod: clients.AuthPrivateKeyJWT, Keys: rk, UpstreamSecret: "x"})
	})
	sign := func(k cibatest.Key) string { return k.Sign(t, jose.ES256, "", h.caAssertionClaims("remote")) }
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(old)))
	srv.Set(http.StatusOK, cibatest.JWKSJSON(t, rotated))
	h.clock.Advance(clients.DefaultJWKSMinRefetch)
	cibatest.AuthReqID(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(rotated)))
	if n := srv.Fetches(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// The old key is gone from the set: refused (401), and an unknown kid
	// right after does not fetch again.
	cibatest.WantOAuthError(t, h.caPostAssertion(DefaultEndpoint, hForm(), sign(old)), 401, oauth.CodeInvalidClient)
	if n := srv.Fetches(); n != 2 {
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
	cibatest.WantOAuthError(t, h2.caPostAssertion(DefaultEndpoint, hForm(), old.Sign(t, jose.ES256, "", h2.caAssertionClaims("remote"))), 401, oauth.CodeInvalidClient)
}
