package caddymodule

import (
	"errors"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

// clientKeys loads a client's public keys, for private_key_jwt client
// assertions and signed authentication requests: a JWK Set file (jwks),
// read now, so a missing or malformed file fails the configuration load,
// or a jwks_uri, fetched lazily on the first JWT to verify, cached, and
// fetched again on an unknown kid (the client rotated its key) at most
// every few seconds. A client with neither has no keys (nil).
func (h *Handler) clientKeys(c *Client) (cibaproxy.ClientKeys, error) {
	switch {
	case c.JWKS != "" && c.JWKSURI != "":
		return nil, errors.New("jwks and jwks_uri are mutually exclusive")
	case c.JWKS != "":
		k, err := cibaproxy.LoadStaticKeys(c.JWKS)
		if err != nil {
			return nil, err
		}
		return k, nil
	case c.JWKSURI != "":
		k, err := cibaproxy.NewRemoteKeys(cibaproxy.RemoteKeysConfig{URL: c.JWKSURI})
		if err != nil {
			return nil, err
		}
		return k, nil
	}
	return nil, nil
}
