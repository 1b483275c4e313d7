package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// reopen closes the fixture's store and opens its data again.
func (f *fixture) reopen() {
	f.t.Helper()
	if err := f.s.Close(); err != nil {
		f.t.Fatalf("Close: %v", err)
	}
	s := f.e.Reopen(f.t, f.s, f.clock.Now)
	if s == nil {
		f.t.Fatal("Engine.Reopen returned nil")
	}
	f.s, f.peer = s, nil
}

// testPersistence: what a store holds is there after a restart, the
// pending counts exact without a scan.
func testPersistence(t *testing.T, f *fixture) {
	if f.e.Reopen == nil {
		t.Skip("the engine does not reopen its data")
	}
	ctx, t0 := f.ctx, f.clock.Now()
	l1, l2 := store.LinkKeyOf("link-1"), store.LinkKeyOf("link-2")
	kFull := f.create("full", fullRequest(t0), &store.Outbound{Links: []store.LinkKey{l1}}, store.UserLimit{})
	kA := store.KeyOf("alice")
	f.create("alice", request(t0, "alice", 5*time.Minute),
		&store.Outbound{Items: []*store.OutboxItem{item(KindA, kA, "mail", t0)}}, store.UserLimit{Max: 1})
	kN := f.create("nobody", request(t0, "", time.Minute), nil, store.UserLimit{})
	kB := f.create("bob", request(t0, "bob", 10*time.Minute), nil, store.UserLimit{})
	f.setStatus(kB, store.StatusApproved)
	if err := f.s.AddLink(ctx, l2, kB, t0.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	retried := store.ItemID{Kind: KindB, Request: kA}
	if err := f.s.Enqueue(ctx, item(KindB, kA, "device", t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.LeaseItem(ctx, retried, t0, t0.Add(store.MaxItemLease)); err != nil {
		t.Fatal(err)
	}
	if err := f.s.RetryItem(ctx, retried, t0.Add(time.Minute), "503"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.PutSetting(ctx, "token_path", []byte("/token")); err != nil {
		t.Fatal(err)
	}
	if fresh, err := f.s.Remember(ctx, "client-assertion", "jti-1", t0.Add(time.Hour)); err != nil || !fresh {
		t.Fatalf("Remember = %v, %v", fresh, err)
	}
	f.pending(2, map[string]int64{"alice": 1, "bob": 0})

	f.reopen()
	want := fullRequest(t0)
	want.User.UserCodeHash = ""
	if f.e.VoidsClaims {
		want.Claim, want.ClaimUntil = "", time.Time{}
	}
	sameRequest(t, "the full request after a reopen", f.get(kFull), want)
	sameRequest(t, "alice's request after a reopen", f.get(kA), request(t0, "alice", 5*time.Minute))
	sameRequest(t, "the request without a user after a reopen", f.get(kN), request(t0, "", time.Minute))
	if got := f.get(kB); got.Status != store.StatusApproved {
		t.Errorf("bob's request after a reopen: %v, want approved", got.Status)
	}
	for l, want := range map[store.LinkKey]store.RequestKey{l1: kFull, l2: kB} {
		if k, err := f.s.Link(ctx, l); err != nil || k != want {
			t.Errorf("Link after a reopen = %s, %v; want %s", k.Short(), err, want.Short())
		}
	}
	f.pending(2, map[string]int64{"alice": 1, "bob": 0, "": 0})
	items := f.items()
	if len(items) != 2 {
		t.Errorf("%d items after a reopen, want 2", len(items))
	}
	sameItem(t, "the mail after a reopen", items[store.ItemID{Kind: KindA, Request: kA}], item(KindA, kA, "mail", t0))
	wantRetried := item(KindB, kA, "device", t0.Add(time.Minute))
	wantRetried.NotAfter, wantRetried.Attempts, wantRetried.LastError = t0.Add(time.Hour), 1, "503"
	sameItem(t, "the retried item after a reopen", items[retried], wantRetried)
	if counts, err := f.s.OutboxCounts(ctx); err != nil || counts[KindA] != 1 || counts[KindB] != 1 {
		t.Errorf("OutboxCounts after a reopen = %v, %v", counts, err)
	}
	f.setting("token_path", []byte("/token"))
	if fresh, err := f.s.Remember(ctx, "client-assertion", "jti-1", t0.Add(time.Hour)); err != nil || fresh {
		t.Errorf("Remember after a reopen = %v, %v; want not new", fresh, err)
	}

	// The counts go on from where they were.
	if err := f.s.Create(ctx, store.KeyOf("alice-2"), request(t0, "alice", time.Minute), nil, store.UserLimit{Max: 1}); !errors.Is(err, store.ErrUserLimit) {
		t.Errorf("alice at her limit after a reopen: %v, want ErrUserLimit", err)
	}
	f.clock.Advance(time.Minute)
	if n, err := f.s.SweepExpired(ctx, f.clock.Now()); err != nil || n != 1 {
		t.Errorf("SweepExpired after a reopen = %d, %v; want 1", n, err)
	}
	f.setStatus(kA, store.StatusDenied)
	f.pending(0, map[string]int64{"alice": 0})
	f.reopen()
	f.pending(0, map[string]int64{"alice": 0, "bob": 0})
	if n, err := f.s.SweepExpired(ctx, f.clock.Now()); err != nil || n != 0 {
		t.Errorf("SweepExpired after a second reopen = %d, %v; want 0", n, err)
	}
}

// testSharedStore: two stores on the same data (two processes) see each
// other's writes, leases included, and closing one leaves the other open.
func testSharedStore(t *testing.T, f *fixture) {
	if f.e.Share == nil {
		t.Skip("the engine is opened by one process at a time")
	}
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	p := f.handles()[1]
	link := store.LinkKeyOf("link")
	key := f.create("r", request(t0, "alice", 5*time.Minute), &store.Outbound{Links: []store.LinkKey{link}}, store.UserLimit{})
	if r, err := p.Get(ctx, key); err != nil || r.User.Subject != "alice" {
		t.Errorf("Get through the other store = %+v, %v", r, err)
	}
	if k, err := p.Link(ctx, link); err != nil || k != key {
		t.Errorf("Link through the other store = %s, %v", k.Short(), err)
	}
	checkPending(ctx, t, p, 1, map[string]int64{"alice": 1})
	if _, err := decide(f, p, key, true, t0, "note"); err != nil {
		t.Fatal(err)
	}
	if r := f.get(key); r.Status != store.StatusApproved {
		t.Errorf("a decision through the other store reads %v", r.Status)
	}
	f.pending(0, map[string]int64{"alice": 0})

	id := store.ItemID{Kind: KindB, Request: key}
	if due, _, err := s.DueItems(ctx, t0, 10, store.DueFilter{}); err != nil || len(due) != 1 || due[0].ID != id {
		t.Fatalf("DueItems of the item queued through the other store = %v, %v", ids(due), err)
	}
	if _, err := s.LeaseItem(ctx, id, t0, t0.Add(store.MaxItemLease)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.LeaseItem(ctx, id, t0, t0.Add(store.MaxItemLease)); !errors.Is(err, store.ErrNotDue) {
		t.Errorf("LeaseItem of an item the other store leased: %v, want ErrNotDue", err)
	}

	if err := s.PutSetting(ctx, "a", []byte("v")); err != nil {
		t.Fatal(err)
	}
	checkSetting(t, p, "a", []byte("v"))
	if fresh, err := s.Remember(ctx, "ns", "id", t0.Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("Remember = %v, %v", fresh, err)
	}
	if fresh, err := p.Remember(ctx, "ns", "id", t0.Add(time.Minute)); err != nil || fresh {
		t.Errorf("Remember through the other store = %v, %v; want not new", fresh, err)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, key); err != nil {
		t.Errorf("Get after the other store closed: %v", err)
	}
}
