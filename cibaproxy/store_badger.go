package cibaproxy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// BadgerOptions returns the Badger options cibaproxy opens a directory with.
// A committed write is in the memory-mapped write-ahead log, so it survives
// kill -9 at once; OpenBadger then also fsyncs it before the write returns,
// in groups (one fsync for all the writes that wait at the same time), so a
// request answered with 200 survives a power loss too. Memory is bounded
// for small records: two 16 MiB memtables, a 32 MiB block cache, table
// indexes and bloom filters held in memory (a few MiB per million
// requests), values kept in the LSM tree (they are small) and blocks
// uncompressed.
func BadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithDetectConflicts(true).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(10).
		WithBlockCacheSize(32 << 20).
		WithIndexCacheSize(0).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		// No compression: a poll of a request not in the block cache
		// would decompress a whole block; records are small and few.
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithLogger(nil)
}

// Key layout: one byte for the kind of record, then its identity.
//
//	'r' request key                         → the request (JSON)
//	'l' link key                            → request key
//	'o' item kind, request key              → outbox item (JSON)
//	's' setting name                        → value
//	'x' expires (ns), request key           → user key, created (ns): while pending
//	'u' user key, created (ns), request key → empty: while pending
//	'c' user key                            → the user's pending count
//	'p' shard                               → a shard of the pending count
//	'j' hash of namespace and id            → empty: a seen jti, until it expires
//	'q' due (ns), item kind, request key    → empty: the outbox by due time
//
// Pending requests are counted in the transaction that changes them, so the
// count is exact across restarts without a scan: created +1, decided,
// expired (swept) or replaced −1.
const (
	kindRequest byte = 'r'
	kindLink    byte = 'l'
	kindSetting byte = 's'
	kindOutbox  byte = 'o'
	kindExpiry  byte = 'x'
	kindUserIdx byte = 'u'
	kindUserCnt byte = 'c'
	kindPending byte = 'p'
	kindReplay  byte = 'j'
	kindDue     byte = 'q'
)

const (
	updateAttempts = 16
	gcInterval     = 10 * time.Minute
	gcDiscardRatio = 0.5
	pendingShards  = 64
	userKeyLen     = 16
)

// syncGather bounds how long an fsync waits for the commits under way to
// share it, checking every syncGatherStep.
const (
	syncGather     = 300 * time.Microsecond
	syncGatherStep = 20 * time.Microsecond
)

// ErrUserLimit is returned by Create when the user has too many undecided
// requests.
var ErrUserLimit = errors.New("too many undecided requests for this user")

// BadgerStore is the Store on an on-disk Badger database.
type BadgerStore struct {
	db     *badger.DB
	logger *zap.Logger
	now    func() time.Time

	mu     sync.RWMutex // held for reading by operations, for writing by Close
	closed bool

	// Where DueItems seeks, and when it last read the index from its start
	// (monotonic).
	dueMu   sync.Mutex
	dueFrom []byte
	dueFull time.Time

	// counts holds the pending counts read or written lately, and the
	// stripes their writers hold (store_counts.go).
	counts *countCache

	// hot holds the pending requests' poll state (nil: not kept); warmed
	// by a scan at open, which warmed closes when done.
	hot    *hotIndex
	warmed chan struct{}

	// Group commit: every write waits for an fsync that started after it
	// committed; one fsync serves all the writes waiting for it.
	groupSync bool
	syncMu    sync.Mutex
	syncCond  *sync.Cond
	syncing   bool
	started   uint64 // fsyncs started
	finished  uint64 // fsyncs finished
	syncErr   error  // of the last finished fsync
	// committing counts the transactions being committed (write).
	committing atomic.Int64
	fsync      func() error // DB.Sync; a test's recorder
	stop       chan struct{}
	done       chan struct{}
	once       sync.Once
}

// OpenBadger opens (creating if needed) the Badger database in dir with
// BadgerOptions and starts its value-log garbage collection. now is the
// clock used for TTLs (nil means time.Now).
func OpenBadger(dir string, logger *zap.Logger, now func() time.Time) (*BadgerStore, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts := BadgerOptions(dir).WithLogger(badgerLogger{logger.Sugar()})
	s, err := openBadger(opts, logger, now)
	if err != nil {
		return nil, err
	}
	s.groupSync = true
	if err := s.releaseLeases(s.now()); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening badger store %s: %w", dir, err)
	}
	s.hot = newHotIndex()
	go s.warm()
	return s, nil
}

// releaseLeases frees the outbox items a previous process held when it
// stopped (kill -9, a crash, a power loss). Badger lets one process at a
// time open a directory, so at open no lease belongs to a live worker: the
// mail of a request answered just before a crash goes out at once rather
// than when the dead worker's lease would have run out. Leased items are
// indexed at the end of their lease (or their expiry, if sooner), so only
// the next ItemLease of the due index is read.
func (s *BadgerStore) releaseLeases(now time.Time) error {
	from := make([]byte, 9)
	from[0] = kindDue
	binary.BigEndian.PutUint64(from[1:], uint64(max(now.UnixNano(), 0)))
	until := now.Add(ItemLease).UnixNano()
	var ids []ItemID
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindDue}})
		defer it.Close()
		for it.Seek(from); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+8+1+len(RequestKey{}) {
				continue
			}
			if int64(binary.BigEndian.Uint64(k[1:9])) > until {
				break
			}
			id := ItemID{Kind: k[9]}
			copy(id.Request[:], k[10:])
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		_, err := s.updateItem(context.Background(), id, func(it *OutboxItem) error {
			if !it.LeaseUntil.After(now) {
				return errNotLeased
			}
			it.LeaseUntil = time.Time{}
			return nil
		})
		if err != nil && !errors.Is(err, errNotLeased) && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("releasing the leases of a previous process: %w", err)
		}
	}
	return nil
}

var errNotLeased = errors.New("not leased")

// OpenBadgerWithOptions is OpenBadger with other Badger options, for tools
// such as the benchmark's bulk loader (which turns SyncWrites off and
// syncs once at the end). Production uses BadgerOptions.
func OpenBadgerWithOptions(opts badger.Options, logger *zap.Logger, now func() time.Time) (*BadgerStore, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
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
		warmed: make(chan struct{}),
		counts: newCountCache(),
	}
	s.syncCond = sync.NewCond(&s.syncMu)
	s.fsync = db.Sync
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

// userKeyOf identifies a user in the pending index; requests without a
// subject (hide_unknown_users) have none.
func userKeyOf(r *AuthRequest) ([userKeyLen]byte, bool) {
	var k [userKeyLen]byte
	if r.User.Subject == "" {
		return k, false
	}
	sum := sha256.Sum256([]byte(r.User.Subject))
	copy(k[:], sum[:])
	return k, true
}

func expiryKey(expires time.Time, key RequestKey) []byte {
	b := make([]byte, 1+8+len(key))
	b[0] = kindExpiry
	binary.BigEndian.PutUint64(b[1:], uint64(expires.UnixNano()))
	copy(b[9:], key[:])
	return b
}

func userIdxKey(user [userKeyLen]byte, created time.Time, key RequestKey) []byte {
	b := make([]byte, 1+userKeyLen+8+len(key))
	b[0] = kindUserIdx
	copy(b[1:], user[:])
	binary.BigEndian.PutUint64(b[1+userKeyLen:], uint64(created.UnixNano()))
	copy(b[1+userKeyLen+8:], key[:])
	return b
}

func userCntKey(user [userKeyLen]byte) []byte {
	return append([]byte{kindUserCnt}, user[:]...)
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

// update runs fn in a read-write transaction, again on a conflicting write
// (a bounded number of times, then ErrConflict), honouring ctx; it returns
// ErrClosed after Close.
func (s *BadgerStore) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	return s.write(ctx, true, fn)
}

// updateNoSync is update without waiting for the fsync, for bookkeeping a
// power loss may undo harmlessly (an outbox lease, a retry time, a
// delivered item's removal: at worst a mail is sent again). kill -9 never
// loses it.
func (s *BadgerStore) updateNoSync(ctx context.Context, fn func(txn *badger.Txn) error) error {
	return s.write(ctx, false, fn)
}

func (s *BadgerStore) write(ctx context.Context, durable bool, fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.committing.Add(1)
		err := s.db.Update(fn)
		s.committing.Add(-1)
		if err == nil && durable && s.groupSync {
			return s.sync()
		}
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
		// Someone else wrote what fn read: run it again on fresh values.
		time.Sleep(time.Duration(attempt+1) * 100 * time.Microsecond)
	}
	return ErrConflict
}

// sync returns once an fsync that started after the caller's commit has
// finished: concurrent writers share one fsync (group commit). DB.Sync
// syncs the current memtable's log and the value log; a write whose
// memtable was rotated out in between is on disk once that memtable is
// flushed, moments later (kill -9 never loses it: the log is mapped).
func (s *BadgerStore) sync() error {
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
		for t0 := time.Now(); s.committing.Load() > 0 && time.Since(t0) < syncGather; {
			time.Sleep(syncGatherStep)
		}
		s.syncMu.Lock()
		s.started++
		n := s.started
		s.syncMu.Unlock()
		err := s.fsync()
		s.syncMu.Lock()
		s.syncing, s.finished, s.syncErr = false, n, err
		s.syncCond.Broadcast()
	}
	if s.syncErr != nil {
		return fmt.Errorf("syncing the store: %w", s.syncErr)
	}
	return nil
}

// view runs fn in a read-only transaction; ErrClosed after Close.
func (s *BadgerStore) view(fn func(txn *badger.Txn) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
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

// Create implements Store.
func (s *BadgerStore) Create(ctx context.Context, key RequestKey, r *AuthRequest, out *Outbound, limit UserLimit) error {
	val := encodeRequest(r)
	ttl := s.ttl(r.Expires)
	k := requestKey(key)
	var gen uint64
	var replaced []RequestKey
	if s.hot != nil {
		gen = s.hot.gen(key)
		defer func() {
			for _, old := range replaced {
				s.hot.drop(old)
			}
		}()
	}
	user, hasUser := userKeyOf(r)
	var stripes []int
	if r.Status == StatusPending {
		stripes = []int{countStripeOf(key, user, hasUser)}
	}
	err := s.countedWrite(ctx, true, stripes, func(txn *badger.Txn, ct *countTxn) error {
		replaced = replaced[:0]
		if _, err := txn.Get(k); err == nil {
			return ErrExists
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := txn.SetEntry(badger.NewEntry(k, val).WithTTL(ttl)); err != nil {
			return err
		}
		if r.Status == StatusPending {
			old, err := s.countNew(txn, ct, key, r, user, hasUser, limit)
			if err != nil {
				return err
			}
			if old != nil {
				replaced = append(replaced, *old)
			}
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
			// The request is new (checked above), so are its items:
			// request keys are hashes of random ids, and no item
			// outlives its request (NotAfter is at most its expiry).
			if err := s.putNewItem(txn, it); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && s.hot != nil {
		if e, ok := s.hot.entryOf(r); ok {
			s.hot.put(key, e, gen, s.now().UnixNano())
		}
	}
	return err
}

// countNew enters a new pending request, whose user key is user when
// hasUser, in the indexes and counts, within the user's limit. It returns
// the key of the request it replaced, if any.
func (s *BadgerStore) countNew(txn *badger.Txn, ct *countTxn, key RequestKey, r *AuthRequest, user [userKeyLen]byte, hasUser bool, limit UserLimit) (*RequestKey, error) {
	stripe := countStripeOf(key, user, hasUser)
	xv := make([]byte, userKeyLen+8)
	var replaced *RequestKey
	if hasUser {
		n, err := ct.get(txn, stripe, userCntKey(user))
		if err != nil {
			return nil, err
		}
		if limit.Max > 0 && n >= int64(limit.Max) {
			if !limit.ReplaceOldest {
				return nil, ErrUserLimit
			}
			if replaced, err = s.replaceOldest(txn, ct, user, r.Created); err != nil {
				return nil, err
			}
			if n, err = ct.get(txn, stripe, userCntKey(user)); err != nil { // as replaceOldest left it
				return nil, err
			}
		}
		if err := ct.set(txn, stripe, userCntKey(user), n+1); err != nil { // n as read above
			return nil, err
		}
		if err := txn.Set(userIdxKey(user, r.Created, key), nil); err != nil {
			return nil, err
		}
		copy(xv, user[:])
	}
	binary.BigEndian.PutUint64(xv[userKeyLen:], uint64(r.Created.UnixNano()))
	if err := txn.Set(expiryKey(r.Expires, key), xv); err != nil {
		return nil, err
	}
	_, err := ct.add(txn, stripe, pendingShardKey(stripe), 1)
	return replaced, err
}

// replaceOldest expires the user's oldest pending request at now, drops its
// queued mail, and takes it out of the counts. It returns its key.
func (s *BadgerStore) replaceOldest(txn *badger.Txn, ct *countTxn, user [userKeyLen]byte, now time.Time) (*RequestKey, error) {
	prefix := append([]byte{kindUserIdx}, user[:]...)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	it.Rewind()
	if !it.Valid() {
		it.Close()
		return nil, ErrUserLimit // counted but not indexed: refuse rather than guess
	}
	idx := it.Item().KeyCopy(nil)
	it.Close()
	var old RequestKey
	copy(old[:], idx[1+userKeyLen+8:])
	r, err := getRequest(txn, requestKey(old))
	if err != nil {
		return nil, fmt.Errorf("the oldest pending request: %w", err)
	}
	if err := s.uncount(txn, ct, old, r); err != nil {
		return nil, err
	}
	r.Expires = now
	if err := txn.SetEntry(badger.NewEntry(requestKey(old), encodeRequest(r)).WithTTL(s.ttl(now))); err != nil {
		return nil, err
	}
	// Nobody is to be asked about it any more.
	for _, kind := range []byte{KindMail, KindChannel} {
		if err := s.deleteItem(txn, ItemID{Kind: kind, Request: old}); err != nil {
			return nil, err
		}
	}
	return &old, nil
}

// uncount takes a request that stops being pending out of the indexes and
// counts, once: the expiry entry is the proof it is still counted.
func (s *BadgerStore) uncount(txn *badger.Txn, ct *countTxn, key RequestKey, r *AuthRequest) error {
	xk := expiryKey(r.Expires, key)
	if _, err := txn.Get(xk); errors.Is(err, badger.ErrKeyNotFound) {
		return nil // already swept
	} else if err != nil {
		return err
	}
	if err := txn.Delete(xk); err != nil {
		return err
	}
	user, hasUser := userKeyOf(r)
	stripe := countStripeOf(key, user, hasUser)
	if hasUser {
		if err := txn.Delete(userIdxKey(user, r.Created, key)); err != nil {
			return err
		}
		if _, err := ct.add(txn, stripe, userCntKey(user), -1); err != nil {
			return err
		}
	}
	_, err := ct.add(txn, stripe, pendingShardKey(stripe), -1)
	return err
}

// Get implements Store.
func (s *BadgerStore) Get(ctx context.Context, key RequestKey) (*AuthRequest, error) {
	var gen uint64
	if s.hot != nil {
		gen = s.hot.gen(key)
	}
	var r *AuthRequest
	err := s.view(func(txn *badger.Txn) error {
		var err error
		r, err = getRequest(txn, requestKey(key))
		return err
	})
	if err == nil && s.hot != nil {
		if e, ok := s.hot.entryOf(r); ok {
			s.hot.put(key, e, gen, s.now().UnixNano())
		}
	}
	return r, err
}

// PeekPending implements PendingPeeker.
func (s *BadgerStore) PeekPending(key RequestKey, now time.Time) (PendingState, bool) {
	if s.hot == nil {
		return PendingState{}, false
	}
	e, ok := s.hot.peek(key, now.UnixNano())
	if !ok {
		return PendingState{}, false
	}
	return PendingState{ClientID: s.hot.clientID(e.client), Expires: time.Unix(0, e.expires).UTC(),
		Interval: time.Duration(e.interval) * time.Millisecond}, true
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
	err = item.Value(func(v []byte) error { return decodeRequest(v, r) })
	if err != nil {
		return nil, fmt.Errorf("decoding request: %w", err)
	}
	return r, nil
}

// Update implements Store.
func (s *BadgerStore) Update(ctx context.Context, key RequestKey, fn func(*AuthRequest) error) (*AuthRequest, error) {
	return s.UpdateQueue(ctx, key, func(r *AuthRequest) ([]*OutboxItem, error) { return nil, fn(r) })
}

// UpdateQueue implements Store.
func (s *BadgerStore) UpdateQueue(ctx context.Context, key RequestKey, fn func(*AuthRequest) ([]*OutboxItem, error)) (*AuthRequest, error) {
	k := requestKey(key)
	var r *AuthRequest
	if s.hot != nil {
		// Whatever the outcome: a write that failed may have committed.
		defer s.hot.drop(key)
	}
	err := s.countedWrite(ctx, true, nil, func(txn *badger.Txn, ct *countTxn) error {
		var err error
		if r, err = getRequest(txn, k); err != nil {
			return err
		}
		before := *r
		items, err := fn(r)
		if err != nil {
			return err
		}
		if before.Status == StatusPending && r.Status != StatusPending {
			if err := s.uncount(txn, ct, key, &before); err != nil {
				return err
			}
		}
		if err := txn.SetEntry(badger.NewEntry(k, encodeRequest(r)).WithTTL(s.ttl(r.Expires))); err != nil {
			return err
		}
		for _, it := range items {
			it.ID.Request = key
			if err := s.putItem(txn, it); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// PendingCount implements Store.
func (s *BadgerStore) PendingCount(ctx context.Context) (int64, error) {
	var total int64
	err := s.view(func(txn *badger.Txn) error {
		for shard := range pendingShards {
			n, err := getInt(txn, []byte{kindPending, byte(shard)})
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	return total, err
}

// sweepBatch bounds the expired requests one transaction takes out.
const sweepBatch = 256

// SweepExpired implements Store.
func (s *BadgerStore) SweepExpired(ctx context.Context, now time.Time) (int, error) {
	if s.hot != nil {
		s.hot.sweep(now.UnixNano())
	}
	swept := 0
	for {
		var keys [][]byte
		err := s.view(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindExpiry}})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(keys) < sweepBatch; it.Next() {
				k := it.Item().Key()
				if len(k) != 1+8+len(RequestKey{}) {
					continue
				}
				if int64(binary.BigEndian.Uint64(k[1:9])) > now.UnixNano() {
					break // sorted by expiry: the rest lives on
				}
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return swept, err
		}
		n, err := s.sweepKeys(ctx, keys)
		if err != nil {
			return swept + n, err
		}
		swept += n
		if len(keys) < sweepBatch {
			return swept, nil
		}
	}
}

// sweepKeys takes the expired requests of the expiry-index keys out of the
// counts in one transaction. Under load the pending counters it touches are
// written by every new request, so a conflict splits the keys in halves,
// down to one a transaction, rather than failing the sweep.
func (s *BadgerStore) sweepKeys(ctx context.Context, keys [][]byte) (int, error) {
	n := 0
	err := s.countedWrite(ctx, true, nil, func(txn *badger.Txn, ct *countTxn) error {
		n = 0
		for _, xk := range keys {
			item, err := txn.Get(xk)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // decided meanwhile
			}
			if err != nil {
				return err
			}
			xv, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			var key RequestKey
			copy(key[:], xk[9:])
			if err := txn.Delete(xk); err != nil {
				return err
			}
			var user [userKeyLen]byte
			if len(xv) == userKeyLen+8 {
				copy(user[:], xv)
			}
			hasUser := user != [userKeyLen]byte{}
			stripe := countStripeOf(key, user, hasUser)
			if hasUser {
				created := time.Unix(0, int64(binary.BigEndian.Uint64(xv[userKeyLen:])))
				if err := txn.Delete(userIdxKey(user, created, key)); err != nil {
					return err
				}
				if _, err := ct.add(txn, stripe, userCntKey(user), -1); err != nil {
					return err
				}
			}
			if _, err := ct.add(txn, stripe, pendingShardKey(stripe), -1); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if errors.Is(err, ErrConflict) && len(keys) > 1 {
		a, err := s.sweepKeys(ctx, keys[:len(keys)/2])
		if err != nil {
			return a, err
		}
		b, err := s.sweepKeys(ctx, keys[len(keys)/2:])
		return a + b, err
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// UserPending implements Store.
func (s *BadgerStore) UserPending(ctx context.Context, subject string) (int64, error) {
	var n int64
	user, ok := userKeyOf(&AuthRequest{User: User{Subject: subject}})
	if !ok {
		return 0, nil
	}
	err := s.view(func(txn *badger.Txn) error {
		var err error
		n, err = getInt(txn, userCntKey(user))
		return err
	})
	return n, err
}

// Close stops the garbage collection and closes the database. It is safe to
// call more than once.
func (s *BadgerStore) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		if s.hot != nil {
			<-s.warmed
		}
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		err = s.db.Close()
	})
	return err
}

// warmBatch bounds the records one transaction of the scan at open reads.
const warmBatch = 4096

// warm enters the pending requests in the hot index, in the background,
// batch by batch: the first polls after a restart read their requests
// (and enter them) as before, and none waits for the scan. An entry is
// entered only if its shard saw no write since its batch began.
func (s *BadgerStore) warm() {
	defer close(s.warmed)
	t0 := time.Now()
	entered, seen := 0, 0
	var gens [hotShards]uint64
	next := []byte{kindRequest}
	for next != nil {
		select {
		case <-s.stop:
			return
		default:
		}
		for i := range gens {
			gens[i] = s.hot.shards[i].gen.Load()
		}
		now := s.now().UnixNano()
		var after []byte
		err := s.view(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindRequest}, PrefetchValues: false})
			defer it.Close()
			n := 0
			for it.Seek(next); it.Valid(); it.Next() {
				item := it.Item()
				k := item.Key()
				if len(k) != 1+len(RequestKey{}) {
					continue
				}
				if n == warmBatch {
					after = item.KeyCopy(nil)
					return nil
				}
				n++
				seen++
				err := item.Value(func(v []byte) error {
					sum, err := decodeSummary(v)
					if err != nil || sum.status != StatusPending {
						return nil // a corrupt record is the reader's to report
					}
					var key RequestKey
					copy(key[:], k[1:])
					e := s.hot.entry(sum.client, sum.expires, sum.interval)
					if now < e.expires {
						s.hot.put(key, e, gens[key[0]], now)
						entered++
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				s.logger.Warn("scanning the pending requests at open", zap.Error(err))
			}
			return
		}
		next = after
	}
	s.logger.Info("pending requests held in memory", zap.Int("requests_read", seen), zap.Int("pending", entered),
		zap.Float64("seconds", time.Since(t0).Seconds()))
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
