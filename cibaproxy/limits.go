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
// user enumeration. Zero values turn a limit off.
type Limits struct {
	// ClientRate is the most requests one client may make in any 60 s.
	ClientRate int
	// IPRate is the most requests from one client IP in any 60 s.
	IPRate int
	// UserPending is the most undecided requests one user may have.
	UserPending int
	// UserPendingReplace makes a request beyond UserPending replace the
	// user's oldest undecided one instead of being refused.
	UserPendingReplace bool
	// HideUnknownUsers answers an unknown login hint like a known one; the
	// request expires without a mail, so hints cannot be enumerated.
	HideUnknownUsers bool
}

func (l *Limits) validate() error {
	var errs []error
	for _, v := range []struct {
		name string
		n    int
	}{{"client_rate", l.ClientRate}, {"ip_rate", l.IPRate}, {"user_pending", l.UserPending}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("limits: %s must not be negative", v.name))
		}
	}
	return errors.Join(errs...)
}

// Default limits.
const (
	DefaultClientRate  = 600
	DefaultIPRate      = 300
	DefaultUserPending = 20
)

// RateWindow is the window of the rate limits.
const RateWindow = time.Minute

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
func NewRateLimiter(n int) *RateLimiter {
	return &RateLimiter{n: n, keys: make(map[string]*rateRing), window: RateWindow}
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
	ip     limiter
	client limiter
}

// limiter is one rate limit: n events per key per RateWindow, counted in
// this process (memoryLimit) or by the store, exactly across every process
// on it (storeLimit).
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
