package cibaproxy

import (
	"context"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// SlowDownStep is what a slow_down adds to a request's interval
// (CIBA Core §11, RFC 8628 §3.5).
const SlowDownStep = store.SlowDownStep

// pollTolerance lets a poll come this fraction of the interval early
// without being answered slow_down (client timers and network jitter).
const pollTolerance = store.PollTolerance

// poller times the polls of the token endpoint: the store's own
// (store.Poller: the Redis store, shared by every replica), or the
// backend's memory (memoryPolls, for a store one process opens).
type poller interface {
	// Poll reads the request under key and records a poll of it by
	// clientID at now (store.Poller).
	Poll(ctx context.Context, key store.RequestKey, clientID string, now time.Time) (store.PollState, error)
	// SlowDown raises the request's interval as a slow_down does.
	SlowDown(ctx context.Context, key store.RequestKey, now time.Time) error
	// Forget drops the timing of a request that is over.
	Forget(key store.RequestKey)
}

// sharedPolls is the poller of a store that keeps the timing itself: it
// forgets with the request.
type sharedPolls struct{ store.Poller }

func (sharedPolls) Forget(store.RequestKey) {}

// memoryPolls times the polls of a store without a Poller: the request is
// read from the store (or from its memory of pending requests), the
// timing kept in a PollTracker.
type memoryPolls struct {
	store   store.Requests
	tracker *PollTracker
}

// Poll implements poller.
func (m *memoryPolls) Poll(ctx context.Context, key store.RequestKey, clientID string, now time.Time) (store.PollState, error) {
	var st store.PollState
	if p, ok := m.store.(store.PendingPeeker); ok {
		if ps, ok := p.PeekPending(key, now); ok {
			st = store.PollState{ClientID: ps.ClientID, Status: store.StatusPending, Expires: ps.Expires, Interval: ps.Interval}
		}
	}
	if st.Status == 0 {
		r, err := m.store.Get(ctx, key)
		if err != nil {
			return st, err
		}
		st = store.PollState{ClientID: r.ClientID, Status: r.Status, Expires: r.Expires, Interval: r.Interval}
	}
	if st.ClientID == clientID && (st.Status == store.StatusPending || st.Status == store.StatusApproved) && now.Before(st.Expires) {
		st.SlowDown, st.Done = m.tracker.PollWhy(key, now, st.Interval, st.Expires)
	}
	return st, nil
}

// SlowDown implements poller.
func (m *memoryPolls) SlowDown(_ context.Context, key store.RequestKey, now time.Time) error {
	m.tracker.SlowDown(key, now)
	return nil
}

// Forget implements poller.
func (m *memoryPolls) Forget(key store.RequestKey) { m.tracker.Forget(key) }

// PollTracker keeps, per request, the current polling interval and the time
// of the owning client's last poll, and enforces these rules (CIBA Core
// §7.3 and §11, as the README's "slow_down, precisely" states them):
//
//   - A poll earlier than last + interval (10 % tolerance) gets slow_down
//     and raises the request's interval by 5 s, capped at 60 s.
//   - The first poll is never slow_down, unless it overlaps another poll of
//     the same request.
//   - A poll that overlaps another poll of the same request gets slow_down
//     (CIBA Core §7.3: clients must not send overlapping requests).
//
// Only authenticated polls by the owning client of a known request reach
// the tracker, so others change nothing. The state lives in memory: what
// must survive a restart is the request and its decision, not its timing.
// It is shared by every handler on one store.
type PollTracker struct {
	shards [pollShards]pollShard
}

const pollShards = 64

type pollShard struct {
	mu      sync.Mutex
	entries map[store.RequestKey]*pollEntry
	swept   time.Time
}

type pollEntry struct {
	last     time.Time     // the last poll; zero before the first
	interval time.Duration // current interval
	inFlight int           // polls being answered now
	expires  time.Time     // when the entry may be forgotten
}

// NewPollTracker returns an empty tracker.
func NewPollTracker() *PollTracker {
	t := new(PollTracker)
	for i := range t.shards {
		t.shards[i].entries = make(map[store.RequestKey]*pollEntry)
	}
	return t
}

// Poll records a poll of the request key at now. base is the request's
// starting interval and expires its expiry. It reports whether the poll
// must be answered slow_down; if not, done must be called once the poll is
// answered (it ends the poll's overlap window).
func (t *PollTracker) Poll(key store.RequestKey, now time.Time, base time.Duration, expires time.Time) (slowDown bool, done func()) {
	reason, done := t.PollWhy(key, now, base, expires)
	return reason != "", done
}

// PollWhy is Poll, saying why a poll gets slow_down: store.SlowDownEarly or
// store.SlowDownOverlap ("" when it does not).
func (t *PollTracker) PollWhy(key store.RequestKey, now time.Time, base time.Duration, expires time.Time) (slowDown string, done func()) {
	sh := &t.shards[key[0]%pollShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweep(now)
	e := sh.entries[key]
	if e == nil {
		e = &pollEntry{interval: base, expires: expires}
		sh.entries[key] = e
	}
	early := !e.last.IsZero() &&
		now.Before(e.last.Add(e.interval-time.Duration(pollTolerance*float64(e.interval))))
	e.last = now
	if e.inFlight > 0 || early {
		e.interval = min(e.interval+SlowDownStep, MaxInterval)
		if e.inFlight > 0 {
			return store.SlowDownOverlap, nil
		}
		return store.SlowDownEarly, nil
	}
	e.inFlight++
	ended := false
	return "", func() {
		sh.mu.Lock()
		if !ended {
			ended = true
			e.inFlight--
		}
		sh.mu.Unlock()
	}
}

// SlowDown raises the interval of a request as a slow_down answer does; the
// proxy answers slow_down for reasons of its own too (an upstream failing
// transiently), and the client then waits longer, as told.
func (t *PollTracker) SlowDown(key store.RequestKey, now time.Time) {
	sh := &t.shards[key[0]%pollShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.entries[key]; e != nil {
		e.interval = min(e.interval+SlowDownStep, MaxInterval)
	}
}

// Interval returns the current interval of a request, and whether it was
// polled at all.
func (t *PollTracker) Interval(key store.RequestKey) (time.Duration, bool) {
	sh := &t.shards[key[0]%pollShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.entries[key]; e != nil {
		return e.interval, true
	}
	return 0, false
}

// Forget drops the state of a request that is over.
func (t *PollTracker) Forget(key store.RequestKey) {
	sh := &t.shards[key[0]%pollShards]
	sh.mu.Lock()
	delete(sh.entries, key)
	sh.mu.Unlock()
}

// Len returns the number of requests tracked.
func (t *PollTracker) Len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

// sweep drops entries of expired requests, at most once a minute per shard,
// so the table stays as large as the set of live polled requests.
func (sh *pollShard) sweep(now time.Time) {
	if now.Sub(sh.swept) < time.Minute {
		return
	}
	sh.swept = now
	for k, e := range sh.entries {
		if e.inFlight == 0 && now.After(e.expires) {
			delete(sh.entries, k)
		}
	}
}
