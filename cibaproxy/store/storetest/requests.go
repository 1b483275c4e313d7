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
