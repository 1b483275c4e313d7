package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// testOutboxEnqueue: an item reads back as queued; one of the same ID
// replaces it, its place in the queue with it; kinds are distinct IDs.
func testOutboxEnqueue(t *testing.T, f *fixture) {
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	key := store.KeyOf("r")
	id := store.ItemID{Kind: KindA, Request: key}
	want := &store.OutboxItem{ID: id, Sender: "sender-1", Payload: []byte{0, 1, 255, '{'}, NotAfter: t0.Add(time.Hour + 7),
		Next: t0.Add(3), Attempts: 2, LastError: "421 try later"}
	if err := s.Enqueue(ctx, want); err != nil {
		t.Fatal(err)
	}
	items := f.items()
	if len(items) != 1 {
		t.Fatalf("%d items queued, want 1", len(items))
	}
	sameItem(t, "the queued item", items[id], want)

	// Replaced by an item of the same ID, due later: the first version is
	// gone, from the queue too.
	v2 := item(KindA, key, "v2", t0.Add(10*time.Minute))
	if err := s.Enqueue(ctx, v2); err != nil {
		t.Fatal(err)
	}
	items = f.items()
	if len(items) != 1 {
		t.Fatalf("%d items after a replacement, want 1", len(items))
	}
	sameItem(t, "the replacing item", items[id], item(KindA, key, "v2", t0.Add(10*time.Minute)))
	due, next := f.due(t0.Add(time.Second), 10, store.DueFilter{})
	if len(due) != 0 || !next.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("DueItems after the replacement = %d items, next %v; want none, next at the new time", len(due), next)
	}

	// Another kind of the same request is another item.
	if err := s.Enqueue(ctx, item(KindB, key, "other", t0)); err != nil {
		t.Fatal(err)
	}
	items = f.items()
	if len(items) != 2 || string(items[store.ItemID{Kind: KindB, Request: key}].Payload) != "other" ||
		string(items[id].Payload) != "v2" {
		t.Errorf("items of two kinds of one request: %v", items)
	}
}

// testOutboxDueItems: DueItems returns the due items earliest first, up
// to limit of those accept takes, and when the next one falls due.
func testOutboxDueItems(t *testing.T, f *fixture) {
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	if due, next := f.due(t0, 10, store.DueFilter{}); len(due) != 0 || !next.IsZero() {
		t.Errorf("DueItems of an empty outbox = %d items, next %v; want none, zero", len(due), next)
	}
	var all []store.ItemID
	for i := range 5 {
		all = append(all, store.ItemID{Kind: KindA, Request: store.KeyOf(string(rune('a' + i)))})
	}
	for _, i := range []int{4, 1, 3, 0, 2} { // queued out of order
		it := item(KindA, all[i].Request, "", t0.Add(time.Duration(i)*time.Second))
		if err := s.Enqueue(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, now time.Time, limit int, filter store.DueFilter, want []store.ItemID, wantNext time.Time) {
		t.Helper()
		due, next := f.due(now, limit, filter)
		if got := ids(due); !slices.Equal(got, want) {
			t.Errorf("%s: DueItems returned items %v, want %v", what, names(all, got), names(all, want))
		}
		if !next.Equal(wantNext) {
			t.Errorf("%s: next %v, want %v", what, next, wantNext)
		}
		for _, it := range due {
			if it.Sender != "sender-1" || !it.NotAfter.Equal(it.Next.Add(time.Hour)) {
				t.Errorf("%s: item read as %+v", what, *it)
			}
		}
	}
	every := store.DueFilter{}
	check("before any is due", t0.Add(-time.Second), 10, every, nil, t0)
	check("three due", t0.Add(2*time.Second), 10, every, all[:3], t0.Add(3*time.Second))
	check("three due, limit 2", t0.Add(2*time.Second), 2, every, all[:2], t0.Add(2*time.Second))
	check("all due", t0.Add(10*time.Second), 10, every, all, time.Time{})
	refuse := store.DueFilter{Accept: func(it *store.OutboxItem) bool { return it.ID != all[0] && it.ID != all[2] }}
	check("accept refuses two", t0.Add(10*time.Second), 2, refuse, []store.ItemID{all[1], all[3]}, t0.Add(10*time.Second))
	check("accept refuses two, no limit reached", t0.Add(10*time.Second), 10, refuse, []store.ItemID{all[1], all[3], all[4]}, time.Time{})
	check("the refused ones are still due", t0.Add(10*time.Second), 10, every, all, time.Time{})
	// Skip leaves items out by their ID, before they are read: they do
	// not count against the limit, and Accept is not asked about them.
	asked := map[store.ItemID]bool{}
	skip := store.DueFilter{
		Skip:   func(id store.ItemID) bool { return id == all[0] || id == all[1] },
		Accept: func(it *store.OutboxItem) bool { asked[it.ID] = true; return true },
	}
	check("skip leaves two out, limit 2", t0.Add(10*time.Second), 2, skip, []store.ItemID{all[2], all[3]}, t0.Add(10*time.Second))
	if asked[all[0]] || asked[all[1]] {
		t.Errorf("DueItems asked Accept about skipped items: %v", asked)
	}
	check("skip leaves two out, no limit reached", t0.Add(10*time.Second), 10, skip, all[2:], time.Time{})
	check("the skipped ones are still due", t0.Add(10*time.Second), 10, every, all, time.Time{})
}

// names names the IDs by their place in all, for messages.
func names(all, got []store.ItemID) []int {
	out := make([]int, len(got))
	for i, id := range got {
		out[i] = slices.Index(all, id)
	}
	return out
}

// testOutboxLeaseRetry: a lease takes a due item for a while, counting an
// attempt; a retry releases it until its next time; both fail with
// ErrNotFound once the item is gone.
func testOutboxLeaseRetry(t *testing.T, f *fixture) {
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	id := store.ItemID{Kind: KindA, Request: store.KeyOf("r")}
	missing := store.ItemID{Kind: KindB, Request: store.KeyOf("r")}
	if _, err := s.LeaseItem(ctx, missing, t0, t0.Add(store.MaxItemLease)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LeaseItem of a missing item: %v, want ErrNotFound", err)
	}
	if err := s.RetryItem(ctx, missing, t0, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetryItem of a missing item: %v, want ErrNotFound", err)
	}
	if err := s.Enqueue(ctx, item(KindA, id.Request, "p", t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LeaseItem(ctx, id, t0.Add(-time.Second), t0.Add(time.Second)); !errors.Is(err, store.ErrNotDue) {
		t.Errorf("LeaseItem before the item is due: %v, want ErrNotDue", err)
	}
	lease := t0.Add(store.MaxItemLease)
	got, err := s.LeaseItem(ctx, id, t0, lease)
	if err != nil || got == nil || got.Attempts != 1 || !got.LeaseUntil.Equal(lease) || string(got.Payload) != "p" || got.ID != id {
		t.Fatalf("LeaseItem = %+v, %v; want the item, leased, one attempt", got, err)
	}
	if _, err := s.LeaseItem(ctx, id, t0.Add(time.Second), t0.Add(time.Minute)); !errors.Is(err, store.ErrNotDue) {
		t.Errorf("LeaseItem of a leased item: %v, want ErrNotDue", err)
	}
	if due, next := f.due(t0.Add(time.Second), 10, store.DueFilter{}); len(due) != 0 || !next.Equal(lease) {
		t.Errorf("DueItems while leased = %d items, next %v; want none, next at the lease's end", len(due), next)
	}
	if it := f.items()[id]; it == nil || it.Attempts != 1 || !it.LeaseUntil.Equal(lease) {
		t.Errorf("the leased item reads %+v", it)
	}

	// The lease runs out (a worker died): due again, leased again.
	if due, _ := f.due(lease, 10, store.DueFilter{}); len(due) != 1 || due[0].ID != id {
		t.Errorf("DueItems at the lease's end: %d items, want the item", len(due))
	}
	if got, err := s.LeaseItem(ctx, id, lease, lease.Add(store.MaxItemLease)); err != nil || got.Attempts != 2 {
		t.Fatalf("LeaseItem after a lease ran out = %+v, %v; want a second attempt", got, err)
	}

	// A retry releases it until its next time.
	retry := t0.Add(time.Minute)
	if err := s.RetryItem(ctx, id, retry, "421 later"); err != nil {
		t.Fatal(err)
	}
	want := item(KindA, id.Request, "p", retry)
	want.NotAfter, want.Attempts, want.LastError = t0.Add(time.Hour), 2, "421 later"
	sameItem(t, "after RetryItem", f.items()[id], want)
	now := lease.Add(time.Second)
	if _, err := s.LeaseItem(ctx, id, now, now.Add(time.Second)); !errors.Is(err, store.ErrNotDue) {
		t.Errorf("LeaseItem before the retry time: %v, want ErrNotDue", err)
	}
	if due, next := f.due(now, 10, store.DueFilter{}); len(due) != 0 || !next.Equal(retry) {
		t.Errorf("DueItems before the retry = %d items, next %v; want none, next at the retry", len(due), next)
	}
	due, _ := f.due(retry, 10, store.DueFilter{})
	if len(due) != 1 {
		t.Fatalf("DueItems at the retry time: %d items, want 1", len(due))
	}
	sameItem(t, "the item due again", due[0], want)
	if got, err := s.LeaseItem(ctx, id, retry, retry.Add(time.Second)); err != nil || got.Attempts != 3 || got.LastError != "421 later" {
		t.Errorf("LeaseItem at the retry time = %+v, %v", got, err)
	}

	// Gone.
	if err := s.DeleteItem(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LeaseItem(ctx, id, retry.Add(time.Hour), retry.Add(2*time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LeaseItem of a deleted item: %v, want ErrNotFound", err)
	}
	if err := s.RetryItem(ctx, id, retry, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RetryItem of a deleted item: %v, want ErrNotFound", err)
	}
	if due, next := f.due(retry.Add(time.Hour), 10, store.DueFilter{}); len(due) != 0 || !next.IsZero() {
		t.Errorf("DueItems after the deletion = %d items, next %v; want none, zero", len(due), next)
	}
	// Deleting what is gone is no error: two workers may both drop an
	// expired item.
	if err := s.DeleteItem(ctx, id); err != nil {
		t.Errorf("DeleteItem of a deleted item: %v", err)
	}
}

// testOutboxDeleteCountScan: OutboxCounts counts by kind, DeleteItems
// deletes in bulk, ScanOutbox passes each item once and stops when told.
func testOutboxDeleteCountScan(t *testing.T, f *fixture) {
	ctx, s, t0 := f.ctx, f.s, f.clock.Now()
	k1, k2, k3 := store.KeyOf("r1"), store.KeyOf("r2"), store.KeyOf("r3")
	if counts, err := s.OutboxCounts(ctx); err != nil || len(counts) != 0 {
		t.Errorf("OutboxCounts of an empty outbox = %v, %v", counts, err)
	}
	for _, it := range []*store.OutboxItem{
		item(KindA, k1, "a1", t0), item(KindA, k2, "a2", t0), item(KindA, k3, "a3", t0),
		item(KindB, k1, "b1", t0), item(KindB, k2, "b2", t0),
	} {
		if err := s.Enqueue(ctx, it); err != nil {
			t.Fatal(err)
		}
	}
	counts := func(a, b int) {
		t.Helper()
		got, err := s.OutboxCounts(ctx)
		if err != nil || got[KindA] != a || got[KindB] != b || len(got) > 2 {
			t.Errorf("OutboxCounts = %v, %v; want %v: %d, %v: %d", got, err, KindA, a, KindB, b)
		}
	}
	counts(3, 2)

	calls := 0
	if err := s.ScanOutbox(ctx, func(*store.OutboxItem) bool { calls++; return false }); err != nil || calls != 1 {
		t.Errorf("ScanOutbox told to stop: %d calls, %v; want 1", calls, err)
	}

	if err := s.DeleteItems(ctx, store.ItemID{Kind: KindA, Request: k1}, store.ItemID{Kind: KindB, Request: k1},
		store.ItemID{Kind: KindB, Request: k3}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteItems(ctx); err != nil {
		t.Errorf("DeleteItems of nothing: %v", err)
	}
	counts(2, 1)
	items := f.items()
	want := []store.ItemID{{Kind: KindA, Request: k2}, {Kind: KindA, Request: k3}, {Kind: KindB, Request: k2}}
	if len(items) != len(want) {
		t.Errorf("%d items after DeleteItems, want %d", len(items), len(want))
	}
	for _, id := range want {
		if it := items[id]; it == nil || string(it.Payload) != map[store.Kind]string{KindA: "a", KindB: "b"}[id.Kind]+map[store.RequestKey]string{k2: "2", k3: "3"}[id.Request] {
			t.Errorf("item %v of %s after DeleteItems: %+v", id.Kind, id.Request.Short(), it)
		}
	}
	if err := s.DeleteItem(ctx, store.ItemID{Kind: KindA, Request: k2}); err != nil {
		t.Fatal(err)
	}
	counts(1, 1)
}
