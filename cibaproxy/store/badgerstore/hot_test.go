package badgerstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
)

func TestHotIndexRefusesStaleEntries(t *testing.T) {
	h := newHotIndex()
	now := time.Unix(1000, 0).UnixNano()
	key := store.KeyOf("a")
	e := h.entry([]byte("cc"), now+int64(time.Minute), 5*time.Second)

	// A read that began before a write of its shard enters nothing.
	gen := h.gen(key)
	h.drop(key)
	h.put(key, e, gen, now)
	if _, ok := h.peek(key, now); ok {
		t.Fatal("an entry read before a drop was entered after it")
	}
	// A drop of another key of the same shard also refuses it (the shard's
	// generation is what is compared).
	other := key
	other[1] ^= 0xff
	gen = h.gen(key)
	h.drop(other)
	h.put(key, e, gen, now)
	if _, ok := h.peek(key, now); ok {
		t.Fatal("an entry read before a drop in its shard was entered")
	}
	// A read with no write since enters, and a drop forgets it.
	h.put(key, e, h.gen(key), now)
	if got, ok := h.peek(key, now); !ok || got != e {
		t.Fatalf("peek = %+v, %v", got, ok)
	}
	h.drop(key)
	if _, ok := h.peek(key, now); ok {
		t.Fatal("a dropped entry is still peeked")
	}
	// Expired entries are never answered, are not entered, and are swept.
	h.put(key, e, h.gen(key), now)
	if _, ok := h.peek(key, e.expires); ok {
		t.Fatal("an entry answered at its expiry")
	}
	late := store.KeyOf("late")
	h.put(late, h.entry([]byte("cc"), now, time.Second), h.gen(late), now)
	if _, ok := h.shard(late).entries[hotKeyOf(late)]; ok {
		t.Fatal("an expired entry was entered")
	}
	h.sweep(e.expires)
	if _, ok := h.shard(key).entries[hotKeyOf(key)]; ok {
		t.Fatal("an expired entry survived the sweep")
	}
}

// TestBadgerPendingStateFollowsWrites checks that what PeekPending answers
// is what Get reads, through every write of a request.
func TestBadgerPendingStateFollowsWrites(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	key := store.KeyOf("id-1")
	r := testRequest(clock.Now())
	if err := s.Create(ctx, key, r, nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	st, ok := s.PeekPending(key, clock.Now())
	if !ok || st.ClientID != "cc" || !st.Expires.Equal(r.Expires) || st.Interval != r.Interval {
		t.Fatalf("after Create: PeekPending = %+v, %v", st, ok)
	}
	if _, ok := s.PeekPending(store.KeyOf("unknown"), clock.Now()); ok {
		t.Fatal("an unknown key is pending")
	}
	// An aborted update changes nothing but forgets the entry; a read
	// enters it again.
	if _, err := s.Update(ctx, key, func(*store.AuthRequest) error { return store.ErrNotFound }); err == nil {
		t.Fatal("the update did not fail")
	}
	if _, ok := s.PeekPending(key, clock.Now()); ok {
		t.Fatal("still held after an update")
	}
	if _, err := s.Get(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.PeekPending(key, clock.Now()); !ok {
		t.Fatal("a read of a pending request did not enter it")
	}
	// A decision ends it, and a read of the decided request does not bring
	// it back.
	if _, err := s.Update(ctx, key, func(r *store.AuthRequest) error { r.Status = store.StatusDenied; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.PeekPending(key, clock.Now()); ok {
		t.Fatal("a denied request is pending")
	}
	if got, err := s.Get(ctx, key); err != nil || got.Status != store.StatusDenied {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, ok := s.PeekPending(key, clock.Now()); ok {
		t.Fatal("a read of a denied request entered it")
	}
	// Expiry: never answered once expired.
	key2 := store.KeyOf("id-2")
	if err := s.Create(ctx, key2, testRequest(clock.Now()), nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(5 * time.Minute)
	if _, ok := s.PeekPending(key2, clock.Now()); ok {
		t.Fatal("an expired request is pending")
	}
}

func TestBadgerPendingStateReplaceOldest(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	limit := store.UserLimit{Max: 1, ReplaceOldest: true}
	old, repl := store.KeyOf("old"), store.KeyOf("new")
	if err := s.Create(ctx, old, testRequest(clock.Now()), nil, limit); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := s.Create(ctx, repl, testRequest(clock.Now()), nil, limit); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.PeekPending(old, clock.Now()); ok {
		t.Fatal("the replaced request is still pending in memory")
	}
	if got, err := s.Get(ctx, old); err != nil || !got.Expired(clock.Now()) {
		t.Fatalf("the replaced request: %+v, %v", got, err)
	}
	if _, ok := s.PeekPending(repl, clock.Now()); !ok {
		t.Fatal("the new request is not held")
	}
}

// TestBadgerPendingStateAfterReopen checks the scan at open: pending
// requests are held again, decided and expired ones are not.
func TestBadgerPendingStateAfterReopen(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	s, err := Open(dir, nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	const n = warmBatch + 100 // more than one batch
	for i := range n {
		r := testRequest(clock.Now())
		r.ClientID = fmt.Sprintf("client-%d", i%3)
		switch i % 10 {
		case 1:
			r.Status = store.StatusApproved
		case 2:
			r.Expires = clock.Now().Add(time.Minute)
		}
		if err := s.Create(ctx, store.KeyOf(fmt.Sprint(i)), r, nil, store.UserLimit{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	s = openTestStore(t, dir, clock.Now)
	<-s.warmed
	for i := range n {
		st, ok := s.PeekPending(store.KeyOf(fmt.Sprint(i)), clock.Now())
		want := i%10 != 1 && i%10 != 2
		if ok != want {
			t.Fatalf("request %d: held %v, want %v", i, ok, want)
		}
		if ok {
			if st.ClientID != fmt.Sprintf("client-%d", i%3) || st.Interval != 5*time.Second {
				t.Fatalf("request %d: %+v", i, st)
			}
		}
	}

}

// TestBadgerPendingStateConcurrentDecisions races reads (which enter
// requests) with decisions: once a decision is stored, no later peek says
// pending.
func TestBadgerPendingStateConcurrentDecisions(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	const n = 200
	for i := range n {
		if err := s.Create(ctx, store.KeyOf(fmt.Sprint(i)), testRequest(clock.Now()), nil, store.UserLimit{}); err != nil {
			t.Fatal(err)
		}
		s.hot.drop(store.KeyOf(fmt.Sprint(i))) // so that the readers enter them
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 20 {
				for i := (g + round) % 2; i < n; i += 2 {
					_, _ = s.Get(ctx, store.KeyOf(fmt.Sprint(i)))
				}
			}
		}()
	}
	for i := range n {
		if _, err := s.Update(ctx, store.KeyOf(fmt.Sprint(i)), func(r *store.AuthRequest) error { r.Status = store.StatusApproved; return nil }); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.PeekPending(store.KeyOf(fmt.Sprint(i)), clock.Now()); ok {
			t.Fatalf("request %d is pending in memory right after its approval", i)
		}
	}
	wg.Wait()
	for i := range n {
		if _, ok := s.PeekPending(store.KeyOf(fmt.Sprint(i)), clock.Now()); ok {
			t.Fatalf("request %d is pending in memory after its approval", i)
		}
	}
}
