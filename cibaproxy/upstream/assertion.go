package upstream

import (
	"errors"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/go-jose/go-jose/v4/jwt"
)

// clientAssertionTTL is how long a client assertion the proxy signs lives.
const clientAssertionTTL = 60 * time.Second

// clientAssertion signs the private_key_jwt assertion of client at the
// token endpoint aud (as the upstream publishes it), at now (RFC 7523
// §3, OpenID Connect Core §9): iss and sub the client id, a random jti of
// 128 bits, exp a minute after iat; header alg and kid of the client's
// upstream key.
func clientAssertion(client *clients.Client, aud string, now time.Time) (string, error) {
	key := client.UpstreamKey
	if key == nil {
		return "", errors.New("the client has no upstream_key")
	}
	signer, err := key.NewSigner("JWT")
	if err != nil {
		return "", err
	}
	jti, err := random.Token(16)
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   client.ID,
		Subject:  client.ID,
		Audience: jwt.Audience{aud},
		ID:       jti,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(clientAssertionTTL)),
	}).Serialize()
}
