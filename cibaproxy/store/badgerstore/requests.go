package badgerstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/internal/codec"
	badger "github.com/dgraph-io/badger/v4"
)

// Create implements Store.
func (s *Store) Create(ctx context.Context, key store.RequestKey, r *store.AuthRequest, out *store.Outbound, limit store.UserLimit) error {
	val := codec.EncodeRequest(r)
	ttl := s.ttl(r.Expires)
	k := requestKey(key)
	var gen uint64
	var replaced []store.RequestKey
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
	if r.Status == store.StatusPending {
		stripes = []int{countStripeOf(key, user, hasUser)}
	}
	err := s.countedWrite(ctx, true, stripes, func(txn *badger.Txn, ct *countTxn) error {
		replaced = replaced[:0]
		if _, err := txn.Get(k); err == nil {
			return store.ErrExists
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if err := txn.SetEntry(badger.NewEntry(k, val).WithTTL(ttl)); err != nil {
			return err
		}
		if err := s.indexClaim(txn, key, "", r); err != nil {
			return err
		}
		if r.Status == store.StatusPending {
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
func (s *Store) countNew(txn *badger.Txn, ct *countTxn, key store.RequestKey, r *store.AuthRequest, user [userKeyLen]byte, hasUser bool, limit store.UserLimit) (*store.RequestKey, error) {
	stripe := countStripeOf(key, user, hasUser)
	xv := make([]byte, userKeyLen+8)
	var replaced *store.RequestKey
	if hasUser {
		n, err := ct.get(txn, stripe, userCntKey(user))
		if err != nil {
			return nil, err
		}
		if limit.Max > 0 && n >= int64(limit.Max) {
			if !limit.ReplaceOldest {
				return nil, store.ErrUserLimit
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
func (s *Store) replaceOldest(txn *badger.Txn, ct *countTxn, user [userKeyLen]byte, now time.Time) (*store.RequestKey, error) {
	prefix := append([]byte{kindUserIdx}, user[:]...)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	it.Rewind()
	if !it.Valid() {
		it.Close()
		return nil, store.ErrUserLimit // counted but not indexed: refuse rather than guess
	}
	idx := it.Item().KeyCopy(nil)
	it.Close()
	var old store.RequestKey
	copy(old[:], idx[1+userKeyLen+8:])
	r, err := getRequest(txn, requestKey(old))
	if err != nil {
		return nil, fmt.Errorf("the oldest pending request: %w", err)
	}
	if err := s.uncount(txn, ct, old, r); err != nil {
		return nil, err
	}
	r.Expires = now
	if err := txn.SetEntry(badger.NewEntry(requestKey(old), codec.EncodeRequest(r)).WithTTL(s.ttl(now))); err != nil {
		return nil, err
	}
	// Nobody is to be asked about it any more: its queued items go, of
	// whatever kind (an undecided request has no notification queued).
	for _, kind := range store.Kinds() {
		if err := s.deleteItem(txn, store.ItemID{Kind: kind, Request: old}); err != nil {
			return nil, err
		}
	}
	return &old, nil
}

// uncount takes a request that stops being pending out of the indexes and
// counts, once: the expiry entry is the proof it is still counted.
func (s *Store) uncount(txn *badger.Txn, ct *countTxn, key store.RequestKey, r *store.AuthRequest) error {
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
func (s *Store) Get(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error) {
	var gen uint64
	if s.hot != nil {
		gen = s.hot.gen(key)
	}
	var r *store.AuthRequest
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
func (s *Store) PeekPending(key store.RequestKey, now time.Time) (store.PendingState, bool) {
	if s.hot == nil {
		return store.PendingState{}, false
	}
	e, ok := s.hot.peek(key, now.UnixNano())
	if !ok {
		return store.PendingState{}, false
	}
	return store.PendingState{ClientID: s.hot.clientID(e.client), Expires: time.Unix(0, e.expires).UTC(),
		Interval: time.Duration(e.interval) * time.Millisecond}, true
}

func getRequest(txn *badger.Txn, k []byte) (*store.AuthRequest, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r := new(store.AuthRequest)
	err = item.Value(func(v []byte) error { return codec.DecodeRequest(v, r) })
	if err != nil {
		return nil, fmt.Errorf("decoding request: %w", err)
	}
	return r, nil
}

// Update implements Store.
func (s *Store) Update(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) error) (*store.AuthRequest, error) {
	return s.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) { return nil, fn(r) })
}

// UpdateQueue implements Store.
func (s *Store) UpdateQueue(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) ([]*store.OutboxItem, error)) (*store.AuthRequest, error) {
	k := requestKey(key)
	var r *store.AuthRequest
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
		if before.Status == store.StatusPending && r.Status != store.StatusPending {
			if err := s.uncount(txn, ct, key, &before); err != nil {
				return err
			}
		}
		if err := txn.SetEntry(badger.NewEntry(k, codec.EncodeRequest(r)).WithTTL(s.ttl(r.Expires))); err != nil {
			return err
		}
		if err := s.indexClaim(txn, key, before.Claim, r); err != nil {
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

// indexClaim keeps the claim index of the request under key, written as r
// and claimed as old before: a claim taken is entered (until the request
// goes), a claim given up taken out. Open voids the claims it finds there.
func (s *Store) indexClaim(txn *badger.Txn, key store.RequestKey, old string, r *store.AuthRequest) error {
	switch {
	case r.Claim == old:
		return nil
	case r.Claim != "":
		return txn.SetEntry(badger.NewEntry(claimKey(key), nil).WithTTL(s.ttl(r.Expires)))
	}
	return txn.Delete(claimKey(key))
}

// PendingCount implements Store.
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
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
func (s *Store) SweepExpired(ctx context.Context, now time.Time) (int, error) {
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
				if len(k) != 1+8+len(store.RequestKey{}) {
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
func (s *Store) sweepKeys(ctx context.Context, keys [][]byte) (int, error) {
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
			var key store.RequestKey
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
	if errors.Is(err, store.ErrConflict) && len(keys) > 1 {
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
func (s *Store) UserPending(ctx context.Context, counted string) (int64, error) {
	var n int64
	user, ok := userKeyOf(&store.AuthRequest{CountAs: counted})
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
