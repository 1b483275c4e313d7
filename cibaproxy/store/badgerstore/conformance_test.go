package badgerstore

import (
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
)

// TestConformance runs the store suite against Badger on disk, reopening
// the directory for the persistence checks (which void the claims).
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Engine{
		Open: func(t *testing.T, now func() time.Time) store.Store {
			return openTestStore(t, t.TempDir(), now)
		},
		Reopen: func(t *testing.T, s store.Store, now func() time.Time) store.Store {
			return openTestStore(t, s.(*Store).DB().Opts().Dir, now)
		},
		VoidsClaims: true,
	})
}

// TestConformanceEncrypted runs the store suite against Badger encrypted
// at rest, reopened with the same key.
func TestConformanceEncrypted(t *testing.T) {
	key := cibatest.StoreKey(t)
	open := func(t *testing.T, dir string, now func() time.Time) store.Store {
		s, err := OpenEncrypted(dir, key, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	storetest.Run(t, storetest.Engine{
		Open: func(t *testing.T, now func() time.Time) store.Store {
			return open(t, t.TempDir(), now)
		},
		Reopen: func(t *testing.T, s store.Store, now func() time.Time) store.Store {
			return open(t, s.(*Store).DB().Opts().Dir, now)
		},
		VoidsClaims: true,
	})
}
