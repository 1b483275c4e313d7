package cibaproxy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func openTestStore(t *testing.T, dir string, now func() time.Time) *BadgerStore {
	t.Helper()
	s, err := OpenBadger(dir, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testRequest(now time.Time) *AuthRequest {
	return &AuthRequest{
		ClientID: "cc", User: User{Username: "alice", Email: "alice@example.com", Subject: "alice"},
		Scopes: []string{"openid"}, Created: now, Expires: now.Add(5 * time.Minute),
		Interval: 5 * time.Second, Status: StatusPending,
	}
}

func TestBadgerStore(t *testing.T) {
	ctx := context.Background()
	clock := newHClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	key := KeyOf("id-1")
	link := LinkKeyOf("link-1")

	if _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if _, err := s.Update(ctx, key, func(*AuthRequest) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of a missing key: %v", err)
	}
	if _, err := s.Link(ctx, link); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Link of a missing link: %v", err)
	}
	r := testRequest(clock.Now())
	if err := s.Create(ctx, key, r, &Outbound{Links: []LinkKey{link}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, key, r, nil); !errors.Is(err, ErrExists) {
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
	if _, err := s.Update(ctx, key, func(r *AuthRequest) error {
		r.Status = StatusApproved
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update error: %v", err)
	}
	if got, _ := s.Get(ctx, key); got.Status != StatusPending {
		t.Fatal("an aborted Update wrote")
	}

	// The Badger TTL is a backstop: the record's expiry plus StoreGrace.
	err = s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get(requestKey(key))
		if err != nil {
			return err
		}
		exp := time.Unix(int64(item.ExpiresAt()), 0)
		want := time.Now().Add(5*time.Minute + StoreGrace)
		if d := exp.Sub(want); d < -5*time.Second || d > 5*time.Second {
			t.Errorf("TTL ends %v, want about %v", exp, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := s.Setting(ctx, "token_path"); !errors.Is(err, ErrNotFound) {
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
	if _, err := s.Get(ctx, key); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := s.Create(ctx, KeyOf("x"), r, nil); !errors.Is(err, ErrClosed) {
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
	clock := newHClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	key := KeyOf("counter")
	if err := s.Create(ctx, key, testRequest(clock.Now()), nil); err != nil {
		t.Fatal(err)
	}
	const n = 12
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := s.Update(ctx, key, func(r *AuthRequest) error {
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
	clock := newHClock()
	s := openTestStore(t, t.TempDir(), clock.Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Update(ctx, KeyOf("x"), func(*AuthRequest) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with a cancelled context: %v", err)
	}
}
