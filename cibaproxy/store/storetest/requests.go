package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// fullRequest returns a decided request with every field set.
func fullRequest(now time.Time) *store.AuthRequest {
	return &store.AuthRequest{
		ClientID: "client-full",
		User: store.User{Username: "alice", Email: "alice@example.com", Subject: "alice-sub", Name: "Alice É",
			UserCodeHash: "$2a$10$never.stored"},
		Scopes:         []string{"openid", "email"},
		BindingMessage: "W4-9X ✓",
		ACRValues:      []string{"urn:a", "urn:b"},
		Created:        now.Add(123),
		Expires:        now.Add(5*time.Minute + 456),
		Interval:       7 * time.Second,
		Status:         store.StatusApproved,
		Decided:        now.Add(time.Minute),
		Claim:          "claim-1",
		ClaimUntil:     now.Add(2 * time.Minute),
		ACR:            "urn:acr",
		AMR:            []string{"email", "otp"},
		Ping:           []byte{0, 1, 2, 255},
	}
}

// testCreateGet: a request reads back as created (but for the user code
// hash, which is never stored), the store keeps its own copy, and a second
// Create under the same key changes nothing.
func testCreateGet(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	key := store.KeyOf("full")
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a missing request: %v, want ErrNotFound", err)
	}
	in := fullRequest(now)
	if err := s.Create(ctx, key, in, nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	want := fullRequest(now)
	want.User.UserCodeHash = ""
	got := f.get(key)
	sameRequest(t, "Get after Create", got, want)

	// Changing what Create was given, or what Get returned, changes
	// nothing stored.
	in.ClientID, in.Scopes[0] = "changed", "changed"
	got.User.Email, got.AMR[0], got.Ping[0] = "changed", "changed", 9
	sameRequest(t, "Get after changing the caller's copies", f.get(key), want)

	// A decided request is not pending.
	f.pending(0, map[string]int64{"alice-sub": 0})

	// A second Create under a key in use: ErrExists, and nothing of it is
	// kept, neither the request nor its links and items nor a count.
	pend := f.create("pending", request(now, "bob", time.Minute), nil, store.UserLimit{})
	f.pending(1, map[string]int64{"bob": 1})
	for _, k := range []store.RequestKey{key, pend} {
		dup := request(now, "bob", time.Hour)
		dup.ClientID = "other"
		out := &store.Outbound{
			Links: []store.LinkKey{store.LinkKeyOf("dup-link")},
			Items: []*store.OutboxItem{item(KindA, k, "dup", now)},
		}
		if err := s.Create(ctx, k, dup, out, store.UserLimit{}); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second Create under %s: %v, want ErrExists", k.Short(), err)
		}
	}
	sameRequest(t, "Get after a refused Create", f.get(key), want)
	if got := f.get(pend); got.ClientID != "client-1" || !got.Expires.Equal(now.Add(time.Minute)) {
		t.Errorf("a refused Create changed the pending request: %+v", got)
	}
	if _, err := s.Link(ctx, store.LinkKeyOf("dup-link")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the link of a refused Create: %v, want ErrNotFound", err)
	}
	if n := len(f.items()); n != 0 {
		t.Errorf("%d items queued by refused Creates, want 0", n)
	}
	f.pending(1, map[string]int64{"bob": 1})
}

// testCreateOutbound: the links and items of a request are stored with it.
func testCreateOutbound(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	key := store.KeyOf("with-outbound")
	r := request(now, "alice", 5*time.Minute)
	a, b := item(KindA, key, "mail", now), item(KindB, key, "device", now.Add(time.Second))
	a.NotAfter, b.NotAfter = r.Expires, r.Expires
	l1, l2 := store.LinkKeyOf("link-1"), store.LinkKeyOf("link-2")
	out := &store.Outbound{Links: []store.LinkKey{l1, l2}, Items: []*store.OutboxItem{a, b}}
	if err := s.Create(ctx, key, r, out, store.UserLimit{Max: 1}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []store.LinkKey{l1, l2} {
		if k, err := s.Link(ctx, l); err != nil || k != key {
			t.Errorf("Link = %s, %v; want %s", k.Short(), err, key.Short())
		}
	}
	items := f.items()
	if len(items) != 2 {
		t.Fatalf("%d items queued, want 2", len(items))
	}
	wa, wb := item(KindA, key, "mail", now), item(KindB, key, "device", now.Add(time.Second))
	wa.NotAfter, wb.NotAfter = r.Expires, r.Expires
	sameItem(t, "the first item", items[a.ID], wa)
	sameItem(t, "the second item", items[b.ID], wb)
	counts, err := s.OutboxCounts(ctx)
	if err != nil || counts[KindA] != 1 || counts[KindB] != 1 || len(counts) != 2 {
		t.Errorf("OutboxCounts = %v, %v; want one of each kind", counts, err)
	}
	f.pending(1, map[string]int64{"alice": 1})
}

// limited creates, under the key of name, a pending request of subject
// with an item of each kind and a link, and moves the clock a second on.
func (f *fixture) limited(name, subject string, limit store.UserLimit) (store.RequestKey, error) {
	now := f.clock.Now()
	key := store.KeyOf(name)
	r := request(now, subject, 5*time.Minute)
	out := &store.Outbound{
		Links: []store.LinkKey{store.LinkKeyOf("link-" + name)},
		Items: []*store.OutboxItem{item(KindA, key, name, now), item(KindB, key, name, now)},
	}
	f.clock.Advance(time.Second)
	return key, f.s.Create(f.ctx, key, r, out, limit)
}

// testUserLimitRefuses: beyond the limit a request is refused whole;
// other users and requests without a user are not limited, and a decision
// frees a place.
func testUserLimitRefuses(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	limit := store.UserLimit{Max: 2}
	mustCreate := func(name, subject string) store.RequestKey {
		t.Helper()
		k, err := f.limited(name, subject, limit)
		if err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		return k
	}
	mustCreate("a1", "alice")
	a2 := mustCreate("a2", "alice")
	a3, err := f.limited("a3", "alice", limit)
	if !errors.Is(err, store.ErrUserLimit) {
		t.Fatalf("a third request of alice: %v, want ErrUserLimit", err)
	}
	if _, err := s.Get(ctx, a3); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused request: %v, want ErrNotFound", err)
	}
	if _, err := s.Link(ctx, store.LinkKeyOf("link-a3")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused request's link: %v, want ErrNotFound", err)
	}
	for id := range f.items() {
		if id.Request == a3 {
			t.Errorf("the refused request's item of kind %v is queued", id.Kind)
		}
	}
	f.pending(2, map[string]int64{"alice": 2})

	mustCreate("b1", "bob")
	for _, name := range []string{"n1", "n2", "n3"} {
		mustCreate(name, "")
	}
	f.pending(6, map[string]int64{"alice": 2, "bob": 1, "": 0})

	f.setStatus(a2, store.StatusDenied)
	f.pending(5, map[string]int64{"alice": 1})
	mustCreate("a4", "alice")
	f.pending(6, map[string]int64{"alice": 2})
	if _, err := f.limited("a5", "alice", limit); !errors.Is(err, store.ErrUserLimit) {
		t.Errorf("alice at her limit again: %v, want ErrUserLimit", err)
	}
	if n := len(f.items()); n != 2*7 {
		t.Errorf("%d items queued, want 14 (two for each of the 7 requests created)", n)
	}
}

// testUserLimitReplacesOldest: with ReplaceOldest a request beyond the
// limit expires the user's oldest pending one at once, drops its queued
// items of every kind, and counts it out once.
func testUserLimitReplacesOldest(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	replace := store.UserLimit{Max: 2, ReplaceOldest: true}
	mustCreate := func(name, subject string) (store.RequestKey, time.Time) {
		t.Helper()
		created := f.clock.Now()
		k, err := f.limited(name, subject, replace)
		if err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		return k, created
	}
	a1, _ := mustCreate("a1", "alice")
	a2, _ := mustCreate("a2", "alice")
	b1, _ := mustCreate("b1", "bob")
	a2Expires := f.get(a2).Expires
	a3, a3Created := mustCreate("a3", "alice")

	old := f.get(a1)
	if old.Status != store.StatusPending || !old.Expired(f.clock.Now()) || old.Expires.After(a3Created) {
		t.Errorf("the replaced request is %v, expires %v: want pending and expired when its replacement was made (%v)",
			old.Status, old.Expires, a3Created)
	}
	if got := f.get(a2); got.Expired(f.clock.Now()) || !got.Expires.Equal(a2Expires) {
		t.Errorf("the second oldest request was changed: expires %v, want %v", got.Expires, a2Expires)
	}
	checkItems := func(gone store.RequestKey, kept ...store.RequestKey) {
		t.Helper()
		items := f.items()
		for id := range items {
			if id.Request == gone {
				t.Errorf("the replaced request's item of kind %v is still queued", id.Kind)
			}
		}
		for _, k := range kept {
			for _, kind := range []store.Kind{KindA, KindB} {
				if items[store.ItemID{Kind: kind, Request: k}] == nil {
					t.Errorf("the item of kind %v of %s went with the replaced request", kind, k.Short())
				}
			}
		}
		if len(items) != 2*len(kept) {
			t.Errorf("%d items queued, want %d", len(items), 2*len(kept))
		}
	}
	checkItems(a1, a2, b1, a3)
	f.pending(3, map[string]int64{"alice": 2, "bob": 1})

	// Counted out once: neither the sweep of its expiry nor a decision
	// counts it again.
	if n, err := s.SweepExpired(ctx, f.clock.Now()); err != nil || n != 0 {
		t.Errorf("SweepExpired after the replacement = %d, %v; want 0", n, err)
	}
	f.setStatus(a1, store.StatusDenied)
	f.pending(3, map[string]int64{"alice": 2, "bob": 1})

	// The next replacement takes the next oldest.
	a4, _ := mustCreate("a4", "alice")
	if !f.get(a2).Expired(f.clock.Now()) {
		t.Error("the second replacement did not expire the oldest pending request")
	}
	if f.get(a3).Expired(f.clock.Now()) {
		t.Error("the second replacement expired a newer request")
	}
	checkItems(a2, b1, a3, a4)
	f.pending(3, map[string]int64{"alice": 2, "bob": 1})
}

// testUpdate: Update writes what fn leaves, or nothing when fn fails, and
// keeps the pending counts.
func testUpdate(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	missing := store.KeyOf("missing")
	called := false
	if _, err := s.Update(ctx, missing, func(*store.AuthRequest) error { called = true; return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update of a missing request: %v, want ErrNotFound", err)
	}
	if called {
		t.Error("Update called fn for a missing request")
	}

	key := f.create("r", request(now, "alice", 5*time.Minute), nil, store.UserLimit{})
	boom := errors.New("boom")
	_, err := s.Update(ctx, key, func(r *store.AuthRequest) error {
		r.Status, r.Interval, r.Claim = store.StatusApproved, time.Hour, "x"
		return boom
	})
	if err != boom { // "returned as is": not wrapped
		t.Errorf("Update whose fn failed returned %v, want fn's error as is", err)
	}
	if got := f.get(key); got.Status != store.StatusPending || got.Interval != 5*time.Second || got.Claim != "" {
		t.Errorf("an aborted Update wrote: %+v", got)
	}
	f.pending(1, map[string]int64{"alice": 1})

	got, err := s.Update(ctx, key, func(r *store.AuthRequest) error {
		r.Interval += 5 * time.Second
		return nil
	})
	if err != nil || got == nil || got.Interval != 10*time.Second || got.Status != store.StatusPending {
		t.Fatalf("Update = %+v, %v; want the request as written", got, err)
	}
	if r := f.get(key); r.Interval != 10*time.Second {
		t.Errorf("Get after Update: interval %v, want 10s", r.Interval)
	}
	f.pending(1, map[string]int64{"alice": 1})

	// A decision stops counting the request, once.
	f.setStatus(key, store.StatusApproved)
	f.pending(0, map[string]int64{"alice": 0})
	f.setStatus(key, store.StatusConsumed)
	f.pending(0, map[string]int64{"alice": 0})
	if r := f.get(key); r.Status != store.StatusConsumed || r.Interval != 10*time.Second {
		t.Errorf("after the decisions: %+v", r)
	}

	// A request created decided is never counted.
	dec := request(now, "bob", time.Minute)
	dec.Status = store.StatusDenied
	k2 := f.create("created-denied", dec, nil, store.UserLimit{})
	f.pending(0, map[string]int64{"bob": 0})
	f.setStatus(k2, store.StatusConsumed)
	f.pending(0, map[string]int64{"bob": 0})
}

// testUpdateQueue: the items fn returns are queued in the same
// transaction, under the request's key, or not at all.
func testUpdateQueue(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	missing := store.KeyOf("missing")
	_, err := s.UpdateQueue(ctx, missing, func(*store.AuthRequest) ([]*store.OutboxItem, error) {
		return []*store.OutboxItem{item(KindA, missing, "x", now)}, nil
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateQueue of a missing request: %v, want ErrNotFound", err)
	}

	key := f.create("r", request(now, "alice", 5*time.Minute), nil, store.UserLimit{})
	elsewhere := store.KeyOf("elsewhere")
	boom := errors.New("boom")
	_, err = s.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) {
		r.Status = store.StatusApproved
		return []*store.OutboxItem{item(KindA, key, "x", now)}, boom
	})
	if err != boom { // "returned as is": not wrapped
		t.Errorf("UpdateQueue whose fn failed returned %v, want fn's error as is", err)
	}
	if n := len(f.items()); n != 0 || f.get(key).Status != store.StatusPending {
		t.Errorf("an aborted UpdateQueue wrote: %d items, status %v", n, f.get(key).Status)
	}

	// The items' Request is set to the key, whatever it was.
	got, err := s.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) {
		r.Status, r.Decided = store.StatusApproved, now
		return []*store.OutboxItem{item(KindA, store.RequestKey{}, "ping", now), item(KindB, elsewhere, "device", now)}, nil
	})
	if err != nil || got == nil || got.Status != store.StatusApproved || !got.Decided.Equal(now) {
		t.Fatalf("UpdateQueue = %+v, %v", got, err)
	}
	items := f.items()
	if len(items) != 2 {
		t.Errorf("%d items queued, want 2", len(items))
	}
	sameItem(t, "the first item", items[store.ItemID{Kind: KindA, Request: key}], item(KindA, key, "ping", now))
	sameItem(t, "the second item", items[store.ItemID{Kind: KindB, Request: key}], item(KindB, key, "device", now))
	f.pending(0, map[string]int64{"alice": 0})

	// An item of the same ID replaces the queued one; no items, no change.
	if _, err := s.UpdateQueue(ctx, key, func(*store.AuthRequest) ([]*store.OutboxItem, error) {
		return []*store.OutboxItem{item(KindB, key, "device-2", now.Add(time.Second))}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateQueue(ctx, key, func(*store.AuthRequest) ([]*store.OutboxItem, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	items = f.items()
	if len(items) != 2 {
		t.Errorf("%d items queued, want 2", len(items))
	}
	sameItem(t, "the replaced item", items[store.ItemID{Kind: KindB, Request: key}], item(KindB, key, "device-2", now.Add(time.Second)))
	sameItem(t, "the other item", items[store.ItemID{Kind: KindA, Request: key}], item(KindA, key, "ping", now))
}

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

// testLinks: a link leads to its request; an unknown one is ErrNotFound.
func testLinks(t *testing.T, f *fixture) {
	ctx, s, now := f.ctx, f.s, f.clock.Now()
	l1, l2 := store.LinkKeyOf("token-1"), store.LinkKeyOf("token-2")
	if _, err := s.Link(ctx, l1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Link of an unknown link: %v, want ErrNotFound", err)
	}
	k1, k2 := store.KeyOf("r1"), store.KeyOf("r2")
	if err := s.AddLink(ctx, l1, k1, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddLink(ctx, l2, k2, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if k, err := s.Link(ctx, l1); err != nil || k != k1 {
		t.Errorf("Link(1) = %s, %v; want %s", k.Short(), err, k1.Short())
	}
	if k, err := s.Link(ctx, l2); err != nil || k != k2 {
		t.Errorf("Link(2) = %s, %v; want %s", k.Short(), err, k2.Short())
	}
	if _, err := s.Link(ctx, store.LinkKeyOf("token-3")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Link of another unknown link: %v, want ErrNotFound", err)
	}
}

// testPeekPending: a store that keeps pending requests in memory never
// answers stale: not after a decision, a replacement, an update, or the
// expiry, and never for an unknown request.
func testPeekPending(t *testing.T, f *fixture) {
	hs := f.handles()
	var peekers []store.PendingPeeker
	for _, h := range hs {
		if p, ok := h.(store.PendingPeeker); ok {
			peekers = append(peekers, p)
		}
	}
	if len(peekers) == 0 {
		t.Skip("the store keeps no pending state in memory")
	}
	t0 := f.clock.Now()
	r := request(t0, "alice", 5*time.Minute)
	key := f.create("r", r, nil, store.UserLimit{Max: 1, ReplaceOldest: true})
	// peek checks every peeker: false, or the state want (nil: false).
	peek := func(what string, key store.RequestKey, now time.Time, want *store.PendingState) {
		t.Helper()
		for _, p := range peekers {
			st, ok := p.PeekPending(key, now)
			if !ok {
				continue
			}
			if want == nil {
				t.Errorf("%s: PeekPending = %+v, want false", what, st)
			} else if st.ClientID != want.ClientID || !st.Expires.Equal(want.Expires) || st.Interval != want.Interval {
				t.Errorf("%s: PeekPending = %+v, want %+v", what, st, *want)
			}
		}
	}
	for _, h := range hs {
		if _, err := h.Get(f.ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	peek("after Create", key, t0, &store.PendingState{ClientID: "client-1", Expires: r.Expires, Interval: 5 * time.Second})
	peek("an unknown request", store.KeyOf("unknown"), t0, nil)
	peek("at the expiry", key, r.Expires, nil)

	if _, err := f.s.Update(f.ctx, key, func(r *store.AuthRequest) error { r.Interval = 10 * time.Second; return nil }); err != nil {
		t.Fatal(err)
	}
	peek("after an update", key, t0, &store.PendingState{ClientID: "client-1", Expires: r.Expires, Interval: 10 * time.Second})

	f.clock.Advance(time.Second)
	repl := f.create("replacement", request(f.clock.Now(), "alice", 5*time.Minute), nil, store.UserLimit{Max: 1, ReplaceOldest: true})
	peek("after its replacement", key, f.clock.Now(), nil)
	for _, h := range hs {
		if _, err := h.Get(f.ctx, repl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := decide(f, hs[len(hs)-1], repl, true, f.clock.Now(), "note"); err != nil {
		t.Fatal(err)
	}
	peek("after a decision", repl, f.clock.Now(), nil)
	for _, h := range hs {
		if _, err := h.Get(f.ctx, repl); err != nil {
			t.Fatal(err)
		}
	}
	peek("after a read of the decided request", repl, f.clock.Now(), nil)
}
