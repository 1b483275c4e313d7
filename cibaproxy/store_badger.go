package cibaproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// BadgerOptions returns the Badger options cibaproxy opens a directory with.
// Every write is synced before it is acknowledged (SyncWrites), so a request
// answered with 200 survives kill -9; Badger batches concurrent commits into
// one fsync. Memory is bounded for small records: two 16 MiB memtables, a
// 32 MiB block cache, table indexes and bloom filters held in memory (a few
// MiB per million requests), values kept in the LSM tree (they are small).
func BadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithDetectConflicts(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(10).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(0).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithCompression(options.Snappy).
		WithMetricsEnabled(false).
		WithLogger(nil)
}

// Key layout: one-byte kind, then the 32-byte hash or the setting name.
const (
	kindRequest byte = 'r'
	kindLink    byte = 'l'
	kindSetting byte = 's'
	kindOutbox  byte = 'o'
)

const (
	updateAttempts = 16
	gcInterval     = 10 * time.Minute
	gcDiscardRatio = 0.5
)

// BadgerStore is the Store on an on-disk Badger database.
type BadgerStore struct {
	db     *badger.DB
	logger *zap.Logger
	now    func() time.Time

	mu     sync.RWMutex // held for reading by operations, for writing by Close
	closed bool
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// OpenBadger opens (creating if needed) the Badger database in dir with
// BadgerOptions and starts its value-log garbage collection. now is the
// clock used for TTLs (nil means time.Now).
func OpenBadger(dir string, logger *zap.Logger, now func() time.Time) (*BadgerStore, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts := BadgerOptions(dir).WithLogger(badgerLogger{logger.Sugar()})
	return openBadger(opts, logger, now)
}

func openBadger(opts badger.Options, logger *zap.Logger, now func() time.Time) (*BadgerStore, error) {
	if now == nil {
		now = time.Now
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening badger store %s: %w", opts.Dir, err)
	}
	s := &BadgerStore{
		db:     db,
		logger: logger,
		now:    now,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.gcLoop()
	return s, nil
}

// DB returns the underlying database, for benchmarks and tools.
func (s *BadgerStore) DB() *badger.DB { return s.db }

func requestKey(key RequestKey) []byte {
	b := make([]byte, 1+len(key))
	b[0] = kindRequest
	copy(b[1:], key[:])
	return b
}

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

// ttl is the Badger TTL of a record that expires at expires: a
// garbage-collection backstop only, since Badger's TTL runs on wall-clock
// time while expiry is decided against the injected clock.
func (s *BadgerStore) ttl(expires time.Time) time.Duration {
	d := expires.Sub(s.now()) + StoreGrace
	if d < time.Second {
		d = time.Second
	}
	return d
}

func (s *BadgerStore) begin() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *BadgerStore) end() { s.mu.RUnlock() }

// Create implements Store.
func (s *BadgerStore) Create(ctx context.Context, key RequestKey, r *AuthRequest, out *Outbound) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	if err := ctx.Err(); err != nil {
		return err
	}
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding request: %w", err)
	}
	ttl := s.ttl(r.Expires)
	k := requestKey(key)
	err = s.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(k); err == nil {
			return ErrExists
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := txn.SetEntry(badger.NewEntry(k, val).WithTTL(ttl)); err != nil {
			return err
		}
		if out == nil {
			return nil
		}
		for _, l := range out.Links {
			if err := txn.SetEntry(badger.NewEntry(linkKey(l), key[:]).WithTTL(ttl)); err != nil {
				return err
			}
		}
		for _, it := range out.Items {
			it.ID.Request = key
			if err := s.putItem(txn, it); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, badger.ErrConflict) {
		return ErrExists
	}
	return err
}

// Get implements Store.
func (s *BadgerStore) Get(ctx context.Context, key RequestKey) (*AuthRequest, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	var r *AuthRequest
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		r, err = getRequest(txn, requestKey(key))
		return err
	})
	return r, err
}

func getRequest(txn *badger.Txn, k []byte) (*AuthRequest, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r := new(AuthRequest)
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, r) })
	if err != nil {
		return nil, fmt.Errorf("decoding request: %w", err)
	}
	return r, nil
}

// Update implements Store.
func (s *BadgerStore) Update(ctx context.Context, key RequestKey, fn func(*AuthRequest) error) (*AuthRequest, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	k := requestKey(key)
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var r *AuthRequest
		err := s.db.Update(func(txn *badger.Txn) error {
			var err error
			r, err = getRequest(txn, k)
			if err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
			val, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("encoding request: %w", err)
			}
			return txn.SetEntry(badger.NewEntry(k, val).WithTTL(s.ttl(r.Expires)))
		})
		if errors.Is(err, badger.ErrConflict) {
			// Someone else wrote the record between our read and commit:
			// run fn again on the fresh value.
			time.Sleep(time.Duration(attempt+1) * 100 * time.Microsecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	return nil, ErrConflict
}

// Link implements Store.
func (s *BadgerStore) Link(ctx context.Context, link LinkKey) (RequestKey, error) {
	var key RequestKey
	if err := s.begin(); err != nil {
		return key, err
	}
	defer s.end()
	err := s.db.View(func(txn *badger.Txn) error {
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
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.SetEntry(badger.NewEntry(linkKey(link), key[:]).WithTTL(s.ttl(expires)))
	})
}

func (s *BadgerStore) putItem(txn *badger.Txn, it *OutboxItem) error {
	val, err := json.Marshal(it)
	if err != nil {
		return fmt.Errorf("encoding outbox item: %w", err)
	}
	return txn.SetEntry(badger.NewEntry(outboxKey(it.ID), val).WithTTL(s.ttl(it.NotAfter)))
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
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, it) }); err != nil {
		return nil, fmt.Errorf("decoding outbox item: %w", err)
	}
	return it, nil
}

// Enqueue implements Store.
func (s *BadgerStore) Enqueue(ctx context.Context, it *OutboxItem) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	return s.db.Update(func(txn *badger.Txn) error { return s.putItem(txn, it) })
}

// ScanOutbox implements Store.
func (s *BadgerStore) ScanOutbox(ctx context.Context, fn func(*OutboxItem) bool) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	return s.db.View(func(txn *badger.Txn) error {
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
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, item) }); err != nil {
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

// updateItem is Update for outbox items.
func (s *BadgerStore) updateItem(ctx context.Context, id ItemID, fn func(*OutboxItem) error) (*OutboxItem, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var it *OutboxItem
		err := s.db.Update(func(txn *badger.Txn) error {
			var err error
			if it, err = getItem(txn, id); err != nil {
				return err
			}
			if err := fn(it); err != nil {
				return err
			}
			return s.putItem(txn, it)
		})
		if errors.Is(err, badger.ErrConflict) {
			time.Sleep(time.Duration(attempt+1) * 100 * time.Microsecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		return it, nil
	}
	return nil, ErrConflict
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
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(outboxKey(id)) })
}

// UpdateSetting implements Store.
func (s *BadgerStore) UpdateSetting(ctx context.Context, name string, fn func(old []byte) ([]byte, error)) ([]byte, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	k := settingKey(name)
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var out []byte
		err := s.db.Update(func(txn *badger.Txn) error {
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
		if errors.Is(err, badger.ErrConflict) {
			time.Sleep(time.Duration(attempt+1) * 100 * time.Microsecond)
			continue
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, ErrConflict
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
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
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
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(settingKey(name), value)
	})
}

// Close stops the garbage collection and closes the database. It is safe to
// call more than once.
func (s *BadgerStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		err = s.db.Close()
	})
	return err
}

// gcLoop runs Badger's value-log garbage collection, in the manner of
// ipfs/go-ds-badger4: rewrite files while it finds garbage, then wait.
func (s *BadgerStore) gcLoop() {
	defer close(s.done)
	t := time.NewTimer(gcInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for {
			err := s.db.RunValueLogGC(gcDiscardRatio)
			if err == nil {
				continue
			}
			if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
				s.logger.Warn("badger value log gc failed", zap.Error(err))
			}
			break
		}
		t.Reset(gcInterval)
	}
}

// badgerLogger passes Badger's warnings and errors to zap; its chatty info
// and debug lines are dropped.
type badgerLogger struct{ l *zap.SugaredLogger }

func (b badgerLogger) Errorf(f string, v ...any)   { b.l.Errorf("badger: "+f, v...) }
func (b badgerLogger) Warningf(f string, v ...any) { b.l.Warnf("badger: "+f, v...) }
func (b badgerLogger) Infof(string, ...any)        {}
func (b badgerLogger) Debugf(string, ...any)       {}
