package badgerstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// walSyncer syncs Badger's write-ahead logs, the memtables' *.mem files,
// through file descriptors of its own, without Badger's lock: DB.Sync holds
// the database's lock while it msyncs the log, which stops Badger's writer,
// so no transaction commits while an fsync runs, and the commits that
// queue behind it need another. Syncing the files directly lets commits go
// on during the fsync; the next fsync serves them.
//
// Every value is kept in the log (Options: the value threshold is Badger's
// maximum, far above any record), so the value log holds nothing to sync.
// A memtable rotated out after a commit keeps its file until Badger has
// flushed it to a table, which Badger syncs before it deletes the file:
// the files listed when an fsync starts hold every write committed before
// it, and a file gone by then is in a synced table.
type walSyncer struct {
	dir   string
	mu    sync.Mutex
	files map[string]*os.File
}

func newWALSyncer(dir string) *walSyncer {
	return &walSyncer{dir: dir, files: map[string]*os.File{}}
}

// sync syncs the data of every write-ahead log in the directory.
func (w *walSyncer) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	names, err := filepath.Glob(filepath.Join(w.dir, "*.mem"))
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		f := w.files[n]
		if f == nil {
			if f, err = os.OpenFile(n, os.O_RDWR, 0); errors.Is(err, fs.ErrNotExist) {
				continue // flushed to a synced table and deleted since the listing
			} else if err != nil {
				return err
			}
			w.files[n] = f
		}
		seen[n] = true
		if err := fdatasync(f); err != nil {
			return err
		}
	}
	for n, f := range w.files {
		if !seen[n] {
			_ = f.Close()
			delete(w.files, n)
		}
	}
	return nil
}

// close closes the files it holds.
func (w *walSyncer) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for n, f := range w.files {
		_ = f.Close()
		delete(w.files, n)
	}
}
