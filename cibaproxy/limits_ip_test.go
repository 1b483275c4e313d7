package cibaproxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestLimitIPRateIPv6Prefix: ip_rate counts IPv6 addresses by their /64 (the
// README's "Abuse limits"), through the Server: two addresses of one /64
// share one count, an address of the next /64 has its own. An IPv4 address
// counts as itself, however it is written.
func TestLimitIPRateIPv6Prefix(t *testing.T) {
	for _, tc := range []struct {
		name string
		ip   func(*http.Request) string // Config.ClientIP; nil: the peer's address
	}{
		{"peer address", nil},
		{"client_ip", func(r *http.Request) string { return r.Header.Get("X-Test-Client-IP") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMXRig(t, limitsOption(Limits{IPRate: 2}), func(c *Config) { c.ClientIP = tc.ip })
			send := func(ip string) *httptest.ResponseRecorder {
				req := mxRequest(DefaultEndpoint, "cc", "cc-secret", hForm())
				req.RemoteAddr = "[" + ip + "]:4711"
				if tc.ip != nil {
					req.RemoteAddr = "192.0.2.1:4711" // a trusted proxy
					req.Header.Set("X-Test-Client-IP", ip)
				}
				return r.serve(req)
			}
			ok := func(ip string) {
				t.Helper()
				if rec := send(ip); rec.Code != http.StatusOK {
					t.Fatalf("from %s: %d %s", ip, rec.Code, rec.Body)
				}
			}
			// One /64: two addresses, then a third is refused.
			ok("2001:db8:1:2::1")
			ok("2001:db8:1:2:ffff:ffff:ffff:fffe")
			limRetryAfter(t, send("2001:db8:1:2:abcd::9"))
			// The next /64 and another /48 count apart.
			ok("2001:db8:1:3::1")
			ok("2001:db8:2:2::1")
			ok("2001:db8:1:3::2")
			limRetryAfter(t, send("2001:db8:1:3:ffff::"))
			// IPv4, plain and IPv4-mapped: one address, one count.
			ok("198.51.100.7")
			ok("::ffff:198.51.100.7")
			limRetryAfter(t, send("198.51.100.7"))
			ok("198.51.100.8")

			r.clock.Advance(time.Minute)
			ok("2001:db8:1:2::1")
		})
	}
}
