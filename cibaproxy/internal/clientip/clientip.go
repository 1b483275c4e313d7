// Package clientip tells the address a request came from.
package clientip

import (
	"net"
	"net/http"
)

// Of returns the client's address as fn (Caddy's client_ip, which honours
// trusted_proxies) says, else the peer's.
func Of(r *http.Request, fn func(*http.Request) string) string {
	if fn != nil {
		if ip := fn(r); ip != "" {
			return ip
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
