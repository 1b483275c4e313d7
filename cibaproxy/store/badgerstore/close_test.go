package badgerstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCloseGivesUpOnAGoneDirectory: with its directory removed under it,
// Badger's Close retries the flush of its memtable for ever; the store's
// Close gives up after closeTimeout and says so, so that a stop completes.
func TestCloseGivesUpOnAGoneDirectory(t *testing.T) {
	defer func(d time.Duration) { closeTimeout = d }(closeTimeout)
	closeTimeout = 200 * time.Millisecond
	dir := filepath.Join(t.TempDir(), "store")
	st, err := Open(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutSetting(context.Background(), "token_path", []byte("/token")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	select {
	case err := <-closed:
		if err == nil || !strings.Contains(err.Error(), "not closed after") {
			t.Fatalf("Close: %v, want the error of a close given up", err)
		}
	case <-time.After(time.Minute): // far beyond the bound: Close hangs
		t.Fatal("Close did not return")
	}
	if err := st.Close(); err == nil {
		t.Error("a second Close forgot the first one's failure")
	}
}
