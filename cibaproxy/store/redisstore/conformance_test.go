package redisstore_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/redisstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
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
