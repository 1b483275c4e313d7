package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/internal/codec"
)

// updateAttempts bounds the runs of an Update's function when other
// writes of the request keep coming between its read and its write.
const updateAttempts = 16

// sweepBatch bounds the expired requests one script takes out.
const sweepBatch = 256

// userKeyLen is the length of the user key a request counts against.
const userKeyLen = 16

func (s *Store) requestKey(hexKey string) string { return s.prefix + "r:" + hexKey }
func (s *Store) pendingKey() string              { return s.prefix + "pending" }
func (s *Store) userKey(hexUser string) string   { return s.prefix + "u:" + hexUser }

// userOf returns the key of the user a request counts against (its
// CountedAs), raw and in hex; a request without one counts against no user.
func userOf(counted string) (raw, hexUser string) {
	if counted == "" {
		return "", ""
	}
	sum := sha256.Sum256([]byte(counted))
	return string(sum[:userKeyLen]), hex.EncodeToString(sum[:userKeyLen])
}

// ns is t in Unix nanoseconds (0 for the zero time).
func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// timeOfNS is the time of Unix nanoseconds (the zero time for 0).
func timeOfNS(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// ms is t in Unix milliseconds (0 for the zero time).
func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Create implements store.Requests.
func (s *Store) Create(ctx context.Context, key store.RequestKey, r *store.AuthRequest, out *store.Outbound, limit store.UserLimit) error {
	hexKey := hex.EncodeToString(key[:])
	userRaw, userHex := userOf(r.CountedAs())
	replace := "0"
	if limit.ReplaceOldest {
		replace = "1"
	}
	kinds := store.Kinds()
	args := []any{s.prefix, hexKey, string(key[:]), codec.EncodeRequest(r), int(r.Status), r.ClientID,
		ms(r.Expires), r.Interval.Milliseconds(), s.ttl(r.Expires).Milliseconds(), ms(r.Created),
		userHex, userRaw, limit.Max, replace, ns(r.Created), store.Grace.Milliseconds(), ns(r.Expires), len(kinds)}
	for _, k := range kinds {
		args = append(args, kindCode(k))
	}
	var links []store.LinkKey
	var items []*store.OutboxItem
	if out != nil {
		links, items = out.Links, out.Items
	}
	args = append(args, len(links))
	for _, l := range links {
		args = append(args, hex.EncodeToString(l[:]))
	}
	args = s.appendItems(args, key, items)
	res, err := createScript.Run(ctx, s.ap, []string{s.requestKey(hexKey)}, args...).Text()
	if err != nil {
		return errorOf(err)
	}
	switch res {
	case "ok":
		return nil
	case "exists":
		return store.ErrExists
	case "limit":
		return store.ErrUserLimit
	}
	return fmt.Errorf("redis create: unexpected answer %q", res)
}

// appendItems appends the items of a request to a script's arguments:
// their count, then kind, sender, payload, not after, next, TTL and due of
// each; it sets their request.
func (s *Store) appendItems(args []any, key store.RequestKey, items []*store.OutboxItem) []any {
	args = append(args, len(items))
	for _, it := range items {
		it.ID.Request = key
		args = append(args, kindCode(it.ID.Kind), it.Sender, string(it.Payload), ms(it.NotAfter), ns(it.NotAfter),
			ms(it.Next), ns(it.Next), s.ttl(it.NotAfter).Milliseconds(), dueOf(it))
	}
	return args
}

// Get implements store.Requests.
func (s *Store) Get(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error) {
	r, _, err := s.read(ctx, key)
	return r, err
}

// read returns the request under key and its version.
func (s *Store) read(ctx context.Context, key store.RequestKey) (*store.AuthRequest, string, error) {
	vals, err := s.c.HMGet(ctx, s.requestKey(hex.EncodeToString(key[:])), "d", "xn", "v").Result()
	if err != nil {
		return nil, "", errorOf(err)
	}
	d, ok := vals[0].(string)
	if !ok {
		return nil, "", store.ErrNotFound
	}
	r := new(store.AuthRequest)
	if err := codec.DecodeRequest([]byte(d), r); err != nil {
		return nil, "", fmt.Errorf("decoding request: %w", err)
	}
	// A replaced request expired at once: its expiry field says so, its
	// record does not.
	if x, _ := vals[1].(string); x != "" {
		if n, err := strconv.ParseInt(x, 10, 64); err == nil && n != ns(r.Expires) {
			r.Expires = timeOfNS(n)
		}
	}
	v, _ := vals[2].(string)
	return r, v, nil
}

// Update implements store.Requests.
func (s *Store) Update(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) error) (*store.AuthRequest, error) {
	return s.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) { return nil, fn(r) })
}

// UpdateQueue implements store.Requests: the request is read, fn applied,
// and the result written if no other write of the request came since
// (the version tells), else fn runs again on the new value.
func (s *Store) UpdateQueue(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) ([]*store.OutboxItem, error)) (*store.AuthRequest, error) {
	hexKey := hex.EncodeToString(key[:])
	for attempt := 0; attempt < updateAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, version, err := s.read(ctx, key)
		if err != nil {
			return nil, err
		}
		wasPending := r.Status == store.StatusPending
		before := r.CountedAs()
		items, err := fn(r)
		if err != nil {
			return nil, err
		}
		uncount := "0"
		if wasPending && r.Status != store.StatusPending {
			uncount = "1"
		}
		userRaw, userHex := userOf(before)
		args := []any{s.prefix, hexKey, string(key[:]), version, codec.EncodeRequest(r), int(r.Status), r.ClientID,
			ms(r.Expires), r.Interval.Milliseconds(), ms(r.ClaimUntil), s.ttl(r.Expires).Milliseconds(), uncount, userRaw, userHex, ns(r.Expires)}
		args = s.appendItems(args, key, items)
		res, err := updateScript.Run(ctx, s.c, []string{s.requestKey(hexKey)}, args...).Text()
		if err != nil {
			return nil, errorOf(err)
		}
		switch res {
		case "ok":
			return r, nil
		case "notfound":
			return nil, store.ErrNotFound
		case "conflict":
			continue // another replica wrote it: run fn again on its value
		}
		return nil, fmt.Errorf("redis update: unexpected answer %q", res)
	}
	return nil, store.ErrConflict
}

// PendingCount implements store.Requests.
func (s *Store) PendingCount(ctx context.Context) (int64, error) {
	n, err := s.c.Get(ctx, s.pendingKey()).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, errorOf(err)
}

// UserPending implements store.Requests.
func (s *Store) UserPending(ctx context.Context, counted string) (int64, error) {
	_, userHex := userOf(counted)
	if userHex == "" {
		return 0, nil
	}
	n, err := s.c.ZCard(ctx, s.userKey(userHex)).Result()
	return n, errorOf(err)
}

// SweepExpired implements store.Requests.
func (s *Store) SweepExpired(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		n, err := sweepScript.Run(ctx, s.c, []string{s.prefix + "expiry"}, s.prefix, ms(now), sweepBatch).Int()
		if err != nil {
			return total, errorOf(err)
		}
		total += n
		if n < sweepBatch {
			return total, nil
		}
	}
}
