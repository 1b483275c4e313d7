package cibaproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// recount counts the pending requests from the indexes, in total and by
// user key, as a scan would.
func recount(t *testing.T, s *BadgerStore) (int64, map[[userKeyLen]byte]int64) {
	t.Helper()
	var total int64
	users := map[[userKeyLen]byte]int64{}
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			switch k[0] {
			case kindExpiry:
				total++
			case kindUserIdx:
				var u [userKeyLen]byte
				copy(u[:], k[1:])
				users[u]++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, users
}

// checkCounts compares the counts the store answers with the indexes.
func checkCounts(t *testing.T, s *BadgerStore, subjects []string, max int64) {
	t.Helper()
	ctx := context.Background()
	total, users := recount(t, s)
	if n, err := s.PendingCount(ctx); err != nil || n != total {
		t.Errorf("PendingCount = %d, %v; the expiry index holds %d", n, err, total)
	}
	for _, sub := range subjects {
		u, _ := userKeyOf(&AuthRequest{User: User{Subject: sub}})
		n, err := s.UserPending(ctx, sub)
		if err != nil || n != users[u] {
			t.Errorf("UserPending(%s) = %d, %v; its index holds %d", sub, n, err, users[u])
		}
		if max > 0 && n > max {
			t.Errorf("UserPending(%s) = %d, over the limit of %d", sub, n, max)
		}
	}
}

// TestBadgerCountsUnderConcurrency: requests created (within a user limit,
// refused or replacing the oldest), decided and swept at the same time, for
// a few users, leave every count equal to what the indexes hold, in memory
// and after a reopen. The counts are written without being read back from
// Badger (store_counts.go), so a writer that changed one outside its
// stripe's lock would lose updates here.
func TestBadgerCountsUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	clock := newHClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	subjects := []string{"u0", "u1", "u2", "u3", "u4"}
	const (
		creators = 4
		each     = 150
		limit    = 4
	)
	keys := make(chan RequestKey, creators*each)
	var created, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := testRequest(clock.Now())
				if i%7 != 0 { // every seventh without a user
					r.User.Subject = subjects[(g+i)%len(subjects)]
				}
				if i%3 == 0 {
					r.Expires = clock.Now().Add(time.Second) // for the sweeper
				}
				k := KeyOf(fmt.Sprint("c", g, "-", i))
				err := s.Create(ctx, k, r, nil, UserLimit{Max: limit, ReplaceOldest: i%2 == 0})
				switch {
				case errors.Is(err, ErrUserLimit):
					refused.Add(1)
				case err != nil:
					t.Error(err)
					return
				default:
					created.Add(1)
					keys <- k
				}
			}
		}()
	}
	var deciders sync.WaitGroup
	var decided atomic.Int64
	for range 2 {
		deciders.Add(1)
		go func() {
			defer deciders.Done()
			for k := range keys {
				if k[1]%2 != 0 {
					continue // left pending
				}
				_, err := s.Update(ctx, k, func(r *AuthRequest) error {
					if r.Status == StatusPending {
						r.Status = StatusApproved
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				decided.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	sweeper := make(chan int)
	go func() {
		swept := 0
		for {
			select {
			case <-stop:
				sweeper <- swept
				return
			default:
			}
			clock.Advance(50 * time.Millisecond)
			n, err := s.SweepExpired(ctx, clock.Now())
			if err != nil {
				t.Error(err)
			}
			swept += n
		}
	}()
	wg.Wait()
	close(keys)
	deciders.Wait()
	close(stop)
	swept := <-sweeper
	if t.Failed() {
		return
	}
	if created.Load() == 0 || decided.Load() == 0 || swept == 0 || refused.Load() == 0 {
		t.Fatalf("the load missed a case: created %d, refused %d, decided %d, swept %d",
			created.Load(), refused.Load(), decided.Load(), swept)
	}
	t.Logf("created %d, refused %d, decided %d, swept %d", created.Load(), refused.Load(), decided.Load(), swept)
	checkCounts(t, s, subjects, limit)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, subjects, limit)
}

// TestBadgerCountsOfEarlierShards: a store written when the pending total
// was sharded by request key, not by user, still counts exactly: a request
// counted in one shard and uncounted from another leaves the sum right.
func TestBadgerCountsOfEarlierShards(t *testing.T) {
	ctx := context.Background()
	clock := newHClock()
	dir := t.TempDir()
	s := openTestStore(t, dir, clock.Now)
	var k RequestKey
	for i := 0; ; i++ { // a key whose old shard is not its user's stripe
		k = KeyOf(fmt.Sprint("old-", i))
		if u, _ := userKeyOf(testRequest(clock.Now())); countStripeOf(k, u, true) != int(k[0])%pendingShards {
			break
		}
	}
	r := testRequest(clock.Now())
	if err := s.Create(ctx, k, r, nil, UserLimit{}); err != nil {
		t.Fatal(err)
	}
	// Move its count to the shard the earlier layout used.
	u, _ := userKeyOf(r)
	err := s.update(ctx, func(txn *badger.Txn) error {
		if err := setInt(txn, pendingShardKey(countStripeOf(k, u, true)), 0); err != nil {
			return err
		}
		return setInt(txn, pendingShardKey(int(k[0])%pendingShards), 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, []string{"alice"}, 0)
	if _, err := s.Update(ctx, k, func(r *AuthRequest) error { r.Status = StatusDenied; return nil }); err != nil {
		t.Fatal(err)
	}
	checkCounts(t, s, []string{"alice"}, 0)
	var shards [][]byte
	_ = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindPending}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, _ := it.Item().ValueCopy(nil)
			shards = append(shards, append(it.Item().KeyCopy(nil), v...))
		}
		return nil
	})
	if len(shards) != 2 || !bytes.Equal(shards[0][2:], []byte{0, 0, 0, 0, 0, 0, 0, 1}) && !bytes.Equal(shards[1][2:], []byte{0, 0, 0, 0, 0, 0, 0, 1}) {
		t.Errorf("shards %x: want +1 in the old one and −1 in the user's", shards)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, clock.Now)
	checkCounts(t, s, []string{"alice"}, 0)
}
