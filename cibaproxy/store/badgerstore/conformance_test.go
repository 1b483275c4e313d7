package badgerstore

import (
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/storetest"
)

// TestConformance runs the store suite against Badger on disk, reopening
// the directory for the persistence checks.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Engine{
		Open: func(t *testing.T, now func() time.Time) store.Store {
			return openTestStore(t, t.TempDir(), now)
		},
		Reopen: func(t *testing.T, s store.Store, now func() time.Time) store.Store {
			return openTestStore(t, s.(*Store).DB().Opts().Dir, now)
		},
	})
}
