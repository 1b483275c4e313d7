// Command cibaproxy is Caddy with the ciba handler compiled in: what
// `xcaddy build --with github.com/cibaproxy/cibaproxy/caddymodule` builds.
// Run it as Caddy: `cibaproxy run --config Caddyfile`.
package main

import (
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The ciba handler.
	_ "github.com/cibaproxy/cibaproxy/caddymodule"
)

func main() {
	caddy.CustomBinaryName = "cibaproxy"
	caddycmd.Main()
}
