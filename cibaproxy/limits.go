package cibaproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Limits bounds the use of the backchannel authentication endpoint, against
// e-mail bombing (anyone who knows a login hint can start a request) and
// user enumeration, and the guessing of client secrets at both endpoints.
// Zero values turn a limit off.
type Limits struct {
	// ClientRate is the most requests one client may make in any 60 s.
	ClientRate int
	// IPRate is the most requests from one client IP in any 60 s.
	IPRate int
	// AuthFailures is the most failed client authentications from one
	// client IP in any 60 s, at the backchannel and token endpoints
	// together; a client id may fail AuthFailuresClientFactor times as
	// often, from all addresses together.
	AuthFailures int
	// UserPending is the most undecided requests one user may have.
	UserPending int
	// UserPendingReplace makes a request beyond UserPending replace the
	// user's oldest undecided one instead of being refused.
	UserPendingReplace bool
	// UserMail is the most requests one user may be sent (a mail each, or
	// a message of another authenticator) in any UserMailWindow, replaced
	// ones included.
	UserMail int
	// HideUnknownUsers answers an unknown login hint like a known one; the
	// request expires without a mail, so hints cannot be enumerated.
	HideUnknownUsers bool
}

func (l *Limits) validate() error {
	var errs []error
	for _, v := range []struct {
		name string
		n    int
	}{{"client_rate", l.ClientRate}, {"ip_rate", l.IPRate}, {"auth_failures", l.AuthFailures},
		{"user_pending", l.UserPending}, {"user_mail", l.UserMail}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("limits: %s must not be negative", v.name))
		}
	}
	return errors.Join(errs...)
}

// Default limits.
const (
	DefaultClientRate   = 600
	DefaultIPRate       = 300
	DefaultAuthFailures = 20
	DefaultUserPending  = 20
	DefaultUserMail     = 10
)

// AuthFailuresClientFactor is how many times AuthFailures one client id
// may fail in any 60 s, from every address together.
const AuthFailuresClientFactor = 10

// RateWindow is the window of the rate limits but user_mail.
const RateWindow = time.Minute

// UserMailWindow is the window of the user_mail limit.
const UserMailWindow = time.Hour

// RateLimiter allows at most N events per key in any RateWindow, bursts up
// to N included: a sliding-window log, one ring of N timestamps per key, so
// the bound is exact (a token bucket would allow 2N in some 60 s). Keys idle
// for a window are forgotten.
type RateLimiter struct {
	n      int
	mu     sync.Mutex
	keys   map[string]*rateRing
	swept  time.Time
	window time.Duration
}

type rateRing struct {
	at   []time.Time // up to n timestamps, oldest at head once full
	head int
	last time.Time
}

// NewRateLimiter returns a limiter of n events per key per RateWindow.
func NewRateLimiter(n int) *RateLimiter { return newRateLimiter(n, RateWindow) }

// newRateLimiter returns a limiter of n events per key per window.
func newRateLimiter(n int, window time.Duration) *RateLimiter {
	return &RateLimiter{n: n, keys: make(map[string]*rateRing), window: window}
}

// Allow records an event for key at now and reports whether it is within
// the limit; if not, retryAfter says when the next event would be.
func (l *RateLimiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil || l.n <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	r := l.keys[key]
	if r == nil {
		r = &rateRing{at: make([]time.Time, 0, min(l.n, 16))}
		l.keys[key] = r
	}
	r.last = now
	if len(r.at) < l.n {
		r.at = append(r.at, now)
		return true, 0
	}
	oldest := r.at[r.head]
	if wait := oldest.Add(l.window).Sub(now); wait > 0 {
		return false, wait
	}
	r.at[r.head] = now
	r.head = (r.head + 1) % l.n
	return true, 0
}

// Check reports, recording nothing, whether an event for key at now would
// be within the limit; if not, retryAfter says when it would be.
func (l *RateLimiter) Check(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil || l.n <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.keys[key]
	if r == nil || len(r.at) < l.n {
		return true, 0
	}
	if wait := r.at[r.head].Add(l.window).Sub(now); wait > 0 {
		return false, wait
	}
	return true, 0
}

// sweep forgets keys idle for a whole window, at most once a window.
func (l *RateLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < l.window {
		return
	}
	l.swept = now
	for k, r := range l.keys {
		if now.Sub(r.last) >= l.window {
			delete(l.keys, k)
		}
	}
}

// Len returns the number of keys tracked.
func (l *RateLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// limiters are the rate limits of a site's backchannel endpoint; nil is
// off.
type limiters struct {
	ip       limiter
	client   limiter
	userMail limiter
}

// limiter is one rate limit: n events per key per window, counted in this
// process (memoryLimit) or by the store, exactly across every process on it
// (storeLimit).
type limiter interface {
	Allow(ctx context.Context, key string, now time.Time) (ok bool, retryAfter time.Duration, err error)
}

// memoryLimit is a RateLimiter as a limiter.
type memoryLimit struct{ *RateLimiter }

func (m memoryLimit) Allow(_ context.Context, key string, now time.Time) (bool, time.Duration, error) {
	ok, wait := m.RateLimiter.Allow(key, now)
	return ok, wait, nil
}

// storeLimit is a limit the store counts (store.Rates).
type storeLimit struct {
	rates  store.Rates
	name   string
	n      int
	window time.Duration
}

func (s storeLimit) Allow(ctx context.Context, key string, now time.Time) (bool, time.Duration, error) {
	return s.rates.Allow(ctx, s.name, key, s.n, s.window, now)
}
