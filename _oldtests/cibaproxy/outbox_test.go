package cibaproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// outboxRig is a Badger store in a temporary directory with recorded
// delivery events.
type outboxRig struct {
	t     *testing.T
	store *BadgerStore
	mu    sync.Mutex
	evs   []OutboxEvent
}

func newOutboxRig(t *testing.T) *outboxRig {
	t.Helper()
	st, err := OpenBadger(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &outboxRig{t: t, store: st}
}

// outbox starts a worker on the rig's store; t.Cleanup stops it (before the
// store closes).
func (r *outboxRig) outbox() *Outbox {
	o := NewOutbox(r.store, nil, nil)
	o.Observe(func(ev OutboxEvent) {
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.mu.Unlock()
	})
	r.t.Cleanup(o.Close)
	return o
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

func (r *outboxRig) enqueue(sender string, i int, notAfter time.Time) ItemID {
	r.t.Helper()
	id := ItemID{Kind: KindMail, Request: KeyOf(fmt.Sprint("req-", i))}
	if err := r.store.Enqueue(context.Background(), &OutboxItem{
		ID: id, Sender: sender, Payload: []byte(fmt.Sprint(i)), NotAfter: notAfter, Next: time.Now(),
	}); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// counter is a Deliverer counting its deliveries per item.
type counter struct {
	mu    sync.Mutex
	per   map[ItemID]int
	delay time.Duration
	fail  func(it *OutboxItem) error
}

func (c *counter) Deliver(ctx context.Context, it *OutboxItem) error {
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
		c.per = make(map[ItemID]int)
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

func TestOutboxScansAtStartAndDelivers(t *testing.T) {
	r := newOutboxRig(t)
	exp := time.Now().Add(time.Minute)
	for i := 0; i < 5; i++ {
		r.enqueue("site", i, exp)
	}
	o := r.outbox()
	c := &counter{}
	o.Register(KindMail, "site", c)
	waitFor(t, 5*time.Second, "5 deliveries", func() bool { return c.total() == 5 })
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, r.store)) == 0 })
	// A new item is delivered as soon as the worker is woken.
	start := time.Now()
	r.enqueue("site", 9, exp)
	o.Wake()
	waitFor(t, 5*time.Second, "the woken delivery", func() bool { return c.total() == 6 })
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a woken delivery took %v", d)
	}
	waitFor(t, 3*time.Second, "6 delivered events", func() bool { return r.events("delivered") == 6 })
}

// TestOutboxSenders: an item waits for its sender; the latest registration
// delivers; unregistering falls back to the earlier one.
func TestOutboxSenders(t *testing.T) {
	r := newOutboxRig(t)
	o := r.outbox()
	exp := time.Now().Add(time.Minute)
	other := &counter{}
	o.Register(KindMail, "other", other)
	o.Register(KindPing, "site", other) // same name, other kind
	id := r.enqueue("site", 1, exp)
	o.Wake()
	time.Sleep(300 * time.Millisecond)
	if other.total() != 0 {
		t.Fatal("delivered by the deliverer of another sender")
	}
	if items := outboxItems(t, r.store); len(items) != 1 || items[0].Attempts != 0 {
		t.Fatalf("an item without a sender was taken: %+v", items)
	}
	first, second := &counter{}, &counter{}
	unFirst := o.Register(KindMail, "site", first)
	waitFor(t, 3*time.Second, "delivery once registered", func() bool { return first.total() == 1 })
	unSecond := o.Register(KindMail, "site", second)
	r.enqueue("site", 2, exp)
	o.Wake()
	waitFor(t, 3*time.Second, "the latest registration to deliver", func() bool { return second.total() == 1 })
	unSecond()
	unSecond() // harmless
	r.enqueue("site", 3, exp)
	o.Wake()
	waitFor(t, 3*time.Second, "the earlier registration to deliver", func() bool { return first.total() == 2 })
	if second.total() != 1 {
		t.Error("an unregistered deliverer delivered")
	}
	unFirst()
	r.enqueue("site", 4, exp)
	o.Wake()
	time.Sleep(300 * time.Millisecond)
	if first.total() != 2 || len(outboxItems(t, r.store)) != 1 {
		t.Error("delivered with nobody registered")
	}
	first.mu.Lock()
	defer first.mu.Unlock()
	if first.per[id] != 1 {
		t.Errorf("item 1 delivered %d times", first.per[id])
	}
}

// TestOutboxRetryPermanentExpired: a transient failure is retried after the
// first backoff step; a permanent one drops the item at once; an item whose
// request expired is dropped without an attempt.
func TestOutboxRetryPermanentExpired(t *testing.T) {
	r := newOutboxRig(t)
	o := r.outbox()
	exp := time.Now().Add(time.Minute)
	var attempts sync.Map // ItemID → *atomic.Int32
	transient := r.enqueue("site", 1, exp)
	permanent := r.enqueue("site", 2, exp)
	c := &counter{fail: func(it *OutboxItem) error {
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
	start := time.Now()
	o.Register(KindMail, "site", c)
	waitFor(t, 5*time.Second, "the retried delivery", func() bool { return c.total() == 1 })
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("retried after %v, want about 1 s", d)
	}
	waitFor(t, 3*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, r.store)) == 0 })
	waitFor(t, 3*time.Second, "the events", func() bool { return r.events("delivered") == 1 })
	if v, _ := attempts.Load(permanent); v.(*atomic.Int32).Load() != 1 {
		t.Errorf("a permanent failure was attempted %d times", v.(*atomic.Int32).Load())
	}
	if r.events("failed") != 1 || r.events("retry") != 1 || r.events("delivered") != 1 {
		t.Errorf("events: failed %d, retry %d, delivered %d", r.events("failed"), r.events("retry"), r.events("delivered"))
	}

	// Expired: dropped, never attempted.
	r.enqueue("site", 3, time.Now().Add(-time.Second))
	o.Wake()
	waitFor(t, 3*time.Second, "the expired item to be dropped", func() bool { return r.events("expired") == 1 })
	if len(outboxItems(t, r.store)) != 0 || c.total() != 1 {
		t.Error("the expired item was attempted or kept")
	}
}

// TestOutboxLeaseOfDeadWorker: an item leased by a worker that died is
// taken again only when the lease runs out.
func TestOutboxLeaseOfDeadWorker(t *testing.T) {
	r := newOutboxRig(t)
	id := r.enqueue("site", 1, time.Now().Add(time.Minute))
	leased := time.Now()
	if _, err := r.store.LeaseItem(context.Background(), id, leased, leased.Add(1500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	o := r.outbox()
	c := &counter{}
	o.Register(KindMail, "site", c)
	waitFor(t, 5*time.Second, "the delivery after the lease", func() bool { return c.total() == 1 })
	if d := time.Since(leased); d < 1400*time.Millisecond {
		t.Errorf("delivered %v after another worker leased it for 1.5 s", d)
	}
	items := outboxItems(t, r.store)
	if len(items) != 0 {
		t.Errorf("%d items left", len(items))
	}
}

// TestOutboxTwoWorkersOneStore: two workers on one store (two processes on
// a shared store, or an overlapping reload) never deliver an item twice.
func TestOutboxTwoWorkersOneStore(t *testing.T) {
	r := newOutboxRig(t)
	exp := time.Now().Add(time.Minute)
	const n = 40
	for i := 0; i < n; i++ {
		r.enqueue("site", i, exp)
	}
	a, b := &counter{delay: 5 * time.Millisecond}, &counter{delay: 5 * time.Millisecond}
	oa, ob := r.outbox(), r.outbox()
	oa.Register(KindMail, "site", a)
	ob.Register(KindMail, "site", b)
	waitFor(t, 10*time.Second, "every delivery", func() bool { return a.total()+b.total() >= n })
	time.Sleep(500 * time.Millisecond)
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
	t.Logf("worker a delivered %d, worker b %d", len(a.per), len(b.per))
}

// TestOutboxCloseWaits: Close waits for the deliveries in flight.
// TestOutboxCloseInterruptsHungDelivery: Close does not wait for a hung
// server; the interrupted item is released, due at once for the next start.
func TestOutboxCloseInterruptsHungDelivery(t *testing.T) {
	r := newOutboxRig(t)
	o := NewOutbox(r.store, nil, nil)
	started := make(chan struct{})
	o.Register(KindMail, "site", DelivererFunc(func(ctx context.Context, it *OutboxItem) error {
		close(started)
		<-ctx.Done() // a server that never answers
		return ctx.Err()
	}))
	id := r.enqueue("site", 1, time.Now().Add(time.Minute))
	o.Wake()
	<-started
	begin := time.Now()
	o.Close()
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Close took %v with a hung delivery", d)
	}
	var got *OutboxItem
	err := r.store.ScanOutbox(context.Background(), func(it *OutboxItem) bool {
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

func TestOutboxCloseWaits(t *testing.T) {
	r := newOutboxRig(t)
	o := NewOutbox(r.store, nil, nil)
	started, done := make(chan struct{}), atomic.Bool{}
	o.Register(KindMail, "site", DelivererFunc(func(ctx context.Context, it *OutboxItem) error {
		close(started)
		time.Sleep(200 * time.Millisecond)
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
	r := newOutboxRig(t)
	o := newOutbox(r.store, nil, nil) // no worker: the test runs its passes
	o.Observe(func(ev OutboxEvent) {
		r.mu.Lock()
		r.evs = append(r.evs, ev)
		r.mu.Unlock()
	})
	c := &counter{}
	o.Register(KindMail, "site", c)
	const stale = 5 * maxConcurrentDeliveries
	for i := range stale {
		r.enqueue("site", i, time.Now().Add(-time.Minute))
	}
	fresh := r.enqueue("site", stale, time.Now().Add(time.Minute))
	o.passes()
	o.wg.Wait()
	if n := r.events("expired"); n != stale {
		t.Errorf("%d expired items dropped, want %d", n, stale)
	}
	c.mu.Lock()
	sent := c.per[fresh]
	c.mu.Unlock()
	if sent != 1 {
		t.Fatalf("the mail behind the backlog was sent %d times in the worker's run, want 1", sent)
	}
}

// TestOutboxLeasesOfAPreviousProcess: leases held when the store was last
// closed (the process was killed mid-delivery) are void at open, so the
// item is delivered at once rather than when the lease runs out.
func TestOutboxLeasesOfAPreviousProcess(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenBadger(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := ItemID{Kind: KindMail, Request: KeyOf("req")}
	now := time.Now()
	if err := st.Enqueue(context.Background(), &OutboxItem{ID: id, Sender: "site", NotAfter: now.Add(time.Minute), Next: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LeaseItem(context.Background(), id, now, now.Add(ItemLease)); err != nil {
		t.Fatal(err)
	}
	other := ItemID{Kind: KindMail, Request: KeyOf("retry")} // due later, not leased: left alone
	if err := st.Enqueue(context.Background(), &OutboxItem{ID: other, Sender: "site", NotAfter: now.Add(time.Minute), Next: now.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openTestStore(t, dir, nil)
	due, _, err := st.DueItems(context.Background(), time.Now(), 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].ID != id || !due[0].LeaseUntil.IsZero() || due[0].Attempts != 1 {
		t.Fatalf("due after reopening: %+v", due)
	}
}
