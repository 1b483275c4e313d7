package cibaproxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// SweepInterval is how often expired requests stop being counted as pending.
const SweepInterval = 10 * time.Second

// Backend is what every site on one store shares, and what outlives a
// configuration reload: the store, the polling state of its requests, the
// outbox worker that delivers its mails and notifications, the rate
// limiters, and the sweeper that keeps the pending count. The Caddy module
// keeps one Backend per store.
type Backend struct {
	Store store.Store
	// Polls keeps the polling state of slow_down in memory, for a store
	// that does not keep it itself (store.Poller).
	Polls  *PollTracker
	Outbox *outbox.Worker

	log      *zap.Logger
	now      func() time.Time
	limitMu  sync.Mutex
	limiters map[string]*RateLimiter
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// NewBackend wraps an open store and starts its outbox worker and sweeper.
// now is the clock (nil means time.Now).
func NewBackend(s store.Store, logger *zap.Logger, now func() time.Time) *Backend {
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	b := &Backend{
		Store:  s,
		Polls:  NewPollTracker(),
		Outbox: outbox.New(s, logger, now),
		log:    logger,
		now:    now,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go b.sweepLoop()
	return b
}

// poller returns how the polls of the store are timed: by the store,
// when it keeps the timing itself (shared by every process on it), else
// in Polls.
func (b *Backend) poller() poller {
	if p, ok := b.Store.(store.Poller); ok {
		return sharedPolls{p}
	}
	return &memoryPolls{store: b.Store, tracker: b.Polls}
}

// Limiter returns the rate limiter named name allowing n events per key per
// RateWindow, shared by every configuration on this backend; nil when n is
// 0 (off). A new n starts a new count.
func (b *Backend) Limiter(name string, n int) *RateLimiter {
	return b.limiter(name, n, RateWindow)
}

// limiter is Limiter with a window of its own.
func (b *Backend) limiter(name string, n int, window time.Duration) *RateLimiter {
	if n <= 0 {
		return nil
	}
	b.limitMu.Lock()
	defer b.limitMu.Unlock()
	if b.limiters == nil {
		b.limiters = make(map[string]*RateLimiter)
	}
	l := b.limiters[name]
	if l == nil || l.n != n || l.window != window {
		l = newRateLimiter(n, window)
		b.limiters[name] = l
	}
	return l
}

// limit returns the rate limit named name allowing n events per key per
// window (nil when n is 0: off): counted by the store when it counts them
// itself (shared by every process on it), else in this process (Limiter).
func (b *Backend) limit(name string, n int, window time.Duration) limiter {
	if n <= 0 {
		return nil
	}
	if r, ok := b.Store.(store.Rates); ok {
		return storeLimit{rates: r, name: name, n: n, window: window}
	}
	return memoryLimit{b.limiter(name, n, window)}
}

// Sweep stops counting the requests that expired by now.
func (b *Backend) Sweep(ctx context.Context) (int, error) {
	return b.Store.SweepExpired(ctx, b.now())
}

func (b *Backend) sweepLoop() {
	defer close(b.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if _, err := b.Sweep(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
			b.log.Warn("sweeping expired requests failed", zap.Error(err))
		}
		t.Reset(SweepInterval)
	}
}

// Close stops the sweeper and the outbox worker and closes the store.
func (b *Backend) Close() error {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
	})
	b.Outbox.Close()
	return b.Store.Close()
}
