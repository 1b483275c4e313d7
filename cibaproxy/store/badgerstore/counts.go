package badgerstore

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	badger "github.com/dgraph-io/badger/v4"
)

// The pending counts (a user's, 'c', and the shards of the total, 'p') are
// read and written by every new request and every decision. Badger's Get
// of a key written that often walks every table holding one of its
// versions, so Store keeps the counts it has read or written in
// memory and writes them without reading them back. That is exact only if
// nobody else writes a count meanwhile, so each count belongs to a stripe,
// and a writer holds the stripes of the counts it changes from before its
// transaction reads them until that transaction is committed (not until
// its fsync). A request's counts, its user's and its shard of the total,
// share one stripe: its user's, or its key's for a request without one.
const (
	countStripes = pendingShards
	// countCacheMax bounds the counts a stripe keeps in memory; beyond it
	// an arbitrary one is forgotten and read from Badger when next needed.
	countCacheMax = 1024
)

type countStripe struct {
	mu   sync.Mutex
	vals map[string]int64 // committed values of counts in this stripe
}

type countCache struct {
	stripes [countStripes]countStripe
}

func newCountCache() *countCache {
	c := new(countCache)
	for i := range c.stripes {
		c.stripes[i].vals = make(map[string]int64)
	}
	return c
}

// countStripeOf is the stripe of the counts of the request key, whose user
// key is user when hasUser.
func countStripeOf(key store.RequestKey, user [userKeyLen]byte, hasUser bool) int {
	if hasUser {
		return int(user[0]) % countStripes
	}
	return int(key[0]) % countStripes
}

// pendingShardKey is the shard of the pending total kept in stripe.
func pendingShardKey(stripe int) []byte {
	return []byte{kindPending, byte(stripe)}
}

// errRelock: a transaction needs a stripe another writer holds; it is run
// again once the writer holds all the stripes it needs, taken in order.
var errRelock = errors.New("a count's stripe is held by another writer")

// countTxn is the counts' side of one write transaction.
type countTxn struct {
	c       *countCache
	held    []int // stripes held, ascending
	missing int   // the stripe whose TryLock failed, or -1
	ops     []countOp
}

// countOp is a count this transaction read from Badger (write false) or
// wrote, with its value.
type countOp struct {
	stripe int
	key    string
	n      int64
	write  bool
}

// lock takes the stripes (ascending, none held before).
func (t *countTxn) lock(stripes []int) {
	for _, i := range stripes {
		t.c.stripes[i].mu.Lock()
	}
	t.held = append(t.held[:0], stripes...)
}

func (t *countTxn) unlock() {
	for _, i := range t.held {
		t.c.stripes[i].mu.Unlock()
	}
	t.held = t.held[:0]
}

// need makes sure the stripe is held, without waiting: errRelock when
// another writer holds it. A stripe taken inside a transaction may have
// changed after the transaction's snapshot; a count read from Badger then
// makes the commit conflict (and the transaction run again), and a count
// in memory is current.
func (t *countTxn) need(stripe int) error {
	i, found := slices.BinarySearch(t.held, stripe)
	if found {
		return nil
	}
	if !t.c.stripes[stripe].mu.TryLock() {
		t.missing = stripe
		return errRelock
	}
	t.held = slices.Insert(t.held, i, stripe)
	return nil
}

// get returns the count k of stripe.
func (t *countTxn) get(txn *badger.Txn, stripe int, k []byte) (int64, error) {
	if err := t.need(stripe); err != nil {
		return 0, err
	}
	for i := len(t.ops) - 1; i >= 0; i-- {
		if t.ops[i].key == string(k) {
			return t.ops[i].n, nil
		}
	}
	if n, ok := t.c.stripes[stripe].vals[string(k)]; ok {
		return n, nil
	}
	n, err := getInt(txn, k)
	if err != nil {
		return 0, err
	}
	t.ops = append(t.ops, countOp{stripe: stripe, key: string(k), n: n})
	return n, nil
}

// set sets the count k of stripe to n (deleting it at zero).
func (t *countTxn) set(txn *badger.Txn, stripe int, k []byte, n int64) error {
	if err := t.need(stripe); err != nil {
		return err
	}
	if err := setInt(txn, k, n); err != nil {
		return err
	}
	t.ops = append(t.ops, countOp{stripe: stripe, key: string(k), n: n, write: true})
	return nil
}

// add adds d to the count k of stripe and returns its new value.
func (t *countTxn) add(txn *badger.Txn, stripe int, k []byte, d int64) (int64, error) {
	n, err := t.get(txn, stripe, k)
	if err != nil {
		return 0, err
	}
	return n + d, t.set(txn, stripe, k, n+d)
}

// done records the counts of a committed transaction in memory, or
// forgets those it wrote if it failed (a failed commit may have written
// them).
func (t *countTxn) done(committed bool) {
	for _, op := range t.ops {
		vals := t.c.stripes[op.stripe].vals
		if !committed {
			if op.write {
				delete(vals, op.key)
			}
			continue
		}
		if _, ok := vals[op.key]; !ok && len(vals) >= countCacheMax {
			for k := range vals {
				delete(vals, k)
				break
			}
		}
		vals[op.key] = op.n
	}
	t.ops = t.ops[:0]
}

// countedWrite is write for transactions that change pending counts: fn
// changes them through ct only. It holds the stripes first (and those fn
// turns out to need) from before the transaction until its commit, and
// waits for the fsync (when durable) after letting them go.
func (s *Store) countedWrite(ctx context.Context, durable bool, first []int, fn func(txn *badger.Txn, ct *countTxn) error) error {
	want := slices.Compact(slices.Sorted(slices.Values(first)))
	ct := &countTxn{c: s.counts}
	for attempt := 0; ; attempt++ {
		ct.lock(want)
		err := s.write(ctx, false, func(txn *badger.Txn) error {
			ct.ops = ct.ops[:0]
			ct.missing = -1
			return fn(txn, ct)
		})
		ct.done(err == nil)
		missing := ct.missing
		if errors.Is(err, errRelock) {
			want = append(want[:0], ct.held...)
			if j, found := slices.BinarySearch(want, missing); !found {
				want = slices.Insert(want, j, missing)
			}
		}
		ct.unlock()
		// Each run takes one more stripe: bounded by their number.
		if errors.Is(err, errRelock) && attempt < countStripes+updateAttempts {
			continue
		}
		if errors.Is(err, errRelock) {
			return store.ErrConflict
		}
		if err == nil && durable && s.groupSync {
			return s.sync()
		}
		return err
	}
}
