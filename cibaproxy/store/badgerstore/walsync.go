package badgerstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// SyncCommitter: a committer goroutine (below) runs the fsyncs, and a
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
	// next is the file of the memtable Badger makes next (its files are
	// numbered in order): listing the directory costs ~50 µs, a stat of
	// one name ~2 µs, so the directory is listed again only once it
	// exists (or after an error).
	next string
}

func newWALSyncer(dir string) *walSyncer {
	return &walSyncer{dir: dir, files: map[string]*os.File{}}
}

// sync syncs the data of every write-ahead log in the directory.
func (w *walSyncer) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.next != "" {
		if _, err := os.Stat(w.next); errors.Is(err, fs.ErrNotExist) {
			return w.syncHeld()
		}
	}
	if err := w.list(); err != nil {
		w.next = ""
		return err
	}
	return w.syncHeld()
}

// syncHeld syncs the files it holds; a file deleted since it was opened
// (flushed to a synced table) costs only its call.
func (w *walSyncer) syncHeld() error {
	for _, f := range w.files {
		if err := fdatasync(f); err != nil {
			w.next = "" // list again next time
			return err
		}
	}
	return nil
}

// list opens the write-ahead logs in the directory and closes those gone.
func (w *walSyncer) list() error {
	names, err := filepath.Glob(filepath.Join(w.dir, "*.mem"))
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(names))
	last := 0
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
		if id, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(n), ".mem")); err == nil {
			last = max(last, id)
		}
	}
	for n, f := range w.files {
		if !seen[n] {
			_ = f.Close()
			delete(w.files, n)
		}
	}
	w.next = filepath.Join(w.dir, fmt.Sprintf("%05d.mem", last+1))
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

// syncByCommitter is SyncCommitter: the writer takes a ticket after its
// commit and waits until the committer goroutine has finished an fsync
// that began after the ticket was taken. The committer syncs once per
// gathered batch: every ticket taken while an fsync runs is served by the
// next one, which starts as soon as the previous ends.
func (s *Store) syncByCommitter() error {
	s.committerOnce.Do(func() { go s.committer() })
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.tickets++
	t := s.tickets
	select {
	case s.kick <- struct{}{}:
	default:
	}
	for s.finished < t {
		s.syncCond.Wait()
	}
	return s.syncErr
}

func (s *Store) committer() {
	for {
		select {
		case <-s.kick:
		case <-s.commitStop:
			return
		}
		s.gather()
		s.syncMu.Lock()
		t := s.tickets // every ticket up to t was taken after its commit
		s.syncMu.Unlock()
		err := s.fsync()
		s.syncMu.Lock()
		s.finished, s.syncErr = t, err
		s.syncCond.Broadcast()
		s.syncMu.Unlock()
	}
}
