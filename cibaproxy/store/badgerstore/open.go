// Package badgerstore is the store on an embedded Badger database on disk:
// one process opens a directory. It keeps requests in a compact binary
// record, counts pending requests in the transactions that change them,
// holds the pending requests' poll state in memory (the hot index), and
// makes every acknowledged write durable with a group commit (one fsync
// for the writes that wait at the same time).
package badgerstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/internal/codec"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"go.uber.org/zap"
)

// Options returns the Badger options cibaproxy opens a directory with.
// A committed write is in the memory-mapped write-ahead log, so it survives
// kill -9 at once; Open then also fsyncs it before the write returns,
// in groups (one fsync for all the writes that wait at the same time), so a
// request answered with 200 survives a power loss too. Memory is bounded
// for small records: two 16 MiB memtables, a 32 MiB block cache, table
// indexes and bloom filters held in memory (a few MiB per million
// requests), values kept in the LSM tree (they are small) and blocks
// uncompressed.
func Options(dir string) badger.Options {
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
		WithValueThreshold(1 << 20).
		WithNumCompactors(2).
		// No compression: a poll of a request not in the block cache
		// would decompress a whole block; records are small and few.
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithLogger(nil)
}

// Store is the Store on an on-disk Badger database.
type Store struct {
	db     *badger.DB
	logger *zap.Logger
	now    func() time.Time

	mu     sync.RWMutex // held for reading by operations, for writing by Close
	closed bool

	// Where DueItems seeks, and when it last read the index from its start
	// (monotonic); the due-index entries of transactions not yet
	// committed, and the reads under way (outbox.go).
	dueMu      sync.Mutex
	dueFrom    []byte
	dueFull    time.Time
	dueWriting map[*badger.Txn][]byte
	dueReads   map[*dueRead]struct{}
	dueNoted   atomic.Int64 // len(dueWriting), read without dueMu

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
	idle       chan struct{} // signalled when committing falls to 0
	// SyncCommitter: tickets taken by writers and the committer's wake-up
	// (walsync.go).
	syncMode      SyncMode
	tickets       uint64
	kick          chan struct{}
	commitStop    chan struct{} // closed once no write can wait any more
	committerOnce sync.Once
	wal           *walSyncer
	fsync         func() error // DB.Sync; a test's recorder
	stop          chan struct{}
	done          chan struct{}
	once          sync.Once
	closeErr      error // of the first Close
}

// indexCacheSize is the memory of the table indexes and bloom filters of
// an encrypted store: Badger keeps those of an encrypted table in a cache
// (decrypted) rather than all in memory, and needs one. 32 MiB holds those
// of several million requests.
const indexCacheSize = 32 << 20

// EncryptedOptions is Options with encryption at rest under key (16, 24
// or 32 bytes: AES-128, -192 or -256). Badger encrypts every file it
// writes (tables, value log, write-ahead log) with data keys it makes
// itself, a new one every 10 days (its default key rotation), kept in its
// key registry encrypted under key.
func EncryptedOptions(dir string, key []byte) badger.Options {
	return Options(dir).WithEncryptionKey(key).WithIndexCacheSize(indexCacheSize)
}

// Open opens (creating if needed) the Badger database in dir with
// Options and starts its value-log garbage collection. now is the
// clock used for TTLs (nil means time.Now).
func Open(dir string, logger *zap.Logger, now func() time.Time) (*Store, error) {
	return OpenEncrypted(dir, nil, logger, now)
}

// OpenEncrypted is Open of a store encrypted at rest under key
// (EncryptedOptions); a nil key opens an unencrypted store, as Open. A
// store is encrypted or not from its creation: Badger opens an encrypted
// one only with its key, an unencrypted one only without.
func OpenEncrypted(dir string, key []byte, logger *zap.Logger, now func() time.Time) (*Store, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	opts := Options(dir)
	if key != nil {
		if err := store.CheckEncryptionKey(key); err != nil {
			return nil, fmt.Errorf("opening badger store %s: encryption key: %w", dir, err)
		}
		opts = EncryptedOptions(dir, key)
	}
	s, err := open(opts.WithLogger(badgerLogger{logger.Sugar()}), logger, now)
	if err != nil {
		return nil, err
	}
	s.groupSync = true
	s.SetSyncMode(DefaultSyncMode)
	if err := s.releaseLeases(s.now()); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening badger store %s: %w", dir, err)
	}
	if err := s.releaseClaims(); err != nil {
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
// the next store.MaxItemLease of the due index is read.
func (s *Store) releaseLeases(now time.Time) error {
	from := make([]byte, 9)
	from[0] = kindDue
	binary.BigEndian.PutUint64(from[1:], uint64(max(now.UnixNano(), 0)))
	until := now.Add(store.MaxItemLease).UnixNano()
	var ids []store.ItemID
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindDue}})
		defer it.Close()
		for it.Seek(from); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+8+1+len(store.RequestKey{}) {
				continue
			}
			if int64(binary.BigEndian.Uint64(k[1:9])) > until {
				break
			}
			id := store.ItemID{Kind: store.KindOf(k[9])}
			copy(id.Request[:], k[10:])
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		_, err := s.updateItem(context.Background(), id, func(it *store.OutboxItem) error {
			if !it.LeaseUntil.After(now) {
				return errNotLeased
			}
			it.LeaseUntil = time.Time{}
			return nil
		})
		if err != nil && !errors.Is(err, errNotLeased) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("releasing the leases of a previous process: %w", err)
		}
	}
	return nil
}

var errNotLeased = errors.New("not leased")

// releaseClaims voids the claims of the polls a previous process was
// minting tokens for when it stopped: as with the outbox's leases, no claim
// found at open belongs to a live poll, so the approved request is
// redeemed by its next poll rather than answered slow_down until the dead
// poll's claim runs out. Claims are indexed while they hold (indexClaim),
// so only they are read. (A Redis store keeps its claims: replicas share
// it, and a live one may be minting.)
func (s *Store) releaseClaims() error {
	var keys []store.RequestKey
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindClaim}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+len(store.RequestKey{}) {
				continue
			}
			var key store.RequestKey
			copy(key[:], k[1:])
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, key := range keys {
		_, err := s.Update(context.Background(), key, func(r *store.AuthRequest) error {
			if r.Claim == "" {
				return errNotClaimed
			}
			r.Claim, r.ClaimUntil = "", time.Time{}
			return nil
		})
		if errors.Is(err, errNotClaimed) || errors.Is(err, store.ErrNotFound) {
			// A stale entry (the request went, or the claim was given
			// up by a version that kept no index).
			err = s.update(context.Background(), func(txn *badger.Txn) error { return txn.Delete(claimKey(key)) })
		}
		if err != nil {
			return fmt.Errorf("voiding the claims of a previous process: %w", err)
		}
	}
	return nil
}

var errNotClaimed = errors.New("not claimed")

// SyncMode is how a store acknowledges a durable write once it is on disk.
type SyncMode int

const (
	// SyncGroup: the writer that finds no fsync under way runs one (after
	// waiting briefly for the commits under way); the others wait for it.
	SyncGroup SyncMode = iota
	// SyncCommitter: a goroutine runs the fsyncs, one per gathered batch.
	SyncCommitter
)

func (m SyncMode) String() string {
	switch m {
	case SyncGroup:
		return "group"
	case SyncCommitter:
		return "committer"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// DefaultSyncMode is the SyncMode of Open.
const DefaultSyncMode = SyncGroup

// SetSyncMode sets how writes are made durable; for benchmarks, before
// the first write.
func (s *Store) SetSyncMode(m SyncMode) {
	s.syncMode = m
	if m == SyncCommitter {
		s.fsync = s.wal.sync
	} else {
		s.fsync = s.db.Sync
	}
}

// OpenWithOptions is Open with other Badger options, for tools
// such as the benchmark's bulk loader (which turns SyncWrites off and
// syncs once at the end). Production uses Options.
func OpenWithOptions(opts badger.Options, logger *zap.Logger, now func() time.Time) (*Store, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	return open(opts, logger, now)
}

func open(opts badger.Options, logger *zap.Logger, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	db, err := badger.Open(opts)
	switch {
	case errors.Is(err, badger.ErrEncryptionKeyMismatch) && len(opts.EncryptionKey) == 0:
		return nil, fmt.Errorf("opening badger store %s: the store is encrypted: give its encryption key", opts.Dir)
	case errors.Is(err, badger.ErrEncryptionKeyMismatch):
		return nil, fmt.Errorf("opening badger store %s: the encryption key does not match the store "+
			"(or the store was made without one: an unencrypted store cannot be encrypted in place; start with an empty directory)", opts.Dir)
	case err != nil:
		return nil, fmt.Errorf("opening badger store %s: %w", opts.Dir, err)
	}
	s := &Store{
		db:         db,
		logger:     logger,
		now:        now,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		warmed:     make(chan struct{}),
		counts:     newCountCache(),
		dueWriting: make(map[*badger.Txn][]byte),
		dueReads:   make(map[*dueRead]struct{}),
		kick:       make(chan struct{}, 1),
		idle:       make(chan struct{}, 1),

		commitStop: make(chan struct{}),
	}
	s.syncCond = sync.NewCond(&s.syncMu)
	s.fsync = db.Sync
	s.wal = newWALSyncer(opts.Dir)
	go s.gcLoop()
	return s, nil
}

// DB returns the underlying database, for benchmarks and tools.
func (s *Store) DB() *badger.DB { return s.db }

// closeTimeout bounds Close. Badger's own Close flushes the memtable and
// retries a failed flush for ever (its directory removed, its disk failing),
// which would hold up the process's stop; a variable so that a test can
// shorten it.
var closeTimeout = 10 * time.Second

// Close stops the garbage collection and closes the database, waiting at
// most closeTimeout: past it, it logs and returns an error and leaves
// Badger's close running, so that a stop completes. A write it answered is
// in Badger's log on disk either way, replayed at the next open. It is safe
// to call more than once.
func (s *Store) Close() error {
	s.once.Do(func() {
		done := make(chan error, 1)
		go func() { done <- s.close() }()
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case s.closeErr = <-done:
		case <-t.C:
			dir := s.db.Opts().Dir
			s.logger.Error("the badger store did not close in time: its disk may be failing or its directory gone; giving up on it",
				zap.String("dir", dir), zap.Duration("waited", closeTimeout))
			s.closeErr = fmt.Errorf("closing badger store %s: not closed after %s (is its disk failing or its directory gone?)", dir, closeTimeout)
		}
	})
	return s.closeErr
}

// close is Close without its bound.
func (s *Store) close() error {
	close(s.stop)
	<-s.done
	if s.hot != nil {
		<-s.warmed
	}
	s.mu.Lock()
	s.closed = true // no write is under way, none waits for an fsync
	s.mu.Unlock()
	close(s.commitStop)
	err := s.db.Close()
	s.wal.close()
	return err
}

// warmBatch bounds the records one transaction of the scan at open reads.
const warmBatch = 4096

// warm enters the pending requests in the hot index, in the background,
// batch by batch: the first polls after a restart read their requests
// (and enter them) as before, and none waits for the scan. An entry is
// entered only if its shard saw no write since its batch began.
func (s *Store) warm() {
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
				if len(k) != 1+len(store.RequestKey{}) {
					continue
				}
				if n == warmBatch {
					after = item.KeyCopy(nil)
					return nil
				}
				n++
				seen++
				err := item.Value(func(v []byte) error {
					sum, err := codec.DecodeSummary(v)
					if err != nil || sum.Status != store.StatusPending {
						return nil // a corrupt record is the reader's to report
					}
					var key store.RequestKey
					copy(key[:], k[1:])
					e := s.hot.entry(sum.Client, sum.Expires, sum.Interval)
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
			if !errors.Is(err, store.ErrClosed) {
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
func (s *Store) gcLoop() {
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

func (b badgerLogger) Errorf(f string, v ...any) { b.l.Errorf("badger: "+f, v...) }

func (b badgerLogger) Warningf(f string, v ...any) { b.l.Warnf("badger: "+f, v...) }

func (b badgerLogger) Infof(string, ...any) {}

func (b badgerLogger) Debugf(string, ...any) {}
