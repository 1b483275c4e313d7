package store

import (
	"context"
	"time"
)

// The rules of slow_down (CIBA Core §11, RFC 8628 §3.5), which the
// engines that keep the polling state themselves (Poller) apply as the
// core's in-memory tracker does: a poll earlier than the last one plus the
// current interval (less PollTolerance of it) is answered slow_down, and
// raises the request's interval by SlowDownStep, up to MaxInterval; the
// first poll never is, unless it overlaps another poll of the request.
const (
	SlowDownStep  = 5 * time.Second
	MaxInterval   = 60 * time.Second
	PollTolerance = 0.10
)

// Reasons of a slow_down answer.
const (
	SlowDownEarly   = "early"   // polled before the interval passed
	SlowDownOverlap = "overlap" // overlapped another poll of the request
)

// PollState is what a poll learns of its request.
type PollState struct {
	ClientID string
	Status   Status
	Expires  time.Time
	// Interval is the request's starting interval.
	Interval time.Duration
	// SlowDown is why the poll is to be answered slow_down, "" when it is
	// not. It is decided only for a poll by the request's client of a
	// request pending or approved and unexpired.
	SlowDown string
	// Done, when set, is called once the poll is answered: it ends the
	// poll's overlap window (a poller that tells overlaps otherwise, by
	// the claim of a mint, leaves it nil).
	Done func()
}

// Poller is implemented by stores that keep the polling state of slow_down
// themselves, shared by every process on the store, so that a client
// polling through several replicas is timed as one.
type Poller interface {
	// Poll reads the request under key and records a poll of it by
	// clientID at now, in one step; ErrNotFound when there is none.
	Poll(ctx context.Context, key RequestKey, clientID string, now time.Time) (PollState, error)
	// SlowDown raises the request's interval as a slow_down answer does
	// (the proxy answers slow_down for reasons of its own too, an upstream
	// failing transiently).
	SlowDown(ctx context.Context, key RequestKey, now time.Time) error
}

// Rates is implemented by stores that count the rate limits themselves,
// exactly across every process on the store.
type Rates interface {
	// Allow records an event of the limit name for key at now and reports
	// whether it is within n events in any window; if not, retryAfter says
	// when the next one would be.
	Allow(ctx context.Context, name, key string, n int, window time.Duration, now time.Time) (ok bool, retryAfter time.Duration, err error)
	// Check reports, recording nothing, whether one more event would be
	// within every one of limits at now, in one step; if not, retryAfter
	// says when it would be.
	Check(ctx context.Context, now time.Time, limits ...RateCheck) (ok bool, retryAfter time.Duration, err error)
}

// RateCheck is one limit of a Rates.Check: the events of the limit Name
// for Key, at most N in any Window, as Allow counts them; an N of 0 or less
// limits nothing.
type RateCheck struct {
	Name, Key string
	N         int
	Window    time.Duration
}
