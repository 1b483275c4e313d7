package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// unmarshalAuthenticator parses an `authenticator <name> { … }` block.
func (h *Handler) unmarshalAuthenticator(d *caddyfile.Dispenser) error {
	return d.Err("authenticator blocks are not supported by this release; use the email block")
}
