package cibaproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/clientip"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// clientAuth authenticates the clients of a site's backchannel and token
// endpoints behind the auth_failures limit (failures nil: off). A client IP,
// or a client id, that failed too often in the last RateWindow is refused
// with 429 before any authentication work: a locked-out key costs nothing,
// and a guess sent then cannot succeed. Only failures (invalid_client)
// count, at both endpoints together. A failure is counted once it is
// known, so requests checked at the same moment are all authenticated: a
// burst may pass the limit by the number of its requests in flight.
type clientAuth struct {
	clients  *clients.Registry
	failures *authFailures
	cfg      *Config
	// unavailable is the endpoint's answer when the store that counts the
	// failures cannot be read: the request is then not authenticated, so
	// that the answer tells nothing of its secret.
	unavailable func(cause error) error
}

// authenticate authenticates the client of a request (clients.Registry's
// Authenticate) behind the limit.
func (c *clientAuth) authenticate(r *http.Request, form url.Values, now time.Time) (*clients.Client, error) {
	if c.failures == nil {
		return c.clients.Authenticate(r, form)
	}
	ctx := r.Context()
	ip := rateKeyIP(clientip.Of(r, c.cfg.ClientIP))
	id := clientKey(clients.ClaimedID(r, form))
	ok, wait, err := c.failures.check(ctx, ip, id, now)
	if err != nil {
		return nil, c.unavailable(err)
	}
	if !ok {
		return nil, limitRefusal(c.cfg, "auth_failures", wait)
	}
	cl, err := c.clients.Authenticate(r, form)
	var e *oauth.Error
	if errors.As(err, &e) && e.Code == oauth.CodeInvalidClient {
		if ferr := c.failures.failed(ctx, ip, id, now); ferr != nil {
			// The answer stays invalid_client; while the store that lost
			// this count is down, the next check fails and nothing is
			// authenticated.
			c.cfg.Logger.Warn("counting a failed client authentication failed", zap.Error(ferr))
		}
	}
	return cl, err
}

// storeUnavailable is the backchannel endpoint's answer when the store
// that counts a limit is unreachable.
func storeUnavailable(cause error) error {
	return oauth.Unavailable("the request store is unavailable", 5, cause)
}

// clientKey is the auth_failures key of a claimed client id: a digest, so
// that an id of any length costs a key of one size ("" for none).
func clientKey(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

// authFailures counts the failed client authentications of a site: at most
// ip per client IP and client per client id in any RateWindow, counted by
// the store when it counts rates itself (shared by every process on it),
// else in this process.
type authFailures struct {
	ip, client int
	name       string
	rates      store.Rates
	byIP       *RateLimiter
	byClient   *RateLimiter
}

// authFailures returns the auth_failures limit named name: n failures per
// client IP and AuthFailuresClientFactor × n per client id in any
// RateWindow; nil when n is 0 (off).
func (b *Backend) authFailures(name string, n int) *authFailures {
	if n <= 0 {
		return nil
	}
	a := &authFailures{ip: n, client: n * AuthFailuresClientFactor, name: name}
	if r, ok := b.Store.(store.Rates); ok {
		a.rates = r
	} else {
		a.byIP, a.byClient = b.Limiter(name+" ip", a.ip), b.Limiter(name+" client", a.client)
	}
	return a
}

// check reports, counting nothing, whether the client IP and the client id
// ("" for none) are both below their limits; if not, retryAfter says when
// they would be.
func (a *authFailures) check(ctx context.Context, ip, client string, now time.Time) (ok bool, retryAfter time.Duration, err error) {
	clientN := a.client
	if client == "" {
		clientN = 0 // no client id to count
	}
	if a.rates != nil {
		// One step for both, one round trip.
		return a.rates.Check(ctx, now,
			store.RateCheck{Name: a.name + " ip", Key: ip, N: a.ip, Window: RateWindow},
			store.RateCheck{Name: a.name + " client", Key: client, N: clientN, Window: RateWindow})
	}
	ok, retryAfter = a.byIP.Check(ip, now)
	if clientN > 0 {
		okC, waitC := a.byClient.Check(client, now)
		ok, retryAfter = ok && okC, max(retryAfter, waitC)
	}
	return ok, retryAfter, nil
}

// failed counts a failed authentication from ip naming client ("" for
// none).
func (a *authFailures) failed(ctx context.Context, ip, client string, now time.Time) error {
	if a.rates == nil {
		a.byIP.Allow(ip, now)
		if client != "" {
			a.byClient.Allow(client, now)
		}
		return nil
	}
	if _, _, err := a.rates.Allow(ctx, a.name+" ip", ip, a.ip, RateWindow, now); err != nil || client == "" {
		return err
	}
	_, _, err := a.rates.Allow(ctx, a.name+" client", client, a.client, RateWindow, now)
	return err
}
