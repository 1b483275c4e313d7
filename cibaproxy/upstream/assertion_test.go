package upstream

import (
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestClientAssertion: the assertion the proxy signs for a client at
// Hydra's token endpoint (private_key_jwt) carries alg and the key's
// thumbprint as kid, iss = sub = the client id, aud = the published token
// endpoint, a fresh 128-bit jti, iat now and exp a minute later; it
// verifies with the public half of the client's upstream_key, for an EC
// (ES256) and an RSA (RS256) key.
func TestClientAssertion(t *testing.T) {
	const aud = "https://idp.example.com/oauth2/token"
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name   string
		signer crypto.Signer
		alg    jose.SignatureAlgorithm
	}{
		{"EC P-256", cibatest.ECKey(t), jose.ES256},
		{"RSA 2048", cibatest.RSAKey(t), jose.RS256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, want := cibatest.PEMKeyFile(t, tc.signer)
			key, err := clients.LoadUpstreamKey(path)
			if err != nil {
				t.Fatal(err)
			}
			if key.Alg != tc.alg || key.ID != want.ID {
				t.Fatalf("upstream_key alg %s kid %s, want %s %s", key.Alg, key.ID, tc.alg, want.ID)
			}
			client := &clients.Client{ID: "cc", UpstreamKey: key}
			jtis := map[string]bool{}
			for range 2 {
				tok, err := clientAssertion(client, aud, now)
				if err != nil {
					t.Fatal(err)
				}
				parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{tc.alg})
				if err != nil {
					t.Fatal(err)
				}
				hdr := parsed.Headers[0]
				if hdr.Algorithm != string(tc.alg) || hdr.KeyID != want.ID || hdr.ExtraHeaders["typ"] != "JWT" {
					t.Errorf("header alg %s kid %s typ %v, want %s %s JWT", hdr.Algorithm, hdr.KeyID, hdr.ExtraHeaders["typ"], tc.alg, want.ID)
				}
				var c jwt.Claims
				if err := parsed.Claims(tc.signer.Public(), &c); err != nil {
					t.Fatalf("does not verify with the upstream_key's public key: %v", err)
				}
				if c.Issuer != "cc" || c.Subject != "cc" || len(c.Audience) != 1 || c.Audience[0] != aud {
					t.Errorf("iss %q sub %q aud %q, want cc cc [%s]", c.Issuer, c.Subject, c.Audience, aud)
				}
				if !c.IssuedAt.Time().Equal(now) || !c.Expiry.Time().Equal(now.Add(time.Minute)) || c.NotBefore != nil {
					t.Errorf("iat %v exp %v nbf %v, want %v and a minute later", c.IssuedAt.Time(), c.Expiry.Time(), c.NotBefore, now)
				}
				if len(c.ID) < 22 || jtis[c.ID] {
					t.Errorf("jti %q: want 128 random bits, fresh each time", c.ID)
				}
				jtis[c.ID] = true
				// Another key does not verify it.
				if err := parsed.Claims(cibatest.ECKey(t).Public(), &c); err == nil {
					t.Error("verifies with another key")
				}
			}
		})
	}
	if _, err := clientAssertion(&clients.Client{ID: "cc"}, aud, now); err == nil {
		t.Error("signed an assertion for a client without an upstream_key")
	}
}

// TestHydraCheckClients: token_auth private_key_jwt needs every client's
// upstream_key (its upstream_secret then is not), the secret methods its
// upstream_secret; the error names the client.
func TestHydraCheckClients(t *testing.T) {
	path, _ := cibatest.PEMKeyFile(t, cibatest.ECKey(t))
	key, err := clients.LoadUpstreamKey(path)
	if err != nil {
		t.Fatal(err)
	}
	withKey := &clients.Client{ID: "keyed", UpstreamKey: key}
	withSecret := &clients.Client{ID: "secreted", UpstreamSecret: "s"}
	for _, tc := range []struct {
		auth string
		list []*clients.Client
		want string // "" accepted, else in the error
	}{
		{HydraAuthPrivateKeyJWT, []*clients.Client{withKey}, ""},
		{HydraAuthPrivateKeyJWT, []*clients.Client{withKey, withSecret}, `client "secreted": mint hydra token_auth private_key_jwt needs the client's upstream_key`},
		{HydraAuthBasic, []*clients.Client{withSecret}, ""},
		{"", []*clients.Client{withKey}, `client "keyed": mint hydra token_auth client_secret_basic needs the client's upstream_secret`},
		{HydraAuthPost, []*clients.Client{withSecret, withKey}, `client "keyed"`},
	} {
		m := newHydraMinterWith(t, func(c *HydraConfig) { c.TokenAuth = tc.auth })
		err := m.CheckClients(tc.list)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("token_auth %q: %v", tc.auth, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("token_auth %q: %v, want an error containing %q", tc.auth, err, tc.want)
		}
	}
}
