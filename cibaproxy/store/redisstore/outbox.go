package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// kindCode names a kind in keys: its code in hex.
func kindCode(k store.Kind) string { return hex.EncodeToString([]byte{k.Code()}) }

func (s *Store) itemKey(id store.ItemID) string {
	return s.prefix + "o:" + kindCode(id.Kind) + ":" + hex.EncodeToString(id.Request[:])
}

func (s *Store) dueIndex(k store.Kind) string { return s.prefix + "q:" + kindCode(k) }

// dueOf is when a worker must next look at an item: when it is next due,
// or when its request expires if that comes first (it is then dropped).
func dueOf(it *store.OutboxItem) int64 {
	at := it.Next
	if it.LeaseUntil.After(at) {
		at = it.LeaseUntil
	}
	if !it.NotAfter.IsZero() && it.NotAfter.Before(at) {
		at = it.NotAfter
	}
	return max(ms(at), 0)
}

// Enqueue implements store.Queue.
func (s *Store) Enqueue(ctx context.Context, it *store.OutboxItem) error {
	err := enqueueScript.Run(ctx, s.c, []string{s.itemKey(it.ID), s.dueIndex(it.ID.Kind)},
		it.Sender, string(it.Payload), ms(it.NotAfter), ns(it.NotAfter), ms(it.Next), ns(it.Next), ms(it.LeaseUntil), ns(it.LeaseUntil),
		it.Attempts, it.LastError, s.ttl(it.NotAfter).Milliseconds(), dueOf(it), string(it.ID.Request[:])).Err()
	return errorOf(err)
}

// OutboxCounts implements store.Queue: the size of each registered kind's
// due index.
func (s *Store) OutboxCounts(ctx context.Context) (map[store.Kind]int, error) {
	kinds := store.Kinds()
	pipe := s.c.Pipeline()
	cmds := make([]*redis.IntCmd, len(kinds))
	for i, k := range kinds {
		cmds[i] = pipe.ZCard(ctx, s.dueIndex(k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, errorOf(err)
	}
	counts := make(map[store.Kind]int)
	for i, k := range kinds {
		if n := cmds[i].Val(); n > 0 {
			counts[k] = int(n)
		}
	}
	return counts, nil
}

// dueEntry is an entry of a due index.
type dueEntry struct {
	id  store.ItemID
	due int64
}

// DueItems implements store.Queue. It reads the due indexes of the
// registered kinds, up to dueSlack entries each beyond limit, then the
// items of those not skipped, only as many as the limit still needs, and
// returns the accepted ones earliest first.
func (s *Store) DueItems(ctx context.Context, now time.Time, limit int, filter store.DueFilter) ([]*store.OutboxItem, time.Time, error) {
	kinds := store.Kinds()
	nowMS := strconv.FormatInt(ms(now), 10)
	pipe := s.c.Pipeline()
	dueCmds := make([]*redis.ZSliceCmd, len(kinds))
	nextCmds := make([]*redis.ZSliceCmd, len(kinds))
	for i, k := range kinds {
		dueCmds[i] = pipe.ZRangeByScoreWithScores(ctx, s.dueIndex(k), &redis.ZRangeBy{Min: "-inf", Max: nowMS, Count: int64(limit + dueSlack)})
		nextCmds[i] = pipe.ZRangeByScoreWithScores(ctx, s.dueIndex(k), &redis.ZRangeBy{Min: "(" + nowMS, Max: "+inf", Count: 1})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, time.Time{}, errorOf(err)
	}
	var entries []dueEntry
	var next time.Time
	capped := false // a kind may have more due entries than were read
	for i, k := range kinds {
		capped = capped || len(dueCmds[i].Val()) == limit+dueSlack
		for _, z := range dueCmds[i].Val() {
			id := store.ItemID{Kind: k}
			copy(id.Request[:], z.Member.(string))
			if filter.Skips(id) {
				continue
			}
			entries = append(entries, dueEntry{id, int64(z.Score)})
		}
		if nz := nextCmds[i].Val(); len(nz) > 0 {
			if t := time.UnixMilli(int64(nz[0].Score)); next.IsZero() || t.Before(next) {
				next = t
			}
		}
	}
	slices.SortFunc(entries, func(a, b dueEntry) int { return int(a.due - b.due) })
	// The items are read a few at a time, as many as the limit leaves
	// room for: most passes take the first entries, and the others cost
	// no read; more are read only for those accept refuses.
	var out []*store.OutboxItem
	for len(entries) > 0 && len(out) < limit {
		chunk := entries[:min(len(entries), limit-len(out))]
		entries = entries[len(chunk):]
		items, err := s.items(ctx, chunk)
		if err != nil {
			return nil, time.Time{}, err
		}
		for _, it := range items {
			if filter.Accepts(it) {
				out = append(out, it)
			}
		}
	}
	if len(entries) > 0 || capped {
		return out, now, nil // more are due
	}
	return out, next, nil
}

// dueSlack is how many due entries DueItems reads beyond its limit, for
// the items accept refuses (those of a sender not registered yet).
const dueSlack = 64

// items reads the items of due-index entries; an entry whose item is gone
// (its TTL ran out) leaves the index.
func (s *Store) items(ctx context.Context, entries []dueEntry) ([]*store.OutboxItem, error) {
	pipe := s.c.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(entries))
	for i, e := range entries {
		cmds[i] = pipe.HGetAll(ctx, s.itemKey(e.id))
	}
	if len(entries) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, errorOf(err)
		}
	}
	var out []*store.OutboxItem
	for i, e := range entries {
		fields := cmds[i].Val()
		if len(fields) == 0 {
			s.c.ZRem(ctx, s.dueIndex(e.id.Kind), string(e.id.Request[:]))
			continue
		}
		it, err := itemOf(e.id, fields)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, nil
}

// itemOf decodes an item's hash.
func itemOf(id store.ItemID, f map[string]string) (*store.OutboxItem, error) {
	it := &store.OutboxItem{ID: id, Sender: f["snd"], LastError: f["e"]}
	if p := f["p"]; p != "" {
		it.Payload = []byte(p)
	}
	var err error
	num := func(name string) int64 {
		n, perr := strconv.ParseInt(f[name], 10, 64)
		if perr != nil && err == nil {
			err = fmt.Errorf("outbox item field %s: %w", name, perr)
		}
		return n
	}
	it.NotAfter, it.Next, it.LeaseUntil = timeOfNS(num("nan")), timeOfNS(num("nn")), timeOfNS(num("lun"))
	it.Attempts = int(num("a"))
	return it, err
}

// ScanOutbox implements store.Queue.
func (s *Store) ScanOutbox(ctx context.Context, fn func(*store.OutboxItem) bool) error {
	for _, k := range store.Kinds() {
		members, err := s.c.ZRange(ctx, s.dueIndex(k), 0, -1).Result()
		if err != nil {
			return errorOf(err)
		}
		for len(members) > 0 {
			batch := members[:min(len(members), 256)]
			members = members[len(batch):]
			entries := make([]dueEntry, len(batch))
			for i, m := range batch {
				entries[i].id.Kind = k
				copy(entries[i].id.Request[:], m)
			}
			items, err := s.items(ctx, entries)
			if err != nil {
				return err
			}
			for _, it := range items {
				if !fn(it) {
					return nil
				}
			}
		}
	}
	return nil
}

// LeaseItem implements store.Queue.
func (s *Store) LeaseItem(ctx context.Context, id store.ItemID, now, until time.Time) (*store.OutboxItem, error) {
	res, err := leaseScript.Run(ctx, s.c, []string{s.itemKey(id), s.dueIndex(id.Kind)}, ms(now), ms(until), string(id.Request[:]), ns(until), ns(now)).Result()
	if err != nil {
		return nil, errorOf(err)
	}
	switch v := res.(type) {
	case string:
		if v == "notfound" {
			return nil, store.ErrNotFound
		}
		return nil, store.ErrNotDue
	case []any:
		fields := make(map[string]string, len(v)/2)
		for i := 0; i+1 < len(v); i += 2 {
			k, _ := v[i].(string)
			val, _ := v[i+1].(string)
			fields[k] = val
		}
		return itemOf(id, fields)
	}
	return nil, fmt.Errorf("redis lease: unexpected answer %T", res)
}

// RetryItem implements store.Queue.
func (s *Store) RetryItem(ctx context.Context, id store.ItemID, next time.Time, lastErr string) error {
	res, err := retryScript.Run(ctx, s.c, []string{s.itemKey(id), s.dueIndex(id.Kind)}, ms(next), lastErr, string(id.Request[:]), ns(next)).Text()
	if err != nil {
		return errorOf(err)
	}
	if res == "notfound" {
		return store.ErrNotFound
	}
	return nil
}

// DeleteItem implements store.Queue.
func (s *Store) DeleteItem(ctx context.Context, id store.ItemID) error {
	return s.DeleteItems(ctx, id)
}

// DeleteItems implements store.Queue, in one transaction.
func (s *Store) DeleteItems(ctx context.Context, ids ...store.ItemID) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, id := range ids {
			pipe.Del(ctx, s.itemKey(id))
			pipe.ZRem(ctx, s.dueIndex(id.Kind), string(id.Request[:]))
		}
		return nil
	})
	return errorOf(err)
}
