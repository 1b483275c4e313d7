// Package outbox delivers what the proxy queues in its store, in the
// transaction that makes it necessary: approval mails, ping notifications,
// requests to authentication devices. One Worker runs per open store;
// the owners of each kind of item register a Deliverer per sender, and
// each delivery holds a lease on its item, so an item is delivered by one
// worker at a time and a crashed worker's item is retried.
package outbox

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// Queue is the part of the store the worker uses.
type Queue interface {
	DueItems(ctx context.Context, now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time, error)
	LeaseItem(ctx context.Context, id store.ItemID, now, until time.Time) (*store.OutboxItem, error)
	RetryItem(ctx context.Context, id store.ItemID, next time.Time, lastErr string) error
	DeleteItem(ctx context.Context, id store.ItemID) error
	DeleteItems(ctx context.Context, ids ...store.ItemID) error
}

// Delivery timing.
const (
	// ItemLease is how long a worker holds an item it delivers; a worker
	// that dies mid-delivery frees the item when the lease runs out.
	ItemLease = store.MaxItemLease
	// DeliveryTimeout bounds one delivery attempt: its context ends
	// leaseMargin before the lease does, so that an attempt is over (its
	// connection closed: no mail can be accepted after) before another
	// worker may take the item.
	DeliveryTimeout = 12 * time.Second
	// leaseMargin is what an attempt leaves of its lease, for recording
	// its outcome.
	leaseMargin = ItemLease - DeliveryTimeout
	// leaseCheck is how often an attempt compares the worker's clock with
	// the end of its lease (see watchLease).
	leaseCheck = 250 * time.Millisecond
	// MaxRetryDelay caps the backoff between attempts.
	MaxRetryDelay = 15 * time.Second
	// noSenderDelay is how soon an item without a registered sender is
	// looked at again (a configuration is being loaded).
	noSenderDelay = 2 * time.Second
	// idleScan is how often the outbox is scanned when nothing is known to
	// be due, as a backstop for items queued by another process.
	idleScan = 30 * time.Second
	// MaxConcurrentDeliveries bounds the deliveries in flight.
	MaxConcurrentDeliveries = 8
	// busyRecheck is how soon a pass that found every delivery slot taken
	// is followed by another, should no delivery's end wake the worker.
	busyRecheck = 50 * time.Millisecond
	// dueBatch bounds the items one pass reads.
	dueBatch = 64
)

// Deliverer delivers the outbox items of one sender: the SMTP settings of
// one site for mails, the notification client for pings.
type Deliverer interface {
	// Deliver makes one attempt. An error is retried with backoff while the
	// item lives, unless it is a *PermanentError.
	Deliver(ctx context.Context, it *store.OutboxItem) error
}

// DelivererFunc adapts a function to Deliverer.
type DelivererFunc func(ctx context.Context, it *store.OutboxItem) error

// Deliver implements Deliverer.
func (f DelivererFunc) Deliver(ctx context.Context, it *store.OutboxItem) error { return f(ctx, it) }

// PermanentError is a delivery failure that retrying cannot fix (a mail
// address the server refuses, a notification endpoint answering 4xx).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent delivery failure: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Event tells an observer what became of a delivery attempt.
type Event struct {
	Kind    store.Kind
	Outcome string // "delivered", "retry", "failed", "expired"
	Err     error
	Item    *store.OutboxItem
}

// Worker delivers the queued items of one store. It
// belongs to the store (one per open store, shared by every handler and
// configuration on it), not to a handler: handlers register their senders
// and unregister them when they are cleaned up. Each delivery holds a lease
// on its item (ItemLease), so two workers on one store never deliver an item
// twice at the same time, and a crashed worker's item is retried.
type Worker struct {
	queue Queue
	log   *zap.Logger
	now   func() time.Time

	mu      sync.Mutex
	senders map[senderKey][]*registration
	observe func(Event)
	health  map[store.Kind]Health

	// taken holds the items of the attempts under way, from before their
	// lease to the end of their bookkeeping: a pass meanwhile skips them.
	taken map[store.ItemID]struct{}

	ctx    context.Context // cancelled by Close: deliveries in flight stop
	cancel context.CancelFunc
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type senderKey struct {
	kind store.Kind
	name string
}

type registration struct{ d Deliverer }

// New starts the worker of a store's queue. now nil means time.Now.
func New(q Queue, logger *zap.Logger, now func() time.Time) *Worker {
	o := newWorker(q, logger, now)
	go o.run()
	return o
}

// newWorker is New without its goroutine.
func newWorker(q Queue, logger *zap.Logger, now func() time.Time) *Worker {
	if logger == nil {
		logger = zap.NewNop()
	}
	if now == nil {
		now = time.Now
	}
	o := &Worker{
		queue:   q,
		log:     logger,
		now:     now,
		senders: make(map[senderKey][]*registration),
		health:  make(map[store.Kind]Health),
		taken:   make(map[store.ItemID]struct{}),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		sem:     make(chan struct{}, MaxConcurrentDeliveries),
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())
	return o
}

// Register makes d the deliverer of the items of kind queued for sender,
// until the returned function is called. When several are registered for
// the same sender (a configuration reload overlaps the old one), the latest
// delivers. Registering wakes the worker.
func (o *Worker) Register(kind store.Kind, sender string, d Deliverer) (unregister func()) {
	k := senderKey{kind, sender}
	reg := &registration{d}
	o.mu.Lock()
	o.senders[k] = append(o.senders[k], reg)
	o.mu.Unlock()
	o.Wake()
	var once sync.Once
	return func() {
		once.Do(func() {
			o.mu.Lock()
			defer o.mu.Unlock()
			regs := o.senders[k]
			for i, r := range regs {
				if r == reg {
					regs = append(regs[:i:i], regs[i+1:]...)
					break
				}
			}
			if len(regs) == 0 {
				delete(o.senders, k)
			} else {
				o.senders[k] = regs
			}
		})
	}
}

// Observe sets a function told about every delivery outcome (metrics).
func (o *Worker) Observe(fn func(Event)) {
	o.mu.Lock()
	o.observe = fn
	o.mu.Unlock()
}

func (o *Worker) deliverer(kind store.Kind, sender string) Deliverer {
	o.mu.Lock()
	defer o.mu.Unlock()
	regs := o.senders[senderKey{kind, sender}]
	if len(regs) == 0 {
		return nil
	}
	return regs[len(regs)-1].d
}

func (o *Worker) event(ev Event) {
	o.mu.Lock()
	fn := o.observe
	h := o.health[ev.Kind]
	switch ev.Outcome {
	case "delivered":
		h.LastSuccess = o.now()
	case "retry", "failed":
		h.LastFailure = o.now()
		if ev.Err != nil {
			h.LastError = ev.Err.Error()
		} else if ev.Item != nil {
			h.LastError = ev.Item.LastError
		}
	}
	o.health[ev.Kind] = h
	o.mu.Unlock()
	if fn != nil {
		fn(ev)
	}
}

// Health is how deliveries of one kind went lately.
type Health struct {
	LastSuccess time.Time
	LastFailure time.Time
	// LastError is the last failure's reason, addresses masked.
	LastError string
}

// Failing reports whether the last attempt failed.
func (h Health) Failing() bool { return h.LastFailure.After(h.LastSuccess) }

// Health returns how deliveries of kind went lately, in this process.
func (o *Worker) Health(kind store.Kind) Health {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.health[kind]
}

// Wake makes the worker look at the outbox now.
func (o *Worker) Wake() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Close stops the worker, interrupts the deliveries in flight (their items
// are released for the next start) and waits for them.
func (o *Worker) Close() {
	o.once.Do(func() {
		close(o.stop)
		<-o.done
		o.cancel()
		o.wg.Wait()
	})
}

func (o *Worker) run() {
	defer close(o.done)
	timer := time.NewTimer(0) // the outbox is scanned at start
	defer timer.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-o.wake:
		case <-timer.C:
		}
		wait := o.passes()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// maxExpiredPerPass bounds the expired items passes drops before the worker
// looks at its wake-ups again.
const maxExpiredPerPass = 1024

// passes runs passes while the last one dropped expired items (which take
// no delivery slot, so the next items may be deliverable now: a backlog
// that outlived its requests, after an outage of the mail server, must not
// hold up the mails behind it), and returns how long to wait.
func (o *Worker) passes() time.Duration {
	for dropped, wide := 0, false; ; wide = true {
		wait, expired := o.pass(wide)
		dropped += expired
		if expired == 0 || dropped >= maxExpiredPerPass {
			return wait
		}
		select {
		case <-o.stop:
			return wait
		default:
		}
	}
}

// pass starts the delivery of every due item and returns how long to wait
// before the next pass, and how many expired items it dropped. A wide pass
// (after one that dropped some) reads a whole batch whatever the free
// delivery slots, so that expired items go a batch a transaction.
func (o *Worker) pass(wide bool) (time.Duration, int) {
	ctx := context.Background()
	now := o.now()
	wait := idleScan
	soon := func(at time.Time) {
		if d := at.Sub(now); d < wait {
			wait = max(d, 10*time.Millisecond)
		}
	}
	// Items no configuration delivers for (one is being loaded) are left
	// due, and skipped so they hold up none behind them.
	orphans := false
	// Read no more items than can be delivered now: a delivery that ends
	// wakes the worker for the next ones.
	limit := min(dueBatch, cap(o.sem)-len(o.sem))
	if wide {
		limit = dueBatch
	}
	if limit == 0 {
		// Every slot is taken: a delivery that ends frees its slot, then
		// wakes the worker; look again soon all the same.
		return busyRecheck, 0
	}
	due, next, err := o.queue.DueItems(ctx, now, limit, store.DueFilter{
		// An item whose attempt is under way is left unread: a pass per
		// freed slot would otherwise read every item still being leased.
		Skip: o.isTaken,
		Accept: func(it *store.OutboxItem) bool {
			if !now.Before(it.NotAfter) || o.deliverer(it.ID.Kind, it.Sender) != nil {
				return true
			}
			orphans = true
			return false
		},
	})
	if err != nil {
		if !errors.Is(err, store.ErrClosed) {
			o.log.Warn("reading the outbox failed", zap.Error(err))
		}
		return noSenderDelay, 0
	}
	if !next.IsZero() {
		soon(next)
	}
	if orphans {
		soon(now.Add(noSenderDelay))
	}
	var expired []*store.OutboxItem
	for _, it := range due {
		if !now.Before(it.NotAfter) {
			if it.LeaseUntil.After(now) {
				continue // being delivered right now
			}
			expired = append(expired, it)
			continue
		}
		d := o.deliverer(it.ID.Kind, it.Sender)
		if d == nil {
			soon(now.Add(noSenderDelay)) // unregistered since
			continue
		}
		select {
		case o.sem <- struct{}{}:
		default:
			soon(now.Add(busyRecheck)) // all slots busy
			continue
		}
		// The lease is taken by the attempt's goroutine: attempts lease
		// in parallel, which a store that syncs its writes (Redis with
		// appendfsync always) serves with one fsync.
		o.take(it.ID)
		o.wg.Add(1)
		go o.attempt(d, it.ID)
	}
	o.abandon(ctx, "expired", "its request expired before it could be delivered", expired...)
	return wait, len(expired)
}

// take marks an item's attempt under way; untake ends it.
func (o *Worker) take(id store.ItemID) {
	o.mu.Lock()
	o.taken[id] = struct{}{}
	o.mu.Unlock()
}

func (o *Worker) untake(id store.ItemID) {
	o.mu.Lock()
	delete(o.taken, id)
	o.mu.Unlock()
}

func (o *Worker) isTaken(id store.ItemID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.taken[id]
	return ok
}

// free gives back a delivery slot, then wakes the worker for the next
// item: a pass woken before the slot is free could find every slot taken.
func (o *Worker) free() {
	<-o.sem
	o.Wake()
}

// attempt leases an item a pass found due, in a slot the pass took, and
// delivers it.
func (o *Worker) attempt(d Deliverer, id store.ItemID) {
	defer o.wg.Done()
	now := o.now()
	leased, err := o.queue.LeaseItem(context.Background(), id, now, now.Add(ItemLease))
	if err != nil {
		o.untake(id)
		o.free()
		switch {
		case errors.Is(err, store.ErrNotFound):
		case errors.Is(err, store.ErrNotDue):
			// Another worker took it since the scan. Should that worker
			// die, look again when its lease runs out rather than at the
			// next idle scan.
			time.AfterFunc(ItemLease, o.Wake)
		default:
			if !errors.Is(err, store.ErrClosed) {
				o.log.Warn("leasing an outbox item failed", zap.Error(err))
			}
			time.AfterFunc(noSenderDelay, o.Wake)
		}
		return
	}
	o.deliver(d, leased)
	o.untake(id)
	// A pass the freed slot woke skipped the item; retried, it is due
	// again before its lease would have ended.
	o.Wake()
}

// deliver makes one attempt at a leased item, frees its slot, and records
// the outcome: the item stays leased until then, so no pass takes it
// meanwhile.
func (o *Worker) deliver(d Deliverer, it *store.OutboxItem) {
	end := it.LeaseUntil.Add(-leaseMargin)
	ctx, cancel := context.WithDeadline(o.ctx, time.Now().Add(end.Sub(o.now())))
	defer cancel()
	go o.watchLease(ctx, cancel, end)
	err := d.Deliver(ctx, it)
	cancel()
	// The slot is free for the next delivery; what remains is this one's
	// bookkeeping, under its lease.
	o.free()
	var perm *PermanentError
	switch {
	case err != nil && o.ctx.Err() != nil:
		// Shutting down: release the item at once rather than leaving it
		// leased, so the next start delivers it without waiting.
		if rerr := o.queue.RetryItem(context.Background(), it.ID, o.now(), "interrupted by shutdown"); rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			o.log.Warn("could not release an interrupted delivery; its lease frees it", zap.Error(rerr))
		}
		return
	case err == nil:
		if derr := o.queue.DeleteItem(context.Background(), it.ID); derr != nil {
			o.log.Warn("could not remove a delivered outbox item; it may be delivered again", zap.Error(derr))
		}
		o.event(Event{Kind: it.ID.Kind, Outcome: "delivered", Item: it})
	case errors.As(err, &perm):
		o.abandon(context.Background(), "failed", err.Error(), it)
	default:
		next := o.now().Add(retryDelay(it.Attempts))
		if rerr := o.queue.RetryItem(context.Background(), it.ID, next, err.Error()); rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			o.log.Warn("could not schedule a retry; the lease frees the item", zap.Error(rerr))
		}
		o.log.Info("delivery failed, will retry",
			zap.String("kind", it.ID.Kind.Name()), zap.String("request", it.ID.Request.Short()),
			zap.Int("attempt", it.Attempts), zap.Time("next", next), zap.Error(err))
		o.event(Event{Kind: it.ID.Kind, Outcome: "retry", Err: err, Item: it})
	}
}

// watchLease cancels an attempt when the worker's clock reaches end, the
// end of its lease less leaseMargin, until ctx ends. The attempt's deadline
// is the same instant on the monotonic clock; the lease, though, is a
// wall-clock time every worker on the store compares with its own clock,
// so a step of the wall clock (or a test's clock moved on) must end the
// attempt too, before another worker may take the item over.
func (o *Worker) watchLease(ctx context.Context, cancel context.CancelFunc, end time.Time) {
	t := time.NewTicker(leaseCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !o.now().Before(end) {
				cancel()
				return
			}
		}
	}
}

// abandon drops an item that can never be delivered, saying why; the reason
// never holds an address or a secret (deliverers make sure of it).
func (o *Worker) abandon(ctx context.Context, outcome, reason string, items ...*store.OutboxItem) {
	if len(items) == 0 {
		return
	}
	ids := make([]store.ItemID, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	if err := o.queue.DeleteItems(ctx, ids...); err != nil {
		if !errors.Is(err, store.ErrClosed) {
			o.log.Warn("could not remove outbox items", zap.Int("items", len(ids)), zap.Error(err))
		}
		return
	}
	for _, it := range items {
		o.log.Warn("delivery abandoned",
			zap.String("kind", it.ID.Kind.Name()), zap.String("request", it.ID.Request.Short()),
			zap.Int("attempts", it.Attempts), zap.String("reason", reason), zap.String("last_error", it.LastError))
		o.event(Event{Kind: it.ID.Kind, Outcome: outcome, Err: errors.New(reason), Item: it})
	}
}

// retryDelay is the backoff after the n-th attempt: 1 s, 2 s, 4 s, 8 s,
// then 15 s.
func retryDelay(attempts int) time.Duration {
	if attempts < 1 {
		attempts = 1
	}
	if attempts > 5 {
		return MaxRetryDelay
	}
	return min(time.Second<<(attempts-1), MaxRetryDelay)
}
