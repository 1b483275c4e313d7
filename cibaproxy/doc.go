// Package cibaproxy adds OpenID Connect CIBA (Client Initiated Backchannel
// Authentication Core 1.0) in front of an OpenID provider that lacks it.
//
// A Server answers the backchannel authentication endpoint (CIBA Core §7)
// and the CIBA grant of the upstream's token endpoint (§10.1, §11), and
// serves the upstream's discovery document with the CIBA metadata added.
// Requests live in a Store (Badger on disk by default). Three small
// interfaces are the seams to the rest of the flow: an Authenticator
// reaches the user, who decides through Server.Decide, and a Minter mints
// the tokens of an approved request at the upstream.
//
// The package imports nothing of Caddy; the caddymodule package wraps it as
// the http.handlers.ciba module.
package cibaproxy
