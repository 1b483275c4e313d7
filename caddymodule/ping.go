package caddymodule

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

// provisionPing sets up the ping notifications of the configuration.
// Notifications are not sent by this release: ping clients poll.
func (h *Handler) provisionPing(ctx caddy.Context, backend *cibaproxy.Backend, cfg *cibaproxy.Config) error {
	return nil
}
