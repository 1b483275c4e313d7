package badgerstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/internal/codec"
	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// putItem stores an item and its due-index entry, replacing an earlier
// version of it.
func (s *Store) putItem(txn *badger.Txn, it *store.OutboxItem) error {
	if err := s.deleteItem(txn, it.ID); err != nil {
		return err
	}
	return s.putNewItem(txn, it)
}

// putNewItem stores an item and its due-index entry where no earlier
// version of it can be: the items of a request Create makes.
func (s *Store) putNewItem(txn *badger.Txn, it *store.OutboxItem) error {
	val := codec.EncodeItem(it)
	ttl := s.ttl(it.NotAfter)
	if err := txn.SetEntry(badger.NewEntry(outboxKey(it.ID), val).WithTTL(ttl)); err != nil {
		return err
	}
	due := dueKey(it)
	s.noteDue(txn, due)
	return txn.SetEntry(badger.NewEntry(due, nil).WithTTL(ttl))
}

// deleteItem removes an item and its due-index entry, if it is there.
func (s *Store) deleteItem(txn *badger.Txn, id store.ItemID) error {
	old, err := getItem(txn, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := txn.Delete(dueKey(old)); err != nil {
		return err
	}
	return txn.Delete(outboxKey(id))
}

// dueRescan is how often DueItems reads the due index from its start
// rather than from where the previous call left it: a backstop only, since
// every entry written behind that point moves the point back (noteDue).
const dueRescan = 10 * time.Second

// A due-index entry is written with its item's due time, which its writer
// took before its transaction; it becomes visible when that transaction
// commits, possibly after a DueItems read that began later and found
// nothing due before it. So the store notes every entry put (noteDue) until
// its transaction is over (dueDone): an entry noted moves the point
// DueItems reads from back to it, as well as the low mark of each read
// under way, which the read's own new point cannot pass. An entry is thus
// either seen by a read, or behind the point no later read starts past.

// dueRead is one DueItems read under way: low is the least entry noted
// since it began, or in a transaction not over when it began.
type dueRead struct{ low []byte }

func (r *dueRead) lower(k []byte) {
	if r.low == nil || bytes.Compare(k, r.low) < 0 {
		r.low = k
	}
}

// noteDue records the due-index entry k put by txn (see dueRead).
func (s *Store) noteDue(txn *badger.Txn, k []byte) {
	s.dueMu.Lock()
	defer s.dueMu.Unlock()
	if old, ok := s.dueWriting[txn]; !ok {
		s.dueWriting[txn] = k
		s.dueNoted.Add(1)
	} else if bytes.Compare(k, old) < 0 {
		s.dueWriting[txn] = k
	}
	if s.dueFrom != nil && bytes.Compare(k, s.dueFrom) < 0 {
		s.dueFrom = k
	}
	for r := range s.dueReads {
		r.lower(k)
	}
}

// dueDone forgets the entries of txn, committed or discarded.
func (s *Store) dueDone(txn *badger.Txn) {
	if s.dueNoted.Load() == 0 {
		return // txn noted none: noteDue ran on this goroutine if at all
	}
	s.dueMu.Lock()
	defer s.dueMu.Unlock()
	if _, ok := s.dueWriting[txn]; ok {
		delete(s.dueWriting, txn)
		s.dueNoted.Add(-1)
	}
}

// DueItems implements Store. It seeks from where the previous call left
// the due index (dueFrom) rather than from its start: entries taken are
// moved (leased) or deleted, and a queue's head is a run of their
// tombstones that every read from the start would step over again.
// dueFrom is never past an entry the previous call returned or left, nor
// past its now, nor past an entry written since it began (noteDue).
func (s *Store) DueItems(ctx context.Context, now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time, error) {
	var items []*store.OutboxItem
	var next time.Time
	prefix := []byte{kindDue}
	read := &dueRead{}
	s.dueMu.Lock()
	start, full := s.dueFrom, s.dueFrom == nil || time.Since(s.dueFull) >= dueRescan
	for _, k := range s.dueWriting {
		read.lower(k)
	}
	s.dueReads[read] = struct{}{}
	s.dueMu.Unlock()
	defer func() {
		s.dueMu.Lock()
		delete(s.dueReads, read)
		s.dueMu.Unlock()
	}()
	if full {
		start = prefix
	}
	var left []byte // the first entry returned or left due
	err := s.view(func(txn *badger.Txn) error {
		// The entries' values are empty: no prefetching, which would read
		// a hundred entries ahead of the few a call takes.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+8+1+len(store.RequestKey{}) {
				continue
			}
			due := time.Unix(0, int64(binary.BigEndian.Uint64(k[1:9])))
			if due.After(now) {
				next = due
				return nil
			}
			if left == nil {
				left = it.Item().KeyCopy(nil)
			}
			if len(items) == limit {
				next = now // more are due
				return nil
			}
			id := store.ItemID{Kind: store.KindOf(k[9])}
			copy(id.Request[:], k[10:])
			if filter.Skips(id) {
				continue
			}
			item, err := getItem(txn, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !filter.Accepts(item) {
				continue
			}
			items = append(items, item)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	from := make([]byte, 9)
	from[0] = kindDue
	binary.BigEndian.PutUint64(from[1:], uint64(max(now.UnixNano(), 0)))
	if left != nil && bytes.Compare(left, from) < 0 {
		from = left
	}
	s.dueMu.Lock()
	if read.low != nil && bytes.Compare(read.low, from) < 0 {
		from = read.low
	}
	s.dueFrom = from
	if full {
		s.dueFull = time.Now()
	}
	s.dueMu.Unlock()
	return items, next, nil
}

func getItem(txn *badger.Txn, id store.ItemID) (*store.OutboxItem, error) {
	item, err := txn.Get(outboxKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	it := &store.OutboxItem{ID: id}
	if err := item.Value(func(v []byte) error { return codec.DecodeItem(v, it) }); err != nil {
		return nil, fmt.Errorf("decoding outbox item: %w", err)
	}
	return it, nil
}

// Enqueue implements Store.
func (s *Store) Enqueue(ctx context.Context, it *store.OutboxItem) error {
	return s.update(ctx, func(txn *badger.Txn) error { return s.putItem(txn, it) })
}

// ScanOutbox implements Store.
func (s *Store) ScanOutbox(ctx context.Context, fn func(*store.OutboxItem) bool) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindOutbox}, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			if len(k) != 2+len(store.RequestKey{}) {
				continue
			}
			item := &store.OutboxItem{ID: store.ItemID{Kind: store.KindOf(k[1])}}
			copy(item.ID.Request[:], k[2:])
			if err := it.Item().Value(func(v []byte) error { return codec.DecodeItem(v, item) }); err != nil {
				s.logger.Warn("skipping an undecodable outbox item", zap.Error(err))
				continue
			}
			if !fn(item) {
				return nil
			}
		}
		return nil
	})
}

// OutboxCounts implements Store.
func (s *Store) OutboxCounts(ctx context.Context) (map[store.Kind]int, error) {
	counts := make(map[store.Kind]int)
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindOutbox}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) == 2+len(store.RequestKey{}) {
				counts[store.KindOf(k[1])]++
			}
		}
		return nil
	})
	return counts, err
}

// updateItem is Update for outbox items.
func (s *Store) updateItem(ctx context.Context, id store.ItemID, fn func(*store.OutboxItem) error) (*store.OutboxItem, error) {
	var it *store.OutboxItem
	err := s.updateNoSync(ctx, func(txn *badger.Txn) error {
		var err error
		if it, err = getItem(txn, id); err != nil {
			return err
		}
		if err := fn(it); err != nil {
			return err
		}
		return s.putItem(txn, it)
	})
	if err != nil {
		return nil, err
	}
	return it, nil
}

// LeaseItem implements Store.
func (s *Store) LeaseItem(ctx context.Context, id store.ItemID, now, until time.Time) (*store.OutboxItem, error) {
	return s.updateItem(ctx, id, func(it *store.OutboxItem) error {
		if !it.Due(now) {
			return store.ErrNotDue
		}
		it.LeaseUntil = until
		it.Attempts++
		return nil
	})
}

// RetryItem implements Store.
func (s *Store) RetryItem(ctx context.Context, id store.ItemID, next time.Time, lastErr string) error {
	_, err := s.updateItem(ctx, id, func(it *store.OutboxItem) error {
		it.LeaseUntil, it.Next, it.LastError = time.Time{}, next, lastErr
		return nil
	})
	return err
}

// DeleteItem implements Store.
func (s *Store) DeleteItem(ctx context.Context, id store.ItemID) error {
	return s.DeleteItems(ctx, id)
}

// DeleteItems implements Store.
func (s *Store) DeleteItems(ctx context.Context, ids ...store.ItemID) error {
	return s.updateNoSync(ctx, func(txn *badger.Txn) error {
		for _, id := range ids {
			if err := s.deleteItem(txn, id); err != nil {
				return err
			}
		}
		return nil
	})
}
