// Package storetest is the conformance suite of the store engines: what the
// core counts on from every store.Store, whatever keeps its data. An
// engine's tests run it against the engine:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Engine{
//			Open: func(t *testing.T, now func() time.Time) store.Store { ... },
//		})
//	}
//
// Each subtest opens a store of its own, and they run in parallel. The
// suite drives time by hand: the records it writes carry times of a Clock,
// which is also the clock the engine is opened with.
package storetest

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The kinds of the outbox items the suite queues, registered once per
// process with codes no kind of the product uses.
var (
	KindA = store.RegisterKind('T', "storetest-a")
	KindB = store.RegisterKind('U', "storetest-b")
)

// Engine is what the suite needs of an engine.
type Engine struct {
	// Open returns a new store that holds nothing and shares nothing with
	// the stores of other calls (subtests call it in parallel). now is the
	// clock the store reads, for instance for its TTLs. The store is to be
	// closed at the end of the test (t.Cleanup); the suite may close it
	// before, so Close must bear a second call.
	Open func(t *testing.T, now func() time.Time) store.Store

	// Reopen, when set, returns a store on the data of s, which the suite
	// has closed: the process restarted (the same directory opened again,
	// a new client of the same server). Without it the persistence
	// subtests are skipped.
	Reopen func(t *testing.T, s store.Store, now func() time.Time) store.Store

	// Share, when set, returns another store on the data of s while s
	// stays open: a second process sharing the store. Writes through one
	// are then read through the other, and the concurrent subtests race
	// through both. Engines a single process opens leave it nil.
	Share func(t *testing.T, s store.Store) store.Store

	// VoidsClaims says that Reopen voids the claims of polls minting tokens
	// (Claim and ClaimUntil): an engine that one process opens knows that
	// no claim it finds at open belongs to a live poll. An engine shared
	// by live processes keeps them.
	VoidsClaims bool
}

// Run runs the suite against the engine.
func Run(t *testing.T, e Engine) {
	if e.Open == nil {
		t.Fatal("storetest: Engine.Open is nil")
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *fixture)
	}{
		{"CreateGet", testCreateGet},
		{"CreateOutbound", testCreateOutbound},
		{"UserLimitRefuses", testUserLimitRefuses},
		{"UserLimitReplacesOldest", testUserLimitReplacesOldest},
		{"UserLimitCountAs", testUserLimitCountAs},
		{"Update", testUpdate},
		{"UpdateQueue", testUpdateQueue},
		{"DecideClaimCommit", testDecideClaimCommit},
		{"ExpiryAndSweep", testExpiryAndSweep},
		{"KeptThroughGrace", testKeptThroughGrace},
		{"Links", testLinks},
		{"OutboxEnqueue", testOutboxEnqueue},
		{"OutboxDueItems", testOutboxDueItems},
		{"OutboxLeaseRetry", testOutboxLeaseRetry},
		{"OutboxDeleteCountScan", testOutboxDeleteCountScan},
		{"Settings", testSettings},
		{"SettingOrCreate", testSettingOrCreate},
		{"ReplayCache", testReplayCache},
		{"PeekPending", testPeekPending},
		{"Closed", testClosed},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCreates", testConcurrentCreates},
		{"ExactlyOnceDecision", testExactlyOnceDecision},
		{"ExactlyOnceClaim", testExactlyOnceClaim},
		{"ConcurrentUserLimit", testConcurrentUserLimit},
		{"ConcurrentSweeps", testConcurrentSweeps},
		{"ConcurrentSettings", testConcurrentSettings},
		{"ConcurrentRemember", testConcurrentRemember},
		{"Persistence", testPersistence},
		{"SharedStore", testSharedStore},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newFixture(t, e))
		})
	}
}

// Start is the time a Clock starts at.
var Start = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Clock is a clock tests set by hand; it is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at Start.
func NewClock() *Clock { return &Clock{t: Start} }

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

// fixture is one subtest's store and clock.
type fixture struct {
	t     *testing.T
	e     Engine
	clock *Clock
	ctx   context.Context
	s     store.Store
	peer  store.Store // from Engine.Share, made on first use
}

func newFixture(t *testing.T, e Engine) *fixture {
	clock := NewClock()
	s := e.Open(t, clock.Now)
	if s == nil {
		t.Fatal("Engine.Open returned nil")
	}
	return &fixture{t: t, e: e, clock: clock, ctx: t.Context(), s: s}
}

// handles returns the stores concurrent callers go through: the store,
// and a second one on its data when the engine shares.
func (f *fixture) handles() []store.Store {
	if f.e.Share == nil {
		return []store.Store{f.s}
	}
	if f.peer == nil {
		f.peer = f.e.Share(f.t, f.s)
	}
	return []store.Store{f.s, f.peer}
}

// request returns a pending request of the user with this subject (none
// when empty) made now, expiring after ttl.
func request(now time.Time, subject string, ttl time.Duration) *store.AuthRequest {
	name := subject
	if name == "" {
		name = "nobody"
	}
	return &store.AuthRequest{
		ClientID: "client-1",
		User:     store.User{Username: name, Email: name + "@example.com", Subject: subject},
		Scopes:   []string{"openid"},
		Created:  now,
		Expires:  now.Add(ttl),
		Interval: 5 * time.Second,
		Status:   store.StatusPending,
	}
}

// item returns an outbox item of the request under key, due at next.
func item(kind store.Kind, key store.RequestKey, payload string, next time.Time) *store.OutboxItem {
	return &store.OutboxItem{
		ID:       store.ItemID{Kind: kind, Request: key},
		Sender:   "sender-1",
		Payload:  []byte(payload),
		NotAfter: next.Add(time.Hour),
		Next:     next,
	}
}

// create stores r under the key of name, failing the test on an error.
func (f *fixture) create(name string, r *store.AuthRequest, out *store.Outbound, limit store.UserLimit) store.RequestKey {
	f.t.Helper()
	key := store.KeyOf(name)
	if err := f.s.Create(f.ctx, key, r, out, limit); err != nil {
		f.t.Fatalf("Create(%s): %v", name, err)
	}
	return key
}

// get returns the request under key, failing the test if there is none.
func (f *fixture) get(key store.RequestKey) *store.AuthRequest {
	f.t.Helper()
	r, err := f.s.Get(f.ctx, key)
	if err != nil {
		f.t.Fatalf("Get(%s): %v", key.Short(), err)
	}
	return r
}

// setStatus writes the status of the request under key.
func (f *fixture) setStatus(key store.RequestKey, st store.Status) {
	f.t.Helper()
	_, err := f.s.Update(f.ctx, key, func(r *store.AuthRequest) error {
		r.Status = st
		return nil
	})
	if err != nil {
		f.t.Fatalf("Update(%s) to %v: %v", key.Short(), st, err)
	}
}

// pending checks PendingCount against total and UserPending against users.
func (f *fixture) pending(total int64, users map[string]int64) {
	f.t.Helper()
	checkPending(f.ctx, f.t, f.s, total, users)
}

func checkPending(ctx context.Context, t *testing.T, s store.Store, total int64, users map[string]int64) {
	t.Helper()
	if n, err := s.PendingCount(ctx); err != nil || n != total {
		t.Errorf("PendingCount = %d, %v; want %d", n, err, total)
	}
	for subject, want := range users {
		if n, err := s.UserPending(ctx, subject); err != nil || n != want {
			t.Errorf("UserPending(%q) = %d, %v; want %d", subject, n, err, want)
		}
	}
}

// items returns the queued items by ID, failing on an ID seen twice.
func (f *fixture) items() map[store.ItemID]*store.OutboxItem {
	f.t.Helper()
	return scanItems(f.ctx, f.t, f.s)
}

func scanItems(ctx context.Context, t *testing.T, s store.Store) map[store.ItemID]*store.OutboxItem {
	t.Helper()
	out := map[store.ItemID]*store.OutboxItem{}
	err := s.ScanOutbox(ctx, func(it *store.OutboxItem) bool {
		if _, dup := out[it.ID]; dup {
			t.Errorf("ScanOutbox passed item %v of %s twice", it.ID.Kind, it.ID.Request.Short())
		}
		out[it.ID] = it
		return true
	})
	if err != nil {
		t.Fatalf("ScanOutbox: %v", err)
	}
	return out
}

// due calls DueItems, failing the test on an error.
func (f *fixture) due(now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time) {
	f.t.Helper()
	items, next, err := f.s.DueItems(f.ctx, now, limit, filter)
	if err != nil {
		f.t.Fatalf("DueItems: %v", err)
	}
	return items, next
}

// ids returns the IDs of items, in order.
func ids(items []*store.OutboxItem) []store.ItemID {
	out := make([]store.ItemID, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

// normTime drops what Equal ignores: the location and monotonic reading.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

func normStrings(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	return ss
}

func normBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// normRequest returns a copy of r whose times and empty lists compare
// with reflect.DeepEqual.
func normRequest(r *store.AuthRequest) store.AuthRequest {
	c := *r
	c.Scopes, c.ACRValues, c.AMR = normStrings(c.Scopes), normStrings(c.ACRValues), normStrings(c.AMR)
	c.Ping = normBytes(c.Ping)
	c.Created, c.Expires, c.Decided, c.ClaimUntil = normTime(c.Created), normTime(c.Expires), normTime(c.Decided), normTime(c.ClaimUntil)
	return c
}

// sameRequest reports a difference between got and want.
func sameRequest(t *testing.T, what string, got, want *store.AuthRequest) {
	t.Helper()
	if g, w := normRequest(got), normRequest(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

func normItem(it *store.OutboxItem) store.OutboxItem {
	c := *it
	c.Payload = normBytes(c.Payload)
	c.NotAfter, c.Next, c.LeaseUntil = normTime(c.NotAfter), normTime(c.Next), normTime(c.LeaseUntil)
	return c
}

// sameItem reports a difference between got and want.
func sameItem(t *testing.T, what string, got, want *store.OutboxItem) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: no item, want %+v", what, normItem(want))
		return
	}
	if g, w := normItem(got), normItem(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
}

// race runs fn(i) for i < n in as many goroutines, spread over the
// handles, released at once, and waits for them.
func (f *fixture) race(n int, fn func(s store.Store, i int)) {
	hs := f.handles()
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	for i := range n {
		s := hs[i%len(hs)]
		wg.Go(func() {
			ready.Done()
			<-start
			fn(s, i)
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
}
