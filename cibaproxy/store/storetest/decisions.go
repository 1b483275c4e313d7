package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The life of a request after its creation: the decision, the claim and
// commit of the redemption, the expiry and the sweep.

// The answers of the decision and the redemption, as the core gives them.
var (
	errDecided  = errors.New("already decided")
	errExpired  = errors.New("expired")
	errPending  = errors.New("authorization pending")
	errOverlap  = errors.New("another poll is minting")
	errRedeemed = errors.New("already redeemed")
	errNotMine  = errors.New("the claim was taken over")
)

// decide records a decision as the core does: once, before expiry, with
// a notification queued (of KindB) in the same transaction.
func decide(f *fixture, s store.Store, key store.RequestKey, approve bool, now time.Time, note string) (*store.AuthRequest, error) {
	return s.UpdateQueue(f.ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) {
		if r.Status != store.StatusPending {
			return nil, errDecided
		}
		if r.Expired(now) {
			return nil, errExpired
		}
		r.Status, r.Decided = store.StatusDenied, now
		if approve {
			r.Status = store.StatusApproved
		}
		return []*store.OutboxItem{item(KindB, key, note, now)}, nil
	})
}

// claim takes an approved request for minting as the core does: one poll
// at a time, for a lease.
func claim(f *fixture, s store.Store, key store.RequestKey, c string, now time.Time) (*store.AuthRequest, error) {
	return s.Update(f.ctx, key, func(r *store.AuthRequest) error {
		switch {
		case r.Status == store.StatusConsumed:
			return errRedeemed
		case r.Status != store.StatusApproved:
			return errPending
		case r.Expired(now):
			return errExpired
		case r.Claim != "" && now.Before(r.ClaimUntil):
			return errOverlap
		}
		r.Claim, r.ClaimUntil = c, now.Add(30*time.Second)
		return nil
	})
}

// commit marks a claimed request consumed, if the claim is still c.
func commit(f *fixture, s store.Store, key store.RequestKey, c string) error {
	_, err := s.Update(f.ctx, key, func(r *store.AuthRequest) error {
		if r.Claim != c {
			return errNotMine
		}
		r.Status, r.Claim, r.ClaimUntil = store.StatusConsumed, "", time.Time{}
		return nil
	})
	return err
}

// testDecideClaimCommit walks a request through the core's writes: the
// decision with its notification, a claim, a claim that overlaps, a lease
// that runs out and is taken over, and the consumption.
func testDecideClaimCommit(t *testing.T, f *fixture) {
	s := f.s
	t0 := f.clock.Now()
	key := f.create("r", request(t0, "alice", 5*time.Minute), nil, store.UserLimit{})
	if _, err := claim(f, s, key, "c0", t0); !errors.Is(err, errPending) {
		t.Fatalf("claim of a pending request: %v, want errPending", err)
	}
	r, err := decide(f, s, key, true, t0, "note-1")
	if err != nil || r.Status != store.StatusApproved || !r.Decided.Equal(t0) {
		t.Fatalf("decide = %+v, %v", r, err)
	}
	if _, err := decide(f, s, key, false, t0, "note-2"); !errors.Is(err, errDecided) {
		t.Fatalf("second decision: %v, want errDecided", err)
	}
	if got := f.get(key); got.Status != store.StatusApproved {
		t.Errorf("the second decision wrote: %v", got.Status)
	}
	items := f.items()
	if len(items) != 1 {
		t.Errorf("%d items queued, want the one notification", len(items))
	}
	sameItem(t, "the notification", items[store.ItemID{Kind: KindB, Request: key}], item(KindB, key, "note-1", t0))
	f.pending(0, map[string]int64{"alice": 0})

	if r, err := claim(f, s, key, "c1", t0); err != nil || r.Claim != "c1" {
		t.Fatalf("claim = %+v, %v", r, err)
	}
	if _, err := claim(f, s, key, "c2", t0.Add(time.Second)); !errors.Is(err, errOverlap) {
		t.Fatalf("overlapping claim: %v, want errOverlap", err)
	}
	if err := commit(f, s, key, "c2"); !errors.Is(err, errNotMine) {
		t.Fatalf("commit without the claim: %v, want errNotMine", err)
	}
	// The lease runs out: another poll takes the grant over, and the
	// first one's commit is refused.
	later := t0.Add(31 * time.Second)
	if r, err := claim(f, s, key, "c2", later); err != nil || r.Claim != "c2" {
		t.Fatalf("claim after the lease = %+v, %v", r, err)
	}
	if err := commit(f, s, key, "c1"); !errors.Is(err, errNotMine) {
		t.Fatalf("commit of a claim taken over: %v, want errNotMine", err)
	}
	if err := commit(f, s, key, "c2"); err != nil {
		t.Fatal(err)
	}
	if got := f.get(key); got.Status != store.StatusConsumed || got.Claim != "" || !got.ClaimUntil.IsZero() {
		t.Errorf("after the commit: %+v", got)
	}
	if _, err := claim(f, s, key, "c3", later); !errors.Is(err, errRedeemed) {
		t.Errorf("claim of a consumed request: %v, want errRedeemed", err)
	}

	// An undecided request that expired cannot be decided.
	k2 := f.create("r2", request(t0, "bob", time.Minute), nil, store.UserLimit{})
	if _, err := decide(f, s, k2, true, t0.Add(time.Minute), "note-3"); !errors.Is(err, errExpired) {
		t.Errorf("decision of an expired request: %v, want errExpired", err)
	}
	if got := f.get(k2); got.Status != store.StatusPending || !got.Decided.IsZero() {
		t.Errorf("the refused decision wrote: %+v", got)
	}
	if _, ok := f.items()[store.ItemID{Kind: KindB, Request: k2}]; ok {
		t.Error("the refused decision queued its notification")
	}
	f.pending(1, map[string]int64{"bob": 1})
}

// testExpiryAndSweep: expiry is decided against the clock, and the sweep
// counts each expired pending request out exactly once, also when a
// decision came after its expiry.
func testExpiryAndSweep(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	t0 := f.clock.Now()
	a1 := f.create("a1", request(t0, "alice", time.Minute), nil, store.UserLimit{})
	a2 := f.create("a2", request(t0, "alice", 2*time.Minute), nil, store.UserLimit{})
	f.create("b1", request(t0, "bob", 10*time.Minute), nil, store.UserLimit{})
	f.create("n1", request(t0, "", time.Minute), nil, store.UserLimit{})
	dec := request(t0, "carol", time.Minute)
	dec.Status = store.StatusApproved
	f.create("c1", dec, nil, store.UserLimit{})
	users := map[string]int64{"alice": 2, "bob": 1, "carol": 0, "": 0}
	f.pending(4, users)

	sweep := func(now time.Time, want int) {
		t.Helper()
		if n, err := s.SweepExpired(ctx, now); err != nil || n != want {
			t.Errorf("SweepExpired(%v) = %d, %v; want %d", now.Sub(t0), n, err, want)
		}
	}
	sweep(t0, 0)
	sweep(t0.Add(time.Minute-1), 0)
	f.pending(4, users)

	// At its expiry a request is expired, still stored, still counted
	// until the sweep, which counts each once.
	f.clock.Advance(time.Minute)
	now := f.clock.Now()
	if r := f.get(a1); !r.Expired(now) || r.Status != store.StatusPending {
		t.Errorf("at its expiry: %+v", r)
	}
	f.pending(4, users)
	sweep(now, 2) // a1 and n1, expiring exactly now
	sweep(now, 0)
	f.pending(2, map[string]int64{"alice": 1, "bob": 1})
	if _, err := s.Get(ctx, a1); err != nil {
		t.Errorf("Get of a swept request: %v", err)
	}

	// Decided after its expiry but before the sweep: counted out once.
	f.clock.Advance(time.Minute)
	f.setStatus(a2, store.StatusDenied)
	f.pending(1, map[string]int64{"alice": 0, "bob": 1})
	sweep(f.clock.Now(), 0)
	// Decided after the sweep: not counted out again.
	f.setStatus(a1, store.StatusDenied)
	f.pending(1, map[string]int64{"alice": 0, "bob": 1})

	f.clock.Advance(10 * time.Minute)
	sweep(f.clock.Now(), 1)
	f.pending(0, map[string]int64{"alice": 0, "bob": 0})
}

// testKeptThroughGrace: a request and its link are kept at least Grace
// after the request expired.
func testKeptThroughGrace(t *testing.T, f *fixture) {
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	link := store.LinkKeyOf("link")
	key := f.create("r", request(t0, "alice", time.Minute), &store.Outbound{Links: []store.LinkKey{link}}, store.UserLimit{})
	f.clock.Advance(time.Minute + store.Grace - time.Second)
	if _, err := s.SweepExpired(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Get(ctx, key); err != nil || !r.Expired(f.clock.Now()) {
		t.Errorf("Get within Grace of the expiry = %+v, %v", r, err)
	}
	if k, err := s.Link(ctx, link); err != nil || k != key {
		t.Errorf("Link within Grace of the expiry = %s, %v", k.Short(), err)
	}
}
