package cibatest

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultStart is the time a Clock made with a zero start shows.
var DefaultStart = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Clock is a fixed clock the test advances by hand. It is safe for
// concurrent use. Its Sleep advances it instead of waiting, so code that
// waits (a client between polls) runs at once while every party sharing
// the clock sees the time pass.
type Clock struct {
	mu      sync.Mutex
	t       time.Time
	sleeps  []time.Duration
	onSleep func(n int)
}

// NewClock returns a Clock showing start (DefaultStart if start is zero).
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = DefaultStart
	}
	return &Clock{t: start}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Sleep stands for a wait of d: it records d, advances the clock by d,
// runs the OnSleep hook with the number of this sleep (from 1) and returns
// ctx.Err(). Its signature is that of a context-aware sleep function.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
	n, hook := len(c.sleeps), c.onSleep
	c.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return ctx.Err()
}

// OnSleep sets a hook Sleep runs after the n-th sleep (from 1), once the
// clock has advanced: before whatever the sleep delayed. nil removes it.
func (c *Clock) OnSleep(hook func(n int)) {
	c.mu.Lock()
	c.onSleep = hook
	c.mu.Unlock()
}

// Sleeps returns the durations Sleep was called with, in order.
func (c *Clock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

// LiveClock is real time plus an offset the test advances: real timers and
// backoffs work as in production, and a deadline can still be made to pass
// at once. It is safe for concurrent use.
type LiveClock struct{ off atomic.Int64 }

// NewLiveClock returns a LiveClock at the real time (no offset yet).
func NewLiveClock() *LiveClock { return &LiveClock{} }

// Now returns time.Now() plus the offset.
func (c *LiveClock) Now() time.Time { return time.Now().Add(c.Offset()) }

// Advance adds d to the offset.
func (c *LiveClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// Offset returns how far the clock is ahead of real time.
func (c *LiveClock) Offset() time.Duration { return time.Duration(c.off.Load()) }
