package clients

import (
	"crypto/sha256"
	"testing"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

func TestValidateAuth(t *testing.T) {
	keys := staticKeys(t, cibatest.ClientKey(t, "es1"))
	secret := [][sha256.Size]byte{HashSecret("s")}
	for _, tc := range []struct {
		name string
		cl   Client
		want string // a substring of the error; "" for none
	}{
		{"secret client", Client{ID: "a", SecretHashes: secret}, ""},
		{"client_secret_basic", Client{ID: "a", AuthMethod: AuthClientSecretBasic, SecretHashes: secret}, ""},
		{"client_secret_post", Client{ID: "a", AuthMethod: AuthClientSecretPost, SecretHashes: secret}, ""},
		{"secret client without secret", Client{ID: "a"}, "secret"},
		{"unknown auth_method", Client{ID: "a", AuthMethod: "tls_client_auth", SecretHashes: secret}, "auth_method"},
		{"private_key_jwt", Client{ID: "a", AuthMethod: AuthPrivateKeyJWT, Keys: keys, UpstreamSecret: "u"}, ""},
		{"private_key_jwt without keys", Client{ID: "a", AuthMethod: AuthPrivateKeyJWT, UpstreamSecret: "u"}, "jwks"},
		{"private_key_jwt without upstream_secret", Client{ID: "a", AuthMethod: AuthPrivateKeyJWT, Keys: keys}, "upstream_secret"},
		{"signed requests", Client{ID: "a", SecretHashes: secret, Keys: keys, RequestSigningAlg: "ES256", RequireSignedRequests: true}, ""},
		{"keys only", Client{ID: "a", SecretHashes: secret, Keys: keys}, ""},
		{"request_signing_alg without keys", Client{ID: "a", SecretHashes: secret, RequestSigningAlg: "ES256"}, "jwks"},
		{"request_signing_alg none", Client{ID: "a", SecretHashes: secret, Keys: keys, RequestSigningAlg: "none"}, "asymmetric"},
		{"request_signing_alg HS256", Client{ID: "a", SecretHashes: secret, Keys: keys, RequestSigningAlg: "HS256"}, "asymmetric"},
		{"require_signed_requests without request_signing_alg", Client{ID: "a", SecretHashes: secret, Keys: keys, RequireSignedRequests: true}, "request_signing_alg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cl.validateAuth()
			cibatest.WantErr(t, err, tc.want)
		})
	}
}

// TestValidateSigning: the algorithms accepted for client assertions and
// signed requests are asymmetric, each client's request_signing_alg is
// among them, and require_signed_requests for every client needs every
// enabled client to sign. The clients are otherwise valid, so that each
// error is the signing rule's.
func TestValidateSigning(t *testing.T) {
	keys := staticKeys(t, cibatest.ClientKey(t, "es1"))
	secret := [][sha256.Size]byte{HashSecret("s")}
	plain := func(id string) *Client { return &Client{ID: id, SecretHashes: secret} }
	signer := func(id, alg string) *Client {
		return &Client{ID: id, SecretHashes: secret, Keys: keys, RequestSigningAlg: alg}
	}
	off := plain("off")
	off.Disabled = true
	for _, tc := range []struct {
		name    string
		clients []*Client
		algs    []string
		signed  bool // require_signed_requests for every client
		want    string
	}{
		{"defaults", []*Client{signer("a", "ES256"), signer("b", "PS256"), plain("c")}, nil, false, ""},
		{"configured", []*Client{signer("a", "RS256")}, []string{"RS256"}, false, ""},
		{"alg not configured", []*Client{signer("a", "RS256")}, nil, false, `client "a": request_signing_alg RS256`},
		{"HS256 configured", []*Client{plain("a")}, []string{"ES256", "HS256"}, false, "HS256"},
		{"none configured", []*Client{plain("a")}, []string{"none"}, false, "none"},
		{"required for all, all sign", []*Client{signer("a", "ES256")}, nil, true, ""},
		{"required for all, a disabled client does not sign", []*Client{signer("a", "ES256"), off}, nil, true, ""},
		{"required for all, one does not sign", []*Client{signer("a", "ES256"), plain("b")}, nil, true, `client "b": require_signed_requests`},
		{"no client", nil, nil, false, "at least one client"},
		{"a client twice", []*Client{plain("a"), plain("a")}, nil, false, `client "a" is defined twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := make([]Client, len(tc.clients))
			for i, c := range tc.clients {
				before[i] = *c
			}
			err := Validate(tc.clients, tc.algs, tc.signed)
			cibatest.WantErr(t, err, tc.want)
			for i, c := range tc.clients {
				if c.Mode != before[i].Mode || len(c.Scopes) != len(before[i].Scopes) {
					t.Errorf("Validate changed client %q: %+v", c.ID, c)
				}
			}
		})
	}
}

func TestAsymmetricAlg(t *testing.T) {
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"} {
		if !AsymmetricAlg(alg) {
			t.Errorf("%s refused", alg)
		}
	}
	for _, alg := range []string{"none", "HS256", "HS384", "HS512", "", "es256", "RSA-OAEP"} {
		if AsymmetricAlg(alg) {
			t.Errorf("%q accepted", alg)
		}
	}
}
