package cibaproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// The Badger store's approval links, outbox, settings and replay cache.

func linkKey(key LinkKey) []byte {
	b := make([]byte, 1+len(key))
	b[0] = kindLink
	copy(b[1:], key[:])
	return b
}

func outboxKey(id ItemID) []byte {
	b := make([]byte, 2+len(id.Request))
	b[0], b[1] = kindOutbox, id.Kind
	copy(b[2:], id.Request[:])
	return b
}

func settingKey(name string) []byte {
	return append([]byte{kindSetting}, name...)
}

// Link implements Store.
func (s *BadgerStore) Link(ctx context.Context, link LinkKey) (RequestKey, error) {
	var key RequestKey
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(linkKey(link))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != len(key) {
				return fmt.Errorf("corrupt link record of %d bytes", len(v))
			}
			copy(key[:], v)
			return nil
		})
	})
	return key, err
}

// AddLink implements Store.
func (s *BadgerStore) AddLink(ctx context.Context, link LinkKey, key RequestKey, expires time.Time) error {
	return s.update(ctx, func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(linkKey(link), key[:]).WithTTL(s.ttl(expires)))
	})
}

// dueKey indexes the outbox by the time a worker must next look at an
// item, so it reads only those: when it is next due, or when its request
// expires if that comes first (it is then dropped). 'q', time (ns), kind,
// request key.
func dueKey(it *OutboxItem) []byte {
	at := maxTime(it.Next, it.LeaseUntil)
	if !it.NotAfter.IsZero() && it.NotAfter.Before(at) {
		at = it.NotAfter
	}
	b := make([]byte, 1+8+1+len(it.ID.Request))
	b[0] = kindDue
	binary.BigEndian.PutUint64(b[1:], uint64(max(at.UnixNano(), 0)))
	b[9] = it.ID.Kind
	copy(b[10:], it.ID.Request[:])
	return b
}

// putItem stores an item and its due-index entry, replacing an earlier
// version of it.
func (s *BadgerStore) putItem(txn *badger.Txn, it *OutboxItem) error {
	if err := s.deleteItem(txn, it.ID); err != nil {
		return err
	}
	return s.putNewItem(txn, it)
}

// putNewItem stores an item and its due-index entry where no earlier
// version of it can be: the items of a request Create makes.
func (s *BadgerStore) putNewItem(txn *badger.Txn, it *OutboxItem) error {
	val := encodeItem(it)
	ttl := s.ttl(it.NotAfter)
	if err := txn.SetEntry(badger.NewEntry(outboxKey(it.ID), val).WithTTL(ttl)); err != nil {
		return err
	}
	return txn.SetEntry(badger.NewEntry(dueKey(it), nil).WithTTL(ttl))
}

// deleteItem removes an item and its due-index entry, if it is there.
func (s *BadgerStore) deleteItem(txn *badger.Txn, id ItemID) error {
	old, err := getItem(txn, id)
	if errors.Is(err, ErrNotFound) {
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
// rather than from where the previous call left it: a backstop for entries
// written behind that point by a clock that went back.
const dueRescan = 10 * time.Second

// DueItems implements Store. It seeks from where the previous call left
// the index (dueFrom) rather than from its start: entries taken are moved
// (leased) or deleted, and a queue's head is a run of their tombstones that
// every read from the start would step over again. dueFrom is never past
// an entry the previous call returned or left, nor later than a second
// before its now, so entries written since (due at their writer's now, or
// later) lie after it.
func (s *BadgerStore) DueItems(ctx context.Context, now time.Time, limit int, accept func(*OutboxItem) bool) ([]*OutboxItem, time.Time, error) {
	var items []*OutboxItem
	var next time.Time
	prefix := []byte{kindDue}
	s.dueMu.Lock()
	start, full := s.dueFrom, s.dueFrom == nil || time.Since(s.dueFull) >= dueRescan
	s.dueMu.Unlock()
	if full {
		start = prefix
	}
	var left []byte // the first entry returned or left due
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+8+1+len(RequestKey{}) {
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
			id := ItemID{Kind: k[9]}
			copy(id.Request[:], k[10:])
			item, err := getItem(txn, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if accept != nil && !accept(item) {
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
	binary.BigEndian.PutUint64(from[1:], uint64(max(now.Add(-time.Second).UnixNano(), 0)))
	if left != nil && bytes.Compare(left, from) < 0 {
		from = left
	}
	s.dueMu.Lock()
	s.dueFrom = from
	if full {
		s.dueFull = time.Now()
	}
	s.dueMu.Unlock()
	return items, next, nil
}

func getItem(txn *badger.Txn, id ItemID) (*OutboxItem, error) {
	item, err := txn.Get(outboxKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	it := &OutboxItem{ID: id}
	if err := item.Value(func(v []byte) error { return decodeItem(v, it) }); err != nil {
		return nil, fmt.Errorf("decoding outbox item: %w", err)
	}
	return it, nil
}

// Enqueue implements Store.
func (s *BadgerStore) Enqueue(ctx context.Context, it *OutboxItem) error {
	return s.update(ctx, func(txn *badger.Txn) error { return s.putItem(txn, it) })
}

// ScanOutbox implements Store.
func (s *BadgerStore) ScanOutbox(ctx context.Context, fn func(*OutboxItem) bool) error {
	return s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindOutbox}, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := it.Item().Key()
			if len(k) != 2+len(RequestKey{}) {
				continue
			}
			item := &OutboxItem{ID: ItemID{Kind: k[1]}}
			copy(item.ID.Request[:], k[2:])
			if err := it.Item().Value(func(v []byte) error { return decodeItem(v, item) }); err != nil {
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
func (s *BadgerStore) OutboxCounts(ctx context.Context) (map[byte]int, error) {
	counts := make(map[byte]int)
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindOutbox}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) == 2+len(RequestKey{}) {
				counts[k[1]]++
			}
		}
		return nil
	})
	return counts, err
}

// updateItem is Update for outbox items.
func (s *BadgerStore) updateItem(ctx context.Context, id ItemID, fn func(*OutboxItem) error) (*OutboxItem, error) {
	var it *OutboxItem
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
func (s *BadgerStore) LeaseItem(ctx context.Context, id ItemID, now, until time.Time) (*OutboxItem, error) {
	return s.updateItem(ctx, id, func(it *OutboxItem) error {
		if !it.Due(now) {
			return ErrNotDue
		}
		it.LeaseUntil = until
		it.Attempts++
		return nil
	})
}

// RetryItem implements Store.
func (s *BadgerStore) RetryItem(ctx context.Context, id ItemID, next time.Time, lastErr string) error {
	_, err := s.updateItem(ctx, id, func(it *OutboxItem) error {
		it.LeaseUntil, it.Next, it.LastError = time.Time{}, next, lastErr
		return nil
	})
	return err
}

// DeleteItem implements Store.
func (s *BadgerStore) DeleteItem(ctx context.Context, id ItemID) error {
	return s.DeleteItems(ctx, id)
}

// DeleteItems implements Store.
func (s *BadgerStore) DeleteItems(ctx context.Context, ids ...ItemID) error {
	return s.updateNoSync(ctx, func(txn *badger.Txn) error {
		for _, id := range ids {
			if err := s.deleteItem(txn, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// UpdateSetting implements Store.
func (s *BadgerStore) UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error) {
	k := settingKey(name)
	var out []byte
	err := s.update(ctx, func(txn *badger.Txn) error {
		var old []byte
		item, err := txn.Get(k)
		switch {
		case err == nil:
			if old, err = item.ValueCopy(nil); err != nil {
				return err
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		v, err := fn(old)
		if err != nil {
			return err
		}
		if v == nil {
			out = old
			return nil
		}
		out = v
		return txn.Set(k, v)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SettingOrCreate implements Store.
func (s *BadgerStore) SettingOrCreate(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	return s.UpdateSetting(ctx, name, func(old []byte) ([]byte, error) {
		if old != nil {
			return nil, nil
		}
		return create()
	})
}

// Setting implements Store.
func (s *BadgerStore) Setting(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(settingKey(name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	return v, err
}

// PutSetting implements Store.
func (s *BadgerStore) PutSetting(ctx context.Context, name string, value []byte) error {
	return s.update(ctx, func(txn *badger.Txn) error { return txn.Set(settingKey(name), value) })
}

// Remember implements Store.
func (s *BadgerStore) Remember(ctx context.Context, namespace, id string, until time.Time) (bool, error) {
	sum := sha256.Sum256([]byte(namespace + "\x00" + id))
	k := append([]byte{kindReplay}, sum[:]...)
	fresh := false
	err := s.update(ctx, func(txn *badger.Txn) error {
		fresh = false
		if _, err := txn.Get(k); err == nil {
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		fresh = true
		return txn.SetEntry(badger.NewEntry(k, nil).WithTTL(s.ttl(until)))
	})
	return fresh, err
}
