package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
)

// The kinds of the test items: codes no product kind (nor the store's
// conformance suite) uses.
var (
	kindX = store.RegisterKind('x', "outboxtest-x")
	kindY = store.RegisterKind('y', "outboxtest-y")
)

func TestRetryDelay(t *testing.T) {
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		15 * time.Second, 15 * time.Second, 15 * time.Second}
	for n, w := range want {
		if got := retryDelay(n); got != w {
			t.Errorf("retryDelay(%d) = %v, want %v", n, got, w)
		}
	}
	for n := 0; n < 100; n++ {
		if d := retryDelay(n); d > MaxRetryDelay || d <= 0 {
			t.Errorf("retryDelay(%d) = %v", n, d)
		}
	}
	if MaxRetryDelay > 15*time.Second || ItemLease > 15*time.Second || DeliveryTimeout >= ItemLease {
		t.Errorf("timing constants: retry cap %v, lease %v, attempt %v", MaxRetryDelay, ItemLease, DeliveryTimeout)
	}
}

// The shared test kit cibatest imports this package (through
// authn/httpchannel), so these in-package tests cannot use it: their fixed
// clock is the store suite's (storetest.Clock), and waitFor is their own.

// outboxRig is a Badger store in a temporary directory with recorded
// delivery events, on a clock (nil: real time).
type outboxRig struct {
	t     *testing.T
	store *badgerstore.Store
	now   func() time.Time
	mu    sync.Mutex
	evs   []Event
}

func newOutboxRig(t *testing.T, now func() time.Time) *outboxRig {
	t.Helper()
	st, err := badgerstore.Open(t.TempDir(), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if now == nil {
		now = time.Now
	}
	return &outboxRig{t: t, store: st, now: now}
}

func (r *outboxRig) observe(o *Worker) {
	o.Observe(func(ev Event) {
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.mu.Unlock()
	})
}

// worker starts a worker on the rig's store; t.Cleanup stops it (before
// the store closes).
func (r *outboxRig) worker() *Worker {
	o := New(r.store, nil, r.now)
	r.observe(o)
	r.t.Cleanup(o.Close)
	return o
}

// manual is a worker without its goroutine, on the rig's clock: the test
// runs its passes (run).
func (r *outboxRig) manual() *Worker {
	o := newWorker(r.store, nil, r.now)
	r.observe(o)
	r.t.Cleanup(func() {
		o.cancel()
		o.wg.Wait()
	})
	return o
}

// run makes one run of a manual worker (its passes) and waits for the
// deliveries it started; it returns how long the worker would then wait.
func (r *outboxRig) run(o *Worker) time.Duration {
	wait := o.passes()
	o.wg.Wait()
	return wait
}

func (r *outboxRig) events(outcome string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.evs {
		if ev.Outcome == outcome {
			n++
		}
	}
	return n
}

func (r *outboxRig) enqueue(sender string, i int, notAfter time.Time) store.ItemID {
	r.t.Helper()
	id := store.ItemID{Kind: kindX, Request: store.KeyOf(fmt.Sprint("req-", i))}
	if err := r.store.Enqueue(context.Background(), &store.OutboxItem{
		ID: id, Sender: sender, Payload: []byte(fmt.Sprint(i)), NotAfter: notAfter, Next: r.now(),
	}); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// items returns the queued items.
func (r *outboxRig) items() []*store.OutboxItem {
	r.t.Helper()
	var items []*store.OutboxItem
	if err := r.store.ScanOutbox(context.Background(), func(it *store.OutboxItem) bool {
		items = append(items, it)
		return true
	}); err != nil {
		r.t.Fatal(err)
	}
	return items
}

// waitFor polls cond every 5 ms for at most timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counter is a Deliverer counting its deliveries per item.
type counter struct {
	mu    sync.Mutex
	per   map[store.ItemID]int
	delay time.Duration
	fail  func(it *store.OutboxItem) error
}

func (c *counter) Deliver(ctx context.Context, it *store.OutboxItem) error {
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		if err := c.fail(it); err != nil {
			return err
		}
	}
	if c.per == nil {
		c.per = make(map[store.ItemID]int)
	}
	c.per[it.ID]++
	return nil
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.per {
		n += v
	}
	return n
}

func (c *counter) of(id store.ItemID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.per[id]
}

func TestOutboxScansAtStartAndDelivers(t *testing.T) {
	r := newOutboxRig(t, nil)
	exp := time.Now().Add(time.Minute)
	for i := 0; i < 5; i++ {
		r.enqueue("site", i, exp)
	}
	o := r.worker()
	c := &counter{}
	o.Register(kindX, "site", c)
	waitFor(t, 5*time.Second, "5 deliveries", func() bool { return c.total() == 5 })
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(r.items()) == 0 })
	// A new item is delivered once the worker is woken: well before the
	// idle scan, idleScan away, could have found it.
	start := time.Now()
	r.enqueue("site", 9, exp)
	o.Wake()
	waitFor(t, idleScan/2, "the woken delivery", func() bool { return c.total() == 6 })
	t.Logf("the woken delivery came %v after the wake", time.Since(start))
	waitFor(t, 3*time.Second, "6 delivered events", func() bool { return r.events("delivered") == 6 })
}

// TestOutboxSenders: an item waits for its sender; the latest registration
// delivers; unregistering falls back to the earlier one. Registering wakes
// the worker.
func TestOutboxSenders(t *testing.T) {
	clock := storetest.NewClock()
	r := newOutboxRig(t, clock.Now)
	o := r.manual()
	exp := clock.Now().Add(time.Minute)
	other := &counter{}
	o.Register(kindX, "other", other)
	o.Register(kindY, "site", other) // same name, other kind
	id := r.enqueue("site", 1, exp)
	if wait := r.run(o); wait > noSenderDelay {
		t.Errorf("with an item waiting for its sender the worker looks again in %v, want at most %v", wait, noSenderDelay)
	}
	if other.total() != 0 {
		t.Fatal("delivered by the deliverer of another sender")
	}
	if items := r.items(); len(items) != 1 || items[0].Attempts != 0 {
		t.Fatalf("an item without a sender was taken: %+v", items)
	}
	first, second := &counter{}, &counter{}
	select {
	case <-o.wake:
	default:
	}
	unFirst := o.Register(kindX, "site", first)
	if len(o.wake) != 1 {
		t.Error("registering a deliverer did not wake the worker")
	}
	r.run(o)
	if first.total() != 1 {
		t.Fatalf("delivered %d times once registered, want 1", first.total())
	}
	unSecond := o.Register(kindX, "site", second)
	r.enqueue("site", 2, exp)
	r.run(o)
	if second.total() != 1 || first.total() != 1 {
		t.Fatalf("the latest registration delivered %d, the earlier %d: want 1 and 1", second.total(), first.total())
	}
	unSecond()
	unSecond() // harmless
	r.enqueue("site", 3, exp)
	r.run(o)
	if first.total() != 2 {
		t.Fatalf("the earlier registration delivered %d in all, want 2", first.total())
	}
	if second.total() != 1 {
		t.Error("an unregistered deliverer delivered")
	}
	unFirst()
	r.enqueue("site", 4, exp)
	r.run(o)
	if first.total() != 2 || len(r.items()) != 1 {
		t.Error("delivered with nobody registered")
	}
	if n := first.of(id); n != 1 {
		t.Errorf("item 1 delivered %d times", n)
	}
}

// TestOutboxRetryPermanentExpired: a transient failure is retried after the
// first backoff step, not before; a permanent one drops the item at once;
// an item whose request expired is dropped without an attempt.
func TestOutboxRetryPermanentExpired(t *testing.T) {
	clock := storetest.NewClock()
	r := newOutboxRig(t, clock.Now)
	o := r.manual()
	start := clock.Now()
	exp := start.Add(time.Minute)
	var attempts sync.Map // ItemID → *atomic.Int32
	transient := r.enqueue("site", 1, exp)
	permanent := r.enqueue("site", 2, exp)
	c := &counter{fail: func(it *store.OutboxItem) error {
		v, _ := attempts.LoadOrStore(it.ID, new(atomic.Int32))
		n := v.(*atomic.Int32).Add(1)
		switch {
		case it.ID == permanent:
			return &PermanentError{Err: errors.New("550 no such user")}
		case it.ID == transient && n == 1:
			return errors.New("421 try later")
		}
		return nil
	}}
	o.Register(kindX, "site", c)
	r.run(o)
	if c.total() != 0 {
		t.Fatalf("%d deliveries on the first attempts, want none", c.total())
	}
	items := r.items()
	if len(items) != 1 || items[0].ID != transient {
		t.Fatalf("after the first attempts the outbox holds %+v, want the transient failure only", items)
	}
	if it := items[0]; it.Attempts != 1 || !strings.Contains(it.LastError, "421") || !it.Next.Equal(start.Add(time.Second)) || !it.LeaseUntil.IsZero() {
		t.Errorf("the failed item: attempts %d, last error %q, next %v (want %v), lease %v",
			it.Attempts, it.LastError, it.Next, start.Add(time.Second), it.LeaseUntil)
	}
	// The worker sleeps until the retry is due, and does not retry sooner.
	if wait := r.run(o); wait != time.Second {
		t.Errorf("the worker waits %v for the retry, want 1s", wait)
	}
	clock.Advance(time.Second - time.Millisecond)
	r.run(o)
	if c.total() != 0 {
		t.Fatal("retried before the first backoff step")
	}
	clock.Advance(time.Millisecond)
	r.run(o)
	if c.total() != 1 {
		t.Fatalf("%d deliveries once the backoff passed, want 1", c.total())
	}
	if n := len(r.items()); n != 0 {
		t.Errorf("%d items left", n)
	}
	if v, _ := attempts.Load(permanent); v.(*atomic.Int32).Load() != 1 {
		t.Errorf("a permanent failure was attempted %d times", v.(*atomic.Int32).Load())
	}
	if r.events("failed") != 1 || r.events("retry") != 1 || r.events("delivered") != 1 {
		t.Errorf("events: failed %d, retry %d, delivered %d", r.events("failed"), r.events("retry"), r.events("delivered"))
	}

	// Expired: dropped, never attempted.
	expired := r.enqueue("site", 3, clock.Now().Add(-time.Second))
	r.run(o)
	if n := r.events("expired"); n != 1 {
		t.Errorf("%d expired events, want 1", n)
	}
	if _, tried := attempts.Load(expired); len(r.items()) != 0 || c.total() != 1 || tried {
		t.Error("the expired item was attempted or kept")
	}
}

// TestOutboxLeaseOfDeadWorker: an item leased by a worker that died is
// taken again only when the lease runs out, and the worker wakes up then.
func TestOutboxLeaseOfDeadWorker(t *testing.T) {
	clock := storetest.NewClock()
	r := newOutboxRig(t, clock.Now)
	id := r.enqueue("site", 1, clock.Now().Add(time.Minute))
	leased := clock.Now()
	if _, err := r.store.LeaseItem(context.Background(), id, leased, leased.Add(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	o := r.manual()
	c := &counter{}
	o.Register(kindX, "site", c)
	if wait := r.run(o); wait != 1500*time.Millisecond {
		t.Errorf("the worker waits %v, want 1.5s (the end of the other worker's lease)", wait)
	}
	clock.Advance(1500*time.Millisecond - time.Millisecond)
	r.run(o)
	if c.total() != 0 {
		t.Fatalf("delivered %v after another worker leased it for 1.5 s", clock.Now().Sub(leased))
	}
	clock.Advance(time.Millisecond)
	r.run(o)
	if c.total() != 1 {
		t.Fatalf("%d deliveries once the lease ran out, want 1", c.total())
	}
	if items := r.items(); len(items) != 0 {
		t.Errorf("%d items left", len(items))
	}
}

// TestOutboxTwoWorkersOneStore: two workers on one store (two processes on
// a shared store, or an overlapping reload) never deliver an item twice.
func TestOutboxTwoWorkersOneStore(t *testing.T) {
	r := newOutboxRig(t, nil)
	exp := time.Now().Add(time.Minute)
	const n = 40
	for i := 0; i < n; i++ {
		r.enqueue("site", i, exp)
	}
	a, b := &counter{delay: 5 * time.Millisecond}, &counter{delay: 5 * time.Millisecond}
	oa, ob := r.worker(), r.worker()
	oa.Register(kindX, "site", a)
	ob.Register(kindX, "site", b)
	waitFor(t, 10*time.Second, "every delivery", func() bool { return a.total()+b.total() >= n })
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(r.items()) == 0 })
	// Stopped, the workers have no delivery in flight: the counts are final.
	oa.Close()
	ob.Close()
	if a.total()+b.total() != n {
		t.Errorf("%d deliveries of %d items", a.total()+b.total(), n)
	}
	a.mu.Lock()
	b.mu.Lock()
	defer a.mu.Unlock()
	defer b.mu.Unlock()
	for id, k := range a.per {
		if k+b.per[id] != 1 {
			t.Errorf("item delivered %d times", k+b.per[id])
		}
	}
	for id, k := range b.per {
		if k+a.per[id] != 1 {
			t.Errorf("item delivered %d times", k+a.per[id])
		}
	}
	t.Logf("worker a delivered %d, worker b %d", len(a.per), len(b.per))
}

// TestOutboxCloseInterruptsHungDelivery: Close does not wait for a hung
// server; the interrupted item is released, due at once for the next start.
func TestOutboxCloseInterruptsHungDelivery(t *testing.T) {
	r := newOutboxRig(t, nil)
	o := New(r.store, nil, nil)
	started := make(chan struct{})
	var cause error
	o.Register(kindX, "site", DelivererFunc(func(ctx context.Context, it *store.OutboxItem) error {
		close(started)
		<-ctx.Done() // a server that never answers
		cause = ctx.Err()
		return ctx.Err()
	}))
	id := r.enqueue("site", 1, time.Now().Add(time.Minute))
	o.Wake()
	<-started
	// Close returns because it cancels the attempt: the attempt's own
	// deadline would end it with DeadlineExceeded instead.
	o.Close()
	if !errors.Is(cause, context.Canceled) {
		t.Errorf("the delivery ended with %v, want it cancelled by Close", cause)
	}
	var got *store.OutboxItem
	err := r.store.ScanOutbox(context.Background(), func(it *store.OutboxItem) bool {
		if it.ID == id {
			got = it
		}
		return true
	})
	if err != nil || got == nil {
		t.Fatalf("the interrupted item is gone: %v", err)
	}
	if !got.Due(time.Now()) {
		t.Errorf("the interrupted item is not due at once: next %v, lease until %v", got.Next, got.LeaseUntil)
	}
}

// TestOutboxCloseWaits: Close waits for the deliveries in flight.
func TestOutboxCloseWaits(t *testing.T) {
	r := newOutboxRig(t, nil)
	o := New(r.store, nil, nil)
	started, done := make(chan struct{}), atomic.Bool{}
	o.Register(kindX, "site", DelivererFunc(func(ctx context.Context, it *store.OutboxItem) error {
		close(started)
		time.Sleep(200 * time.Millisecond) // a slow delivery that ignores ctx
		done.Store(true)
		return nil
	}))
	r.enqueue("site", 1, time.Now().Add(time.Minute))
	o.Wake()
	<-started
	o.Close()
	if !done.Load() {
		t.Error("Close returned while a delivery was in flight")
	}
	o.Close() // idempotent
}

// TestOutboxExpiredBacklogHoldsUpNothing: a backlog of items whose requests
// expired (an outage of the mail server outlived them) is dropped in one
// go, and the mail queued behind it is sent in the same run of the worker,
// not a delivery slot's worth of drops later.
func TestOutboxExpiredBacklogHoldsUpNothing(t *testing.T) {
	r := newOutboxRig(t, nil)
	o := r.manual()
	c := &counter{}
	o.Register(kindX, "site", c)
	const stale = 5 * MaxConcurrentDeliveries
	for i := range stale {
		r.enqueue("site", i, time.Now().Add(-time.Minute))
	}
	fresh := r.enqueue("site", stale, time.Now().Add(time.Minute))
	r.run(o)
	if n := r.events("expired"); n != stale {
		t.Errorf("%d expired items dropped, want %d", n, stale)
	}
	if sent := c.of(fresh); sent != 1 {
		t.Fatalf("the mail behind the backlog was sent %d times in the worker's run, want 1", sent)
	}
}

// TestOutboxSlotsTaken: a pass that finds every delivery slot taken looks
// again soon, not at the next idle scan: the deliveries in flight may all
// end before it, their wake-ups spent.
func TestOutboxSlotsTaken(t *testing.T) {
	r := newOutboxRig(t, nil)
	o := r.manual()
	c := &counter{}
	o.Register(kindX, "site", c)
	id := r.enqueue("site", 0, time.Now().Add(time.Minute))
	for range cap(o.sem) {
		o.sem <- struct{}{} // deliveries in flight
	}
	if wait := o.passes(); wait > busyRecheck {
		t.Errorf("every slot taken: the next pass in %v, want at most %v", wait, busyRecheck)
	}
	for range cap(o.sem) {
		<-o.sem
	}
	r.run(o)
	if c.of(id) != 1 {
		t.Errorf("delivered %d times once slots were free, want 1", c.of(id))
	}
}

// TestOutboxLeasesOfAPreviousProcess: leases held when the store was last
// closed (the process was killed mid-delivery) are void at open, so the
// item is delivered at once rather than when the lease runs out.
func TestOutboxLeasesOfAPreviousProcess(t *testing.T) {
	dir := t.TempDir()
	st, err := badgerstore.Open(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := store.ItemID{Kind: kindX, Request: store.KeyOf("req")}
	now := time.Now()
	if err := st.Enqueue(context.Background(), &store.OutboxItem{ID: id, Sender: "site", NotAfter: now.Add(time.Minute), Next: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LeaseItem(context.Background(), id, now, now.Add(ItemLease)); err != nil {
		t.Fatal(err)
	}
	other := store.ItemID{Kind: kindX, Request: store.KeyOf("retry")} // due later, not leased: left alone
	if err := st.Enqueue(context.Background(), &store.OutboxItem{ID: other, Sender: "site", NotAfter: now.Add(time.Minute), Next: now.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = badgerstore.Open(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	due, _, err := st.DueItems(context.Background(), time.Now(), 10, store.DueFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].ID != id || !due[0].LeaseUntil.IsZero() || due[0].Attempts != 1 {
		t.Fatalf("due after reopening: %+v", due)
	}
}

// TestOutboxAttemptEndsBeforeItsLease: the context of a delivery ends when
// the worker's clock reaches the end of the item's lease less leaseMargin,
// even when the clock jumps there (a step of the wall clock, on which every
// worker of the store compares leases): the attempt is over before another
// worker may take the item.
func TestOutboxAttemptEndsBeforeItsLease(t *testing.T) {
	clock := storetest.NewClock()
	r := newOutboxRig(t, clock.Now)
	o := r.worker()
	started := make(chan context.Context, 1)
	o.Register(kindX, "site", DelivererFunc(func(ctx context.Context, it *store.OutboxItem) error {
		started <- ctx
		<-ctx.Done() // a server that never answers
		return ctx.Err()
	}))
	r.enqueue("site", 1, clock.Now().Add(time.Minute))
	o.Wake()
	var ctx context.Context
	select {
	case ctx = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery began")
	}
	clock.Advance(ItemLease - leaseMargin - time.Millisecond)
	time.Sleep(3 * leaseCheck)
	if ctx.Err() != nil {
		t.Fatalf("the attempt ended %v before the end of its lease less the margin", time.Millisecond)
	}
	clock.Advance(time.Millisecond)
	waitFor(t, 5*time.Second, "the attempt to end", func() bool { return ctx.Err() != nil })
	waitFor(t, 5*time.Second, "the retry", func() bool { return r.events("retry") == 1 })
	if items := r.items(); len(items) != 1 || !items[0].LeaseUntil.IsZero() {
		t.Errorf("after the attempt: %+v, want the item released for a retry", items)
	}
}

// heldQueue is the rig's store with its leases and removals held at
// gates the test opens: it shows what the worker does while a store's
// write waits (for Redis's fsync, say).
type heldQueue struct {
	Queue
	leaseGate  func()                // called inside each LeaseItem
	deleteGate func()                // called inside each DeleteItem
	dueHook    func(store.DueFilter) // called with each DueItems' filter
}

func (q *heldQueue) DueItems(ctx context.Context, now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time, error) {
	if q.dueHook != nil {
		q.dueHook(filter)
	}
	return q.Queue.DueItems(ctx, now, limit, filter)
}

func (q *heldQueue) LeaseItem(ctx context.Context, id store.ItemID, now, until time.Time) (*store.OutboxItem, error) {
	if q.leaseGate != nil {
		q.leaseGate()
	}
	return q.Queue.LeaseItem(ctx, id, now, until)
}

func (q *heldQueue) DeleteItem(ctx context.Context, id store.ItemID) error {
	if q.deleteGate != nil {
		q.deleteGate()
	}
	return q.Queue.DeleteItem(ctx, id)
}

// TestOutboxLeasesInParallel: the items a pass finds due are leased by
// their attempts side by side, not one after the other, so a store whose
// writes each wait for an fsync serves them with one.
func TestOutboxLeasesInParallel(t *testing.T) {
	r := newOutboxRig(t, nil)
	const n = 4
	var mu sync.Mutex
	inside, most := 0, 0
	all := make(chan struct{})
	q := &heldQueue{Queue: r.store, leaseGate: func() {
		mu.Lock()
		inside++
		most = max(most, inside)
		if inside == n {
			close(all)
		}
		mu.Unlock()
		select { // wait for the others, or give up: one after the other
		case <-all:
		case <-time.After(2 * time.Second):
		}
		mu.Lock()
		inside--
		mu.Unlock()
	}}
	for i := range n {
		r.enqueue("site", i, time.Now().Add(time.Minute))
	}
	o := New(q, nil, nil)
	t.Cleanup(o.Close)
	c := &counter{}
	o.Register(kindX, "site", c)
	waitFor(t, 20*time.Second, "the deliveries", func() bool { return c.total() == n })
	mu.Lock()
	defer mu.Unlock()
	if most != n {
		t.Errorf("at most %d leases at once, want the %d items' together", most, n)
	}
}

// TestOutboxSlotFreeBeforeBookkeeping: a delivery gives back its slot when
// the deliverer returns; removing the delivered item (a store write) does
// not hold up the next mail.
func TestOutboxSlotFreeBeforeBookkeeping(t *testing.T) {
	r := newOutboxRig(t, nil)
	release := make(chan struct{})
	var once sync.Once
	var held atomic.Int32
	q := &heldQueue{Queue: r.store, deleteGate: func() {
		if held.Add(1) == 1 {
			<-release // the first removal waits
		}
	}}
	first := r.enqueue("site", 0, time.Now().Add(time.Minute))
	o := newWorker(q, nil, nil)
	for range cap(o.sem) - 1 {
		o.sem <- struct{}{} // one slot left
	}
	go o.run()
	t.Cleanup(o.Close)
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before Close
	c := &counter{}
	o.Register(kindX, "site", c)
	waitFor(t, 10*time.Second, "the first delivery", func() bool { return c.of(first) == 1 && held.Load() == 1 })
	second := r.enqueue("site", 1, time.Now().Add(time.Minute))
	o.Wake()
	waitFor(t, 10*time.Second, "the second mail while the first's removal waits", func() bool { return c.of(second) == 1 })
	once.Do(func() { close(release) })
	for range cap(o.sem) - 1 {
		<-o.sem
	}
}

// TestOutboxSkipsItemsUnderWay: a pass asks the store to leave out,
// unread, the items whose attempt is under way (here one whose lease
// waits), and delivers the next item meanwhile.
func TestOutboxSkipsItemsUnderWay(t *testing.T) {
	r := newOutboxRig(t, nil)
	release := make(chan struct{})
	var once sync.Once
	var leases atomic.Int32
	first := r.enqueue("site", 0, time.Now().Add(time.Minute))
	var mu sync.Mutex
	passes, skipped := 0, 0
	q := &heldQueue{Queue: r.store,
		leaseGate: func() {
			if leases.Add(1) == 1 {
				<-release // the first lease waits
			}
		},
		dueHook: func(f store.DueFilter) {
			if leases.Load() == 0 {
				return // before the first attempt began
			}
			mu.Lock()
			defer mu.Unlock()
			passes++
			if f.Skips(first) {
				skipped++
			}
		},
	}
	o := New(q, nil, nil)
	t.Cleanup(o.Close)
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before Close
	c := &counter{}
	o.Register(kindX, "site", c)
	waitFor(t, 10*time.Second, "the first lease", func() bool { return leases.Load() == 1 })
	second := r.enqueue("site", 1, time.Now().Add(time.Minute))
	o.Wake()
	waitFor(t, 10*time.Second, "the second mail while the first's lease waits", func() bool { return c.of(second) == 1 })
	mu.Lock()
	if passes == 0 || skipped != passes {
		t.Errorf("%d of %d passes while the first item's lease waited left it out unread, want all", skipped, passes)
	}
	mu.Unlock()
	once.Do(func() { close(release) })
	waitFor(t, 10*time.Second, "the first mail", func() bool { return c.of(first) == 1 })
}
