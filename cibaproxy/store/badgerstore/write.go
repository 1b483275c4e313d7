package badgerstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	badger "github.com/dgraph-io/badger/v4"
)

// syncGather bounds how long an fsync waits for the commits under way to
// share it.
const syncGather = 300 * time.Microsecond

// ttl is the Badger TTL of a record that expires at expires: a
// garbage-collection backstop only, since Badger's TTL runs on wall-clock
// time while expiry is decided against the injected clock.
func (s *Store) ttl(expires time.Time) time.Duration {
	d := expires.Sub(s.now()) + store.Grace
	if d < time.Second {
		d = time.Second
	}
	return d
}

// update runs fn in a read-write transaction, again on a conflicting write
// (a bounded number of times, then store.ErrConflict), honouring ctx; it returns
// store.ErrClosed after Close.
func (s *Store) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	return s.write(ctx, true, fn)
}

// updateNoSync is update without waiting for the fsync, for bookkeeping a
// power loss may undo harmlessly (an outbox lease, a retry time, a
// delivered item's removal: at worst a mail is sent again). kill -9 never
// loses it.
func (s *Store) updateNoSync(ctx context.Context, fn func(txn *badger.Txn) error) error {
	return s.write(ctx, false, fn)
}

func (s *Store) write(ctx context.Context, durable bool, fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.committing.Add(1)
		err := s.transact(fn)
		if s.committing.Add(-1) == 0 {
			select {
			case s.idle <- struct{}{}:
			default:
			}
		}
		if err == nil && durable && s.groupSync {
			return s.sync()
		}
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		// Someone else wrote what fn read: run it again on fresh values.
		time.Sleep(time.Duration(attempt+1) * 100 * time.Microsecond)
	}
	return store.ErrConflict
}

// transact is Badger's DB.Update (fn in a new transaction, committed when
// it succeeds) that also forgets the due-index entries the transaction
// noted once it is over.
func (s *Store) transact(fn func(txn *badger.Txn) error) error {
	txn := s.db.NewTransaction(true)
	defer s.dueDone(txn)
	defer txn.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	return txn.Commit()
}

// sync returns once an fsync that started after the caller's commit has
// finished, by the store's SyncMode.
func (s *Store) sync() error {
	var err error
	if s.syncMode == SyncCommitter {
		err = s.syncByCommitter()
	} else {
		err = s.syncAsLeader()
	}
	if err != nil {
		return fmt.Errorf("syncing the store: %w", err)
	}
	return nil
}

// syncAsLeader is SyncGroup: concurrent writers share one fsync, which the
// first of them to find none under way runs. DB.Sync syncs the current
// memtable's log and the value log; a write whose memtable was rotated out
// in between is on disk once that memtable is flushed, moments later (kill
// -9 never loses it: the log is mapped).
func (s *Store) syncAsLeader() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	target := s.started + 1 // the next fsync to start is the first after our commit
	for s.finished < target {
		if s.syncing {
			s.syncCond.Wait()
			continue
		}
		s.syncing = true
		// Gather: writers whose commits are under way when this fsync is
		// due share it rather than wait for the next (their transactions
		// wait for Badger's writer, which waits for the previous fsync).
		// Those that come while it gathers wait for it (started+1).
		s.syncMu.Unlock()
		s.gather()
		s.syncMu.Lock()
		s.started++
		n := s.started
		s.syncMu.Unlock()
		err := s.fsync()
		s.syncMu.Lock()
		s.syncing, s.finished, s.syncErr = false, n, err
		s.syncCond.Broadcast()
	}
	return s.syncErr
}

// gather returns once no commit is under way, or after syncGather: the
// commits under way when an fsync is due share it rather than wait for the
// next.
func (s *Store) gather() {
	if s.committing.Load() == 0 {
		return
	}
	t := time.NewTimer(syncGather)
	defer t.Stop()
	for s.committing.Load() > 0 {
		select {
		case <-s.idle:
		case <-t.C:
			return
		}
	}
}

// view runs fn in a read-only transaction; store.ErrClosed after Close.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.db.View(fn)
}

func getInt(txn *badger.Txn, k []byte) (int64, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("corrupt counter of %d bytes", len(v))
		}
		n = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	return n, err
}

// setInt sets the counter k to n, deleting it at zero.
func setInt(txn *badger.Txn, k []byte, n int64) error {
	if n == 0 {
		return txn.Delete(k)
	}
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, uint64(n))
	return txn.Set(k, v)
}
