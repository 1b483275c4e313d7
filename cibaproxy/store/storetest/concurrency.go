package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// racers is how many goroutines race for one thing.
const racers = 16

// testConcurrentUpdates: concurrent read-modify-write updates of one
// request all land; none is lost.
func testConcurrentUpdates(t *testing.T, f *fixture) {
	key := f.create("counter", request(f.clock.Now(), "alice", 5*time.Minute), nil, store.UserLimit{})
	const n = 12
	f.race(n, func(s store.Store, _ int) {
		_, err := s.Update(f.ctx, key, func(r *store.AuthRequest) error {
			r.Interval += time.Second
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	if got, want := f.get(key).Interval, 5*time.Second+n*time.Second; got != want {
		t.Errorf("interval %v after %d increments, want %v: an update was lost", got, n, want)
	}
	f.pending(1, map[string]int64{"alice": 1})
}

// testConcurrentCreates: of concurrent Creates under one key exactly one
// succeeds, and the request is counted once.
func testConcurrentCreates(t *testing.T, f *fixture) {
	key := store.KeyOf("contended")
	var won, exists atomic.Int32
	var winner atomic.Int32
	f.race(racers, func(s store.Store, i int) {
		r := request(f.clock.Now(), "alice", 5*time.Minute)
		r.ClientID = fmt.Sprint("client-", i)
		out := &store.Outbound{Items: []*store.OutboxItem{item(KindA, key, r.ClientID, f.clock.Now())}}
		switch err := s.Create(f.ctx, key, r, out, store.UserLimit{}); {
		case err == nil:
			won.Add(1)
			winner.Store(int32(i))
		case errors.Is(err, store.ErrExists):
			exists.Add(1)
		default:
			t.Errorf("Create: %v", err)
		}
	})
	if won.Load() != 1 || exists.Load() != racers-1 {
		t.Fatalf("%d Creates succeeded and %d found the key taken, want 1 and %d", won.Load(), exists.Load(), racers-1)
	}
	want := fmt.Sprint("client-", winner.Load())
	if got := f.get(key); got.ClientID != want {
		t.Errorf("the stored request is %s's, want the winner's (%s)", got.ClientID, want)
	}
	items := f.items()
	if it := items[store.ItemID{Kind: KindA, Request: key}]; len(items) != 1 || it == nil || string(it.Payload) != want {
		t.Errorf("items queued: %v, want the winner's only", items)
	}
	f.pending(1, map[string]int64{"alice": 1})
}

// testExactlyOnceDecision: of concurrent decisions on one request exactly
// one is stored, with its notification only, and counted out once.
func testExactlyOnceDecision(t *testing.T, f *fixture) {
	now := f.clock.Now()
	for round := range 3 {
		key := f.create(fmt.Sprint("r", round), request(now, "alice", 5*time.Minute), nil, store.UserLimit{})
		var won, decided atomic.Int32
		var winner atomic.Int32
		f.race(racers, func(s store.Store, i int) {
			switch _, err := decide(f, s, key, i%2 == 0, now, fmt.Sprint("note-", i)); {
			case err == nil:
				won.Add(1)
				winner.Store(int32(i))
			case errors.Is(err, errDecided):
				decided.Add(1)
			default:
				t.Errorf("decide: %v", err)
			}
		})
		if won.Load() != 1 || decided.Load() != racers-1 {
			t.Fatalf("round %d: %d decisions stored and %d refused, want 1 and %d", round, won.Load(), decided.Load(), racers-1)
		}
		w := int(winner.Load())
		wantStatus := store.StatusDenied
		if w%2 == 0 {
			wantStatus = store.StatusApproved
		}
		if got := f.get(key); got.Status != wantStatus {
			t.Errorf("round %d: stored %v, want the winner's %v", round, got.Status, wantStatus)
		}
		items := f.items()
		if it := items[store.ItemID{Kind: KindB, Request: key}]; it == nil || string(it.Payload) != fmt.Sprint("note-", w) {
			t.Errorf("round %d: the notification queued is %+v, want the winner's", round, it)
		}
		if len(items) != round+1 {
			t.Errorf("round %d: %d items queued, want %d", round, len(items), round+1)
		}
		f.pending(0, map[string]int64{"alice": 0})
	}
}

// testExactlyOnceClaim: of concurrent polls claiming an approved request
// exactly one wins; of their commits only the winner's lands; the grant is
// then redeemed, for every poll.
func testExactlyOnceClaim(t *testing.T, f *fixture) {
	now := f.clock.Now()
	for round := range 3 {
		key := f.create(fmt.Sprint("r", round), request(now, "alice", 5*time.Minute), nil, store.UserLimit{})
		if _, err := decide(f, f.s, key, true, now, "note"); err != nil {
			t.Fatal(err)
		}
		var won, overlap atomic.Int32
		var winner atomic.Int32
		f.race(racers, func(s store.Store, i int) {
			switch _, err := claim(f, s, key, fmt.Sprint("claim-", i), now); {
			case err == nil:
				won.Add(1)
				winner.Store(int32(i))
			case errors.Is(err, errOverlap):
				overlap.Add(1)
			default:
				t.Errorf("claim: %v", err)
			}
		})
		if won.Load() != 1 || overlap.Load() != racers-1 {
			t.Fatalf("round %d: %d claims won and %d overlapped, want 1 and %d", round, won.Load(), overlap.Load(), racers-1)
		}
		want := fmt.Sprint("claim-", winner.Load())
		if got := f.get(key); got.Claim != want {
			t.Fatalf("round %d: claim %q stored, want the winner's %q", round, got.Claim, want)
		}
		var committed, refused atomic.Int32
		f.race(racers, func(s store.Store, i int) {
			switch err := commit(f, s, key, fmt.Sprint("claim-", i)); {
			case err == nil:
				committed.Add(1)
				if fmt.Sprint("claim-", i) != want {
					t.Errorf("round %d: the commit of %d, not the winner, landed", round, i)
				}
			case errors.Is(err, errNotMine):
				refused.Add(1)
			default:
				t.Errorf("commit: %v", err)
			}
		})
		if committed.Load() != 1 || refused.Load() != racers-1 {
			t.Fatalf("round %d: %d commits landed and %d were refused, want 1 and %d", round, committed.Load(), refused.Load(), racers-1)
		}
		var redeemed atomic.Int32
		f.race(racers, func(s store.Store, i int) {
			if _, err := claim(f, s, key, fmt.Sprint("late-", i), now.Add(time.Minute)); errors.Is(err, errRedeemed) {
				redeemed.Add(1)
			} else {
				t.Errorf("claim of a consumed request: %v, want errRedeemed", err)
			}
		})
		if redeemed.Load() != racers {
			t.Errorf("round %d: %d late claims refused, want %d", round, redeemed.Load(), racers)
		}
		if got := f.get(key); got.Status != store.StatusConsumed || got.Claim != "" {
			t.Errorf("round %d: after the race: %+v", round, got)
		}
	}
}

// testConcurrentUserLimit: concurrent requests of one user stay within the
// limit: refused beyond it exactly, or replacing the oldest.
func testConcurrentUserLimit(t *testing.T, f *fixture) {
	const limit = 3
	var created, refused atomic.Int32
	f.race(racers, func(s store.Store, i int) {
		r := request(f.clock.Now().Add(time.Duration(i)), "alice", 5*time.Minute)
		switch err := s.Create(f.ctx, store.KeyOf(fmt.Sprint("refuse-", i)), r, nil, store.UserLimit{Max: limit}); {
		case err == nil:
			created.Add(1)
		case errors.Is(err, store.ErrUserLimit):
			refused.Add(1)
		default:
			t.Errorf("Create: %v", err)
		}
	})
	if created.Load() != limit || refused.Load() != racers-limit {
		t.Errorf("%d created and %d refused, want %d and %d", created.Load(), refused.Load(), limit, racers-limit)
	}
	f.pending(limit, map[string]int64{"alice": limit})

	var replaced atomic.Int32
	f.race(racers, func(s store.Store, i int) {
		r := request(f.clock.Now().Add(time.Duration(racers+i)), "bob", 5*time.Minute)
		err := s.Create(f.ctx, store.KeyOf(fmt.Sprint("replace-", i)), r, nil, store.UserLimit{Max: limit, ReplaceOldest: true})
		if err != nil {
			t.Errorf("Create with ReplaceOldest: %v", err)
			return
		}
		replaced.Add(1)
	})
	if replaced.Load() != racers {
		t.Errorf("%d of %d requests replacing the oldest were created", replaced.Load(), racers)
	}
	f.pending(2*limit, map[string]int64{"alice": limit, "bob": limit})
	unexpired := 0
	for i := range racers {
		if !f.get(store.KeyOf(fmt.Sprint("replace-", i))).Expired(f.clock.Now().Add(racers * 2)) {
			unexpired++
		}
	}
	if unexpired != limit {
		t.Errorf("%d of bob's requests are unexpired, want %d: the others were replaced", unexpired, limit)
	}
}

// testConcurrentSweeps: sweeps racing each other and decisions count each
// expired request out exactly once.
func testConcurrentSweeps(t *testing.T, f *fixture) {
	t0 := f.clock.Now()
	const expiring, live = 20, 10
	var expired, alive []store.RequestKey
	for i := range expiring {
		expired = append(expired, f.create(fmt.Sprint("x", i), request(t0, fmt.Sprint("u", i%3), time.Minute), nil, store.UserLimit{}))
	}
	for i := range live {
		alive = append(alive, f.create(fmt.Sprint("l", i), request(t0, fmt.Sprint("u", i%3), time.Hour), nil, store.UserLimit{}))
	}
	f.pending(expiring+live, nil)
	now := t0.Add(time.Minute)
	// Half the live requests and a quarter of the expired ones are
	// decided while four sweepers run.
	toDecide := append(append([]store.RequestKey(nil), alive[:live/2]...), expired[:expiring/4]...)
	var swept atomic.Int64
	var wg sync.WaitGroup
	for g := range 4 {
		s := f.handles()[g%len(f.handles())]
		wg.Go(func() {
			n, err := s.SweepExpired(f.ctx, now)
			if err != nil {
				t.Error(err)
			}
			swept.Add(int64(n))
		})
	}
	for _, k := range toDecide {
		f.setStatus(k, store.StatusDenied)
	}
	wg.Wait()
	if n, err := f.s.SweepExpired(f.ctx, now); err != nil {
		t.Fatal(err)
	} else {
		swept.Add(int64(n))
	}
	if n := swept.Load(); n < expiring-expiring/4 || n > expiring {
		t.Errorf("%d swept, want between %d and %d", n, expiring-expiring/4, expiring)
	}
	users := map[string]int64{}
	for i := live / 2; i < live; i++ {
		users[fmt.Sprint("u", i%3)]++
	}
	f.pending(live-live/2, users)
	if n, err := f.s.SweepExpired(f.ctx, now); err != nil || n != 0 {
		t.Errorf("a sweep after the sweeps: %d, %v; want 0", n, err)
	}
}

// testConcurrentSettings: concurrent updates of a setting all land, and
// concurrent SettingOrCreate callers all get the one value stored.
func testConcurrentSettings(t *testing.T, f *fixture) {
	const n = 12
	f.race(n, func(s store.Store, _ int) {
		_, err := s.UpdateSetting(f.ctx, "counter", func(old []byte) ([]byte, error) {
			var v int
			if old != nil {
				if _, err := fmt.Sscan(string(old), &v); err != nil {
					return nil, err
				}
			}
			return []byte(fmt.Sprint(v + 1)), nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	f.setting("counter", []byte(fmt.Sprint(n)))

	got := make([][]byte, racers)
	f.race(racers, func(s store.Store, i int) {
		v, err := s.SettingOrCreate(f.ctx, "seal", func() ([]byte, error) { return []byte(fmt.Sprint("value-", i)), nil })
		if err != nil {
			t.Error(err)
		}
		got[i] = v
	})
	for i, v := range got {
		if v == nil || string(v) != string(got[0]) {
			t.Fatalf("SettingOrCreate callers got %q and %q: want one value", got[0], got[i])
		}
	}
	f.setting("seal", got[0])
}

// testConcurrentRemember: of concurrent callers exactly one sees an id as
// new.
func testConcurrentRemember(t *testing.T, f *fixture) {
	until := f.clock.Now().Add(time.Minute)
	for round := range 3 {
		var fresh atomic.Int32
		f.race(racers, func(s store.Store, _ int) {
			ok, err := s.Remember(f.ctx, "client-assertion", fmt.Sprint("jti-", round), until)
			if err != nil {
				t.Error(err)
			}
			if ok {
				fresh.Add(1)
			}
		})
		if fresh.Load() != 1 {
			t.Errorf("round %d: %d callers saw the id as new, want 1", round, fresh.Load())
		}
	}
}
