package redisstore_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
	"github.com/redis/go-redis/v9"
)

// TestConformance runs the store suite against a real redis-server: each
// subtest on keys of its own prefix, a second client of the same prefix
// for the persistence checks and for the stores shared by two replicas.
func TestConformance(t *testing.T) {
	conformance(t, nil)
}

// TestConformanceEncrypted runs the store suite against a Redis whose
// settings are sealed, every client with the same key.
func TestConformanceEncrypted(t *testing.T) {
	conformance(t, cibatest.StoreKey(t))
}

// conformance runs the store suite against a real redis-server, the
// clients with the encryption key key (nil: none).
func conformance(t *testing.T, key []byte) {
	srv := cibatest.StartRedis(t)
	var n atomic.Int64
	open := func(t *testing.T, prefix string, now func() time.Time) store.Store {
		s, err := redisstore.Open(redisstore.Config{URL: srv.URL(0), KeyPrefix: prefix, EncryptionKey: key}, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	prefixes := map[store.Store]string{}
	clocks := map[store.Store]func() time.Time{}
	var mu atomicMap
	storetest.Run(t, storetest.Engine{
		Open: func(t *testing.T, now func() time.Time) store.Store {
			prefix := fmt.Sprintf("test%d:", n.Add(1))
			s := open(t, prefix, now)
			mu.put(func() { prefixes[s], clocks[s] = prefix, now })
			return s
		},
		Reopen: func(t *testing.T, s store.Store, now func() time.Time) store.Store {
			var prefix string
			mu.get(func() { prefix = prefixes[s] })
			r := open(t, prefix, now)
			mu.put(func() { prefixes[r], clocks[r] = prefix, now })
			return r
		},
		Share: func(t *testing.T, s store.Store) store.Store {
			var prefix string
			var now func() time.Time
			mu.get(func() { prefix, now = prefixes[s], clocks[s] })
			r := open(t, prefix, now)
			mu.put(func() { prefixes[r], clocks[r] = prefix, now })
			return r
		},
	})
}

// TestDueItemsReadsWhatItTakes: DueItems reads the items it returns, and
// those Accept refuses on the way, but not the others due behind them
// (a pass per freed delivery slot asks for one) nor those Skip leaves out.
// The reads are counted by the server (HGETALL, one per item read).
func TestDueItemsReadsWhatItTakes(t *testing.T) {
	srv := cibatest.StartRedis(t)
	ctx := context.Background()
	t0 := time.Now()
	s, err := redisstore.Open(redisstore.Config{URL: srv.URL(0), KeyPrefix: "due:"}, nil, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = admin.Close() })
	var ids []store.ItemID
	for i := range 10 {
		id := store.ItemID{Kind: storetest.KindA, Request: store.KeyOf(strconv.Itoa(i))}
		ids = append(ids, id)
		if err := s.Enqueue(ctx, &store.OutboxItem{ID: id, Sender: "site", NotAfter: t0.Add(time.Hour), Next: t0.Add(time.Duration(i-20) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	reads := func(what string, limit int, filter store.DueFilter, want []store.ItemID, wantReads int) {
		t.Helper()
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		due, next, err := s.DueItems(ctx, t0, limit, filter)
		if err != nil {
			t.Fatal(err)
		}
		var got []store.ItemID
		for _, it := range due {
			got = append(got, it.ID)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d items, want %d", what, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: item %d is %s, want %s", what, i, got[i].Request.Short(), want[i].Request.Short())
			}
		}
		if !next.Equal(t0) {
			t.Errorf("%s: next %v, want now (more are due)", what, next)
		}
		info, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if m := regexp.MustCompile(`cmdstat_hgetall:calls=(\d+)`).FindStringSubmatch(info); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if n != wantReads {
			t.Errorf("%s: %d items read, want %d", what, n, wantReads)
		}
	}
	reads("limit 1", 1, store.DueFilter{}, ids[:1], 1)
	reads("limit 3", 3, store.DueFilter{}, ids[:3], 3)
	skip := func(id store.ItemID) bool { return id == ids[0] || id == ids[1] }
	reads("two skipped, limit 2", 2, store.DueFilter{Skip: skip}, ids[2:4], 2)
	refuse := func(it *store.OutboxItem) bool { return it.ID != ids[0] && it.ID != ids[1] }
	reads("two refused, limit 2", 2, store.DueFilter{Accept: refuse}, ids[2:4], 4)
}
