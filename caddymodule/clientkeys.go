package caddymodule

import (
	"errors"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

// clientKeys loads a client's public keys (jwks file or jwks_uri).
func (h *Handler) clientKeys(c *Client) (cibaproxy.ClientKeys, error) {
	if c.JWKS != "" || c.JWKSURI != "" {
		return nil, errors.New("jwks and jwks_uri are not supported by this release")
	}
	return nil, nil
}
