package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The per-user limit of undecided requests (store.UserLimit): refusing,
// and replacing the oldest.

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

// testUserLimitCountAs: a request with CountAs counts against it, not
// against its user's subject: in the limit, in UserPending, and when it
// leaves the count by a decision, a replacement or its expiry; CountAs is
// stored with the request.
func testUserLimitCountAs(t *testing.T, f *fixture) {
	ctx, s := f.ctx, f.s
	create := func(name, subject, countAs string, limit store.UserLimit) (store.RequestKey, error) {
		key := store.KeyOf(name)
		r := request(f.clock.Now(), subject, 5*time.Minute)
		r.CountAs = countAs
		f.clock.Advance(time.Second)
		return key, s.Create(ctx, key, r, nil, limit)
	}
	limit := store.UserLimit{Max: 2}
	mustCreate := func(name, subject, countAs string, limit store.UserLimit) store.RequestKey {
		t.Helper()
		k, err := create(name, subject, countAs, limit)
		if err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		return k
	}
	a1 := mustCreate("a1", "alice", "name-a", limit)
	mustCreate("a2", "alice", "name-a", limit)
	mustCreate("b1", "alice", "name-b", limit) // the same subject, another name
	if _, err := create("c1", "carol", "name-a", limit); !errors.Is(err, store.ErrUserLimit) {
		t.Errorf("another subject counted as name-a, at its limit: %v, want ErrUserLimit", err)
	}
	mustCreate("c2", "carol", "", limit) // counted by subject
	f.pending(4, map[string]int64{"name-a": 2, "name-b": 1, "alice": 0, "carol": 1})
	if got := f.get(a1).CountAs; got != "name-a" {
		t.Errorf("stored CountAs %q, want name-a", got)
	}

	f.setStatus(a1, store.StatusApproved)
	f.pending(3, map[string]int64{"name-a": 1, "name-b": 1})
	mustCreate("a3", "alice", "name-a", limit)
	a4 := mustCreate("a4", "dave", "name-a", store.UserLimit{Max: 2, ReplaceOldest: true})
	if !f.get(store.KeyOf("a2")).Expired(f.clock.Now()) {
		t.Error("the replacement counted as name-a did not expire the oldest request counted as name-a")
	}
	if f.get(store.KeyOf("b1")).Expired(f.clock.Now()) {
		t.Error("the replacement counted as name-a expired a request counted as name-b")
	}
	f.pending(4, map[string]int64{"name-a": 2, "name-b": 1, "dave": 0})

	f.clock.Advance(10 * time.Minute)
	if _, err := s.SweepExpired(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	f.pending(0, map[string]int64{"name-a": 0, "name-b": 0, "carol": 0})
	if got := f.get(a4).CountAs; got != "name-a" {
		t.Errorf("stored CountAs %q after the sweep, want name-a", got)
	}
}
