package badgerstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
	badger "github.com/dgraph-io/badger/v4"
)

func openTestStore(t *testing.T, dir string, now func() time.Time) *Store {
	t.Helper()
	s, err := Open(dir, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testRequest(now time.Time) *store.AuthRequest {
	return &store.AuthRequest{
		ClientID: "cc", User: store.User{Username: "alice", Email: "alice@example.com", Subject: "alice"},
		Scopes: []string{"openid"}, Created: now, Expires: now.Add(5 * time.Minute),
		Interval: 5 * time.Second, Status: store.StatusPending,
	}
}

func TestBadgerStore(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	key := store.KeyOf("id-1")
	link := store.LinkKeyOf("link-1")

	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if _, err := s.Update(ctx, key, func(*store.AuthRequest) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update of a missing key: %v", err)
	}
	if _, err := s.Link(ctx, link); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Link of a missing link: %v", err)
	}
	r := testRequest(clock.Now())
	// Badger counts a TTL from its own reading of the real time, taken
	// during the write: between these two.
	before := time.Now()
	if err := s.Create(ctx, key, r, &store.Outbound{Links: []store.LinkKey{link}}, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if err := s.Create(ctx, key, r, nil, store.UserLimit{}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create: %v", err)
	}
	got, err := s.Get(ctx, key)
	if err != nil || got.User.Email != "alice@example.com" || !got.Expires.Equal(r.Expires) || got.Interval != r.Interval {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if k, err := s.Link(ctx, link); err != nil || k != key {
		t.Fatalf("Link = %x, %v", k, err)
	}

	// An error from fn aborts without writing.
	boom := errors.New("boom")
	if _, err := s.Update(ctx, key, func(r *store.AuthRequest) error {
		r.Status = store.StatusApproved
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update error: %v", err)
	}
	if got, _ := s.Get(ctx, key); got.Status != store.StatusPending {
		t.Fatal("an aborted Update wrote")
	}

	// The Badger TTL is a backstop: the record's expiry plus store.Grace.
	err = s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get(requestKey(key))
		if err != nil {
			return err
		}
		exp := int64(item.ExpiresAt()) // in whole seconds
		ttl := 5*time.Minute + store.Grace
		if lo, hi := before.Add(ttl).Unix(), after.Add(ttl).Unix(); exp < lo || exp > hi {
			t.Errorf("TTL ends at %d, want %d to %d: the record's expiry plus store.Grace from the write", exp, lo, hi)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := s.Setting(ctx, "token_path"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing setting: %v", err)
	}
	if err := s.PutSetting(ctx, "token_path", []byte("/token")); err != nil {
		t.Fatal(err)
	}

	// Everything is on disk: reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, key); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := s.Create(ctx, store.KeyOf("x"), r, nil, store.UserLimit{}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Create after Close: %v", err)
	}
	s2 := openTestStore(t, dir, clock.Now)
	if got, err := s2.Get(ctx, key); err != nil || got.ClientID != "cc" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
	if v, err := s2.Setting(ctx, "token_path"); err != nil || string(v) != "/token" {
		t.Fatalf("setting after reopen: %q, %v", v, err)
	}
}

// TestBadgerUpdateConflicts: concurrent read-modify-write updates of one
// record all land, none lost, thanks to the conflict retry.
func TestBadgerUpdateConflicts(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	key := store.KeyOf("counter")
	if err := s.Create(ctx, key, testRequest(clock.Now()), nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	const n = 12
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := s.Update(ctx, key, func(r *store.AuthRequest) error {
				r.Interval += time.Second
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := 5*time.Second + n*time.Second; got.Interval != want {
		t.Fatalf("interval %v, want %v: an update was lost", got.Interval, want)
	}
}

func TestBadgerUpdateHonoursContext(t *testing.T) {
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Update(ctx, store.KeyOf("x"), func(*store.AuthRequest) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with a cancelled context: %v", err)
	}
}

// TestBadgerPendingCount: the pending count follows creation, decision,
// expiry (swept) and replacement, and is right after a reopen without a
// scan.
func TestBadgerPendingCount(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	count := func(s *Store, want int64) {
		t.Helper()
		n, err := s.PendingCount(ctx)
		if err != nil || n != want {
			t.Fatalf("PendingCount = %d, %v; want %d", n, err, want)
		}
	}
	user := func(s *Store, subject string, want int64) {
		t.Helper()
		n, err := s.UserPending(ctx, subject)
		if err != nil || n != want {
			t.Fatalf("UserPending(%s) = %d, %v; want %d", subject, n, err, want)
		}
	}
	mk := func(id, subject string, ttl time.Duration) store.RequestKey {
		t.Helper()
		r := testRequest(clock.Now())
		r.User.Subject = subject
		r.Expires = clock.Now().Add(ttl)
		k := store.KeyOf(id)
		if err := s.Create(ctx, k, r, nil, store.UserLimit{}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	count(s, 0)
	a1 := mk("a1", "alice", time.Minute)
	mk("a2", "alice", 2*time.Minute)
	mk("b1", "bob", 10*time.Minute)
	mk("phantom", "", time.Minute) // hide_unknown_users: no user
	count(s, 4)
	user(s, "alice", 2)
	user(s, "bob", 1)

	// A decision stops counting, once.
	decide := func(k store.RequestKey) {
		t.Helper()
		if _, err := s.Update(ctx, k, func(r *store.AuthRequest) error { r.Status = store.StatusApproved; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	decide(a1)
	count(s, 3)
	user(s, "alice", 1)
	if _, err := s.Update(ctx, a1, func(r *store.AuthRequest) error { r.Status = store.StatusConsumed; return nil }); err != nil {
		t.Fatal(err)
	}
	count(s, 3)

	// Expiry: nothing changes until the sweep, which counts each once.
	clock.Advance(90 * time.Second)
	count(s, 3)
	if n, err := s.SweepExpired(ctx, clock.Now()); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want 1 (the phantom)", n, err)
	}
	if n, err := s.SweepExpired(ctx, clock.Now()); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	count(s, 2)
	clock.Advance(time.Minute)
	if n, _ := s.SweepExpired(ctx, clock.Now()); n != 1 {
		t.Fatalf("sweep of a2: %d", n)
	}
	count(s, 1)
	user(s, "alice", 0)

	// Right after a reopen, without a scan.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	count(s, 1)
	user(s, "bob", 1)
}

// TestBadgerUserLimit: beyond the limit a request is refused, or replaces
// the user's oldest pending one, whose queued mail is dropped.
func TestBadgerUserLimit(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	mk := func(id string, limit store.UserLimit) error {
		r := testRequest(clock.Now())
		out := &store.Outbound{Items: []*store.OutboxItem{{ID: store.ItemID{Kind: storetest.KindA}, Sender: "site", Payload: []byte(id), NotAfter: r.Expires, Next: clock.Now()}}}
		clock.Advance(time.Second)
		return s.Create(ctx, store.KeyOf(id), r, out, limit)
	}
	limit := store.UserLimit{Max: 2}
	if err := mk("1", limit); err != nil {
		t.Fatal(err)
	}
	if err := mk("2", limit); err != nil {
		t.Fatal(err)
	}
	if err := mk("3", limit); !errors.Is(err, store.ErrUserLimit) {
		t.Fatalf("third request: %v, want store.ErrUserLimit", err)
	}
	if _, err := s.Get(ctx, store.KeyOf("3")); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a refused request was stored")
	}
	// Another user is not affected.
	r := testRequest(clock.Now())
	r.User.Subject = "bob"
	if err := s.Create(ctx, store.KeyOf("bob"), r, nil, limit); err != nil {
		t.Fatal(err)
	}

	replace := store.UserLimit{Max: 2, ReplaceOldest: true}
	if err := mk("4", replace); err != nil {
		t.Fatal(err)
	}
	old, err := s.Get(ctx, store.KeyOf("1"))
	if err != nil {
		t.Fatal(err)
	}
	if !old.Expired(clock.Now()) || old.Status != store.StatusPending {
		t.Errorf("the oldest request was not expired by the replacement: %+v", old)
	}
	items := 0
	_ = s.ScanOutbox(ctx, func(it *store.OutboxItem) bool {
		if it.ID.Request == store.KeyOf("1") {
			t.Error("the replaced request's mail is still queued")
		}
		items++
		return true
	})
	if items != 2 {
		t.Errorf("%d queued mails, want 2 (requests 2 and 4)", items)
	}
	if n, _ := s.UserPending(ctx, "alice"); n != 2 {
		t.Errorf("alice has %d pending, want 2", n)
	}
	if n, _ := s.PendingCount(ctx); n != 3 {
		t.Errorf("%d pending, want 3", n)
	}
	// A decided request frees a place.
	if _, err := s.Update(ctx, store.KeyOf("2"), func(r *store.AuthRequest) error { r.Status = store.StatusDenied; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := mk("5", limit); err != nil {
		t.Fatalf("after a decision: %v", err)
	}
}

func TestBadgerRemember(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	until := clock.Now().Add(time.Minute)
	for i, want := range []bool{true, false, false} {
		fresh, err := s.Remember(ctx, "client-assertion", "jti-1", until)
		if err != nil || fresh != want {
			t.Fatalf("call %d: fresh %v, %v; want %v", i, fresh, err, want)
		}
	}
	if fresh, _ := s.Remember(ctx, "request-object", "jti-1", until); !fresh {
		t.Error("namespaces are not separate")
	}
	// Concurrent callers: exactly one sees the id as new.
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for range 10 {
		wg.Go(func() {
			ok, err := s.Remember(ctx, "client-assertion", "jti-2", until)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if fresh != 1 {
		t.Errorf("%d callers saw a fresh id, want 1", fresh)
	}
}

// TestDueItemsFromWhereItLeft checks that DueItems, which seeks from where
// its previous call left the due index, still returns every due item:
// those it returned but that were not leased, those its accept refused,
// those written since, one written behind that point by a clock that went
// back, and one due before a read whose transaction committed after it.
func TestDueItemsFromWhereItLeft(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	t0 := clock.Now()
	enqueue := func(name string, due time.Time) store.ItemID {
		t.Helper()
		id := store.ItemID{Kind: storetest.KindA, Request: store.KeyOf(name)}
		if err := s.Enqueue(ctx, &store.OutboxItem{ID: id, Sender: "site", NotAfter: t0.Add(time.Hour), Next: due}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for i := range 30 {
		enqueue(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	clock.Advance(time.Second)
	seen := map[store.ItemID]int{}
	take := func(limit int, accept func(*store.OutboxItem) bool) []*store.OutboxItem {
		t.Helper()
		items, _, err := s.DueItems(ctx, clock.Now(), limit, store.DueFilter{Accept: accept})
		if err != nil {
			t.Fatal(err)
		}
		return items
	}
	// Taken and leased in batches of 10: each batch the next 10.
	for range 3 {
		for _, it := range take(10, nil) {
			seen[it.ID]++
			if _, err := s.LeaseItem(ctx, it.ID, clock.Now(), clock.Now().Add(store.MaxItemLease)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(seen) != 30 {
		t.Fatalf("%d distinct items in three batches, want 30", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("item %x returned %d times", id.Request[:4], n)
		}
	}
	// Returned but not leased (a lease failed): returned again.
	a := enqueue("a", clock.Now())
	if got := take(10, nil); len(got) != 1 || got[0].ID != a {
		t.Fatalf("first read: %d items", len(got))
	}
	if got := take(10, nil); len(got) != 1 || got[0].ID != a {
		t.Fatalf("an item returned but not leased was not returned again: %d items", len(got))
	}
	// Refused by accept (no sender yet): returned once accepted.
	if got := take(10, func(*store.OutboxItem) bool { return false }); len(got) != 0 {
		t.Fatalf("accept refused all, got %d", len(got))
	}
	if got := take(10, nil); len(got) != 1 || got[0].ID != a {
		t.Fatal("an item accept refused was skipped for good")
	}
	if err := s.DeleteItem(ctx, a); err != nil {
		t.Fatal(err)
	}
	for id := range seen { // delivered
		if err := s.DeleteItem(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// The reads above started from where the previous one left the index,
	// not from its start: the point is past the entries taken.
	s.dueMu.Lock()
	from := s.dueFrom
	s.dueMu.Unlock()
	if last := dueKey(&store.OutboxItem{ID: store.ItemID{Kind: storetest.KindA, Request: store.KeyOf("29")}, Next: t0.Add(29 * time.Millisecond)}); bytes.Compare(from, last) <= 0 {
		t.Fatalf("the next read starts at or before the last entry taken: %x <= %x", from, last)
	}
	// Written behind that point (a clock that went back 5 s): the write
	// moves the point back, so the next read finds it.
	clock.Advance(time.Minute)
	if got := take(10, nil); len(got) != 0 {
		t.Fatalf("%d items due, want none", len(got))
	}
	b := enqueue("b", clock.Now().Add(-5*time.Second))
	if got := take(10, nil); len(got) != 1 || got[0].ID != b {
		t.Fatalf("an item written behind the read point: %d items at the next read", len(got))
	}
	if err := s.DeleteItem(ctx, b); err != nil {
		t.Fatal(err)
	}

	// An entry due before a read's now whose transaction commits after the
	// read: the next read, not from the start, finds it.
	c := store.ItemID{Kind: storetest.KindA, Request: store.KeyOf("c")}
	noted, commit := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.updateNoSync(ctx, func(txn *badger.Txn) error {
			if err := s.putNewItem(txn, &store.OutboxItem{ID: c, Sender: "site", NotAfter: clock.Now().Add(time.Hour), Next: clock.Now().Add(-time.Second)}); err != nil {
				return err
			}
			close(noted)
			<-commit
			return nil
		})
	}()
	<-noted
	clock.Advance(2 * time.Second)
	if got := take(10, nil); len(got) != 0 {
		t.Fatalf("an entry not committed yet was read: %d items", len(got))
	}
	close(commit)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	s.dueMu.Lock()
	s.dueFull = time.Now() // no read from the start meanwhile
	s.dueMu.Unlock()
	if got := take(10, nil); len(got) != 1 || got[0].ID != c {
		t.Fatalf("an entry committed after a read that began before: %d items at the next read", len(got))
	}
}

// TestBadgerSweepUnderLoad: the sweep of expired requests succeeds while
// new requests keep writing the pending counters it touches (its
// transactions conflict with theirs), and the count stays exact.
func TestBadgerSweepUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	ctx := context.Background()
	clock := storetest.NewClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	const expired = 2 * sweepBatch
	for i := range expired {
		r := testRequest(clock.Now())
		r.User.Subject = fmt.Sprint("old-", i%50)
		r.Expires = clock.Now().Add(time.Minute)
		if err := s.Create(ctx, store.KeyOf(fmt.Sprint("old-", i)), r, nil, store.UserLimit{}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Minute)
	stop := make(chan struct{})
	var created atomic.Int64
	var wg sync.WaitGroup
	// busy is done once every writer has created a request: all four are
	// then in their loops, and stay in them until the sweep returned.
	var busy sync.WaitGroup
	busy.Add(4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if i == 1 {
					busy.Done()
				}
				select {
				case <-stop:
					return
				default:
				}
				r := testRequest(clock.Now())
				r.User.Subject = fmt.Sprint("new-", i%50)
				if err := s.Create(ctx, store.KeyOf(fmt.Sprint("new-", g, "-", i)), r, nil, store.UserLimit{}); err != nil {
					t.Error(err)
					if i == 0 {
						busy.Done()
					}
					return
				}
				created.Add(1)
			}
		}()
	}
	busy.Wait()
	swept, err := s.SweepExpired(ctx, clock.Now())
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("SweepExpired under load: %v (swept %d)", err, swept)
	}
	if swept != expired {
		t.Fatalf("swept %d, want %d", swept, expired)
	}
	if n, err := s.PendingCount(ctx); err != nil || n != created.Load() {
		t.Fatalf("PendingCount = %d, %v; want the %d created under load", n, err, created.Load())
	}
}

// recount counts the pending requests from the indexes, in total and by
// user key, as a scan would.
func recount(t *testing.T, s *Store) (int64, map[[userKeyLen]byte]int64) {
	t.Helper()
	var total int64
	users := map[[userKeyLen]byte]int64{}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			switch k[0] {
			case kindExpiry:
				total++
			case kindUserIdx:
				var u [userKeyLen]byte
				copy(u[:], k[1:])
				users[u]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, users
}

// checkCounts compares the counts the store answers with the indexes.
func checkCounts(t *testing.T, s *Store, subjects []string, max int64) {
	t.Helper()
	ctx := context.Background()
	total, users := recount(t, s)
	if n, err := s.PendingCount(ctx); err != nil || n != total {
		t.Errorf("PendingCount = %d, %v; the expiry index holds %d", n, err, total)
	}
	for _, sub := range subjects {
		u, _ := userKeyOf(&store.AuthRequest{User: store.User{Subject: sub}})
		n, err := s.UserPending(ctx, sub)
		if err != nil || n != users[u] {
			t.Errorf("UserPending(%s) = %d, %v; its index holds %d", sub, n, err, users[u])
		}
		if max > 0 && n > max {
			t.Errorf("UserPending(%s) = %d, over the limit of %d", sub, n, max)
		}
	}
}

// TestBadgerCountsUnderConcurrency: requests created (within a user limit,
// refused or replacing the oldest), decided and swept at the same time, for
// a few users, leave every count equal to what the indexes hold, in memory
// and after a reopen. The counts are written without being read back from
// Badger (counts.go), so a writer that changed one outside its
// stripe's lock would lose updates here.
func TestBadgerCountsUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	subjects := []string{"u0", "u1", "u2", "u3", "u4"}
	const (
		creators = 4
		each     = 150
		limit    = 4
	)
	keys := make(chan store.RequestKey, creators*each)
	var created, refused atomic.Int64
	var deciders sync.WaitGroup
	var decided atomic.Int64
	for range 2 {
		deciders.Add(1)
		go func() {
			defer deciders.Done()
			for k := range keys {
				if k[1]%2 != 0 {
					continue // left pending
				}
				_, err := s.Update(ctx, k, func(r *store.AuthRequest) error {
					if r.Status == store.StatusPending {
						r.Status = store.StatusApproved
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				decided.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	sweeper := make(chan int)
	go func() {
		swept := 0
		for {
			select {
			case <-stop:
				sweeper <- swept
				return
			default:
			}
			clock.Advance(50 * time.Millisecond)
			n, err := s.SweepExpired(ctx, clock.Now())
			if err != nil {
				t.Error(err)
			}
			swept += n
		}
	}()
	create := func(g, i int) bool {
		r := testRequest(clock.Now())
		if i%7 != 0 { // every seventh without a user
			r.User.Subject = subjects[(g+i)%len(subjects)]
		}
		if i%3 == 0 {
			r.Expires = clock.Now().Add(time.Second) // for the sweeper
		}
		k := store.KeyOf(fmt.Sprint("c", g, "-", i))
		err := s.Create(ctx, k, r, nil, store.UserLimit{Max: limit, ReplaceOldest: i%2 == 0})
		switch {
		case errors.Is(err, store.ErrUserLimit):
			refused.Add(1)
		case err != nil:
			t.Error(err)
			return false
		default:
			created.Add(1)
			keys <- k
		}
		return true
	}
	fanOut(creators, each, create)
	close(keys)
	deciders.Wait()
	close(stop)
	swept := <-sweeper
	if t.Failed() {
		return
	}
	if created.Load() == 0 || decided.Load() == 0 || swept == 0 || refused.Load() == 0 {
		t.Fatalf("the load missed a case: created %d, refused %d, decided %d, swept %d",
			created.Load(), refused.Load(), decided.Load(), swept)
	}
	t.Logf("created %d, refused %d, decided %d, swept %d", created.Load(), refused.Load(), decided.Load(), swept)
	checkCounts(t, s, subjects, limit)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, subjects, limit)
}

// TestBadgerCountsOfEarlierShards: a store written when the pending total
// was sharded by request key, not by user, still counts exactly: a request
// counted in one shard and uncounted from another leaves the sum right.
func TestBadgerCountsOfEarlierShards(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	var k store.RequestKey
	for i := 0; ; i++ { // a key whose old shard is not its user's stripe
		k = store.KeyOf(fmt.Sprint("old-", i))
		if u, _ := userKeyOf(testRequest(clock.Now())); countStripeOf(k, u, true) != int(k[0])%pendingShards {
			break
		}
	}
	r := testRequest(clock.Now())
	if err := s.Create(ctx, k, r, nil, store.UserLimit{}); err != nil {
		t.Fatal(err)
	}
	// Move its count to the shard the earlier layout used.
	u, _ := userKeyOf(r)
	err := s.update(ctx, func(txn *badger.Txn) error {
		if err := setInt(txn, pendingShardKey(countStripeOf(k, u, true)), 0); err != nil {
			return err
		}
		return setInt(txn, pendingShardKey(int(k[0])%pendingShards), 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, []string{"alice"}, 0)
	if _, err := s.Update(ctx, k, func(r *store.AuthRequest) error { r.Status = store.StatusDenied; return nil }); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, s, []string{"alice"}, 0)
	var shards [][]byte
	_ = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindPending}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			shards = append(shards, append(it.Item().KeyCopy(nil), v...))
		}
		return nil
	})
	if len(shards) != 2 || !bytes.Equal(shards[0][2:], []byte{0, 0, 0, 0, 0, 0, 0, 1}) && !bytes.Equal(shards[1][2:], []byte{0, 0, 0, 0, 0, 0, 0, 1}) {
		t.Errorf("shards %x: want +1 in the old one and −1 in the user's", shards)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, []string{"alice"}, 0)
}

// TestBadgerGroupCommit: in each sync mode, a durable write returns only
// after an fsync that started after its transaction ran and finished
// before it returned, also while fsyncs gather the commits under way;
// concurrent writers share fsyncs.
func TestBadgerGroupCommit(t *testing.T) {
	for _, mode := range []SyncMode{SyncGroup, SyncCommitter} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) { testGroupCommit(t, mode) })
	}
}

func testGroupCommit(t *testing.T, mode SyncMode) {
	ctx := context.Background()
	s := openTestStore(t, t.TempDir(), nil)
	s.SetSyncMode(mode)
	fsync := s.fsync
	var seq atomic.Int64
	type span struct{ start, end int64 }
	var mu sync.Mutex
	var spans []span
	s.fsync = func() error {
		start := seq.Add(1)
		time.Sleep(300 * time.Microsecond)
		err := fsync()
		end := seq.Add(1)
		mu.Lock()
		spans = append(spans, span{start, end})
		mu.Unlock()
		return err
	}
	const writers, each = 16, 40
	fanOut(writers, each, func(g, i int) bool {
		var ran int64
		err := s.update(ctx, func(txn *badger.Txn) error {
			ran = seq.Add(1)
			return txn.Set([]byte(fmt.Sprint("k", g, "-", i)), []byte("v"))
		})
		back := seq.Add(1)
		if err != nil {
			t.Error(err)
			return false
		}
		mu.Lock()
		ok := false
		for _, sp := range spans {
			if sp.start > ran && sp.end < back {
				ok = true
				break
			}
		}
		mu.Unlock()
		if !ok {
			t.Errorf("a write (ran at %d, back at %d) returned without an fsync in between", ran, back)
			return false
		}
		return true
	})
	if n := len(spans); n == 0 || n >= writers*each {
		t.Errorf("%d fsyncs for %d writes: want them shared", n, writers*each)
	}
	t.Logf("%d fsyncs for %d writes", len(spans), writers*each)
}

// TestWALSyncerFollowsRotation: the committer's fsync covers every
// write-ahead log in the directory, those of the memtables Badger opens
// as it rotates them included, and lets go of those Badger deleted when
// it lists the directory again.
func TestWALSyncerFollowsRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTestStore(t, dir, nil)
	s.SetSyncMode(SyncCommitter)
	val := bytes.Repeat([]byte("x"), 64<<10)
	rotations := 0
	var last []string
	for i := range 800 { // 50 MiB: three memtables of 16 MiB and more
		if err := s.update(ctx, func(txn *badger.Txn) error { return txn.Set([]byte(fmt.Sprint("big-", i)), val) }); err != nil {
			t.Fatal(err)
		}
		names, err := filepath.Glob(filepath.Join(dir, "*.mem"))
		if err != nil || len(names) == 0 {
			t.Fatalf("no write-ahead log (*.mem) in the store's directory (%v): the syncer would sync nothing", err)
		}
		s.wal.mu.Lock()
		for _, n := range names {
			if s.wal.files[n] == nil {
				t.Errorf("write %d: %s is not synced (held: %d files)", i, filepath.Base(n), len(s.wal.files))
			}
		}
		held := len(s.wal.files)
		s.wal.mu.Unlock()
		// A log Badger deleted (flushed) since the last listing is held
		// until the next, when a new memtable opens: at most the two
		// memtables of Options.
		if held > len(names)+2 {
			t.Errorf("write %d: %d files held for %d logs: deleted ones are kept", i, held, len(names))
		}
		if !slices.Equal(names, last) {
			rotations++
			last = names
		}
		if t.Failed() {
			return
		}
	}
	if rotations < 3 {
		t.Errorf("%d changes of the logs: the test did not rotate the memtables", rotations)
	}
}

// fanOut runs fn(g, i) for i < each in n goroutines g, a goroutine
// stopping when fn returns false, and waits for them.
func fanOut(n, each int, fn func(g, i int) bool) {
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if !fn(g, i) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestLeasesOfAPreviousProcess: leases held when the store was last
// closed (the process was killed mid-delivery) are void at open, so the
// item is delivered at once rather than when the lease runs out; an item
// waiting for a retry is left as it is.
func TestLeasesOfAPreviousProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := storetest.NewClock()
	st, err := Open(dir, nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	id := store.ItemID{Kind: storetest.KindA, Request: store.KeyOf("req")}
	now := clock.Now()
	if err := st.Enqueue(ctx, &store.OutboxItem{ID: id, Sender: "site", NotAfter: now.Add(time.Minute), Next: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LeaseItem(ctx, id, now, now.Add(store.MaxItemLease)); err != nil {
		t.Fatal(err)
	}
	other := store.ItemID{Kind: storetest.KindA, Request: store.KeyOf("retry")} // due later, not leased: left alone
	if err := st.Enqueue(ctx, &store.OutboxItem{ID: other, Sender: "site", NotAfter: now.Add(time.Minute), Next: now.Add(5 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	st = openTestStore(t, dir, clock.Now)
	due, next, err := st.DueItems(ctx, clock.Now(), 10, store.DueFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0].ID != id || !due[0].LeaseUntil.IsZero() || due[0].Attempts != 1 {
		t.Fatalf("due after reopening: %+v", due)
	}
	if !next.Equal(now.Add(5 * time.Second)) {
		t.Errorf("next %v, want the other item's %v", next, now.Add(5*time.Second))
	}
}
