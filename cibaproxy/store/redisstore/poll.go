package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Poll implements store.Poller: one script reads the request and applies
// the rules of slow_down to its polling state.
func (s *Store) Poll(ctx context.Context, key store.RequestKey, clientID string, now time.Time) (store.PollState, error) {
	res, err := pollScript.Run(ctx, s.ap, []string{s.requestKey(hex.EncodeToString(key[:]))},
		clientID, ms(now), int(store.PollTolerance*1000), store.SlowDownStep.Milliseconds(), store.MaxInterval.Milliseconds()).Slice()
	if err != nil {
		return store.PollState{}, errorOf(err)
	}
	if len(res) == 1 {
		return store.PollState{}, store.ErrNotFound
	}
	if len(res) != 6 {
		return store.PollState{}, fmt.Errorf("redis poll: unexpected answer of %d values", len(res))
	}
	st := store.PollState{}
	st.ClientID, _ = res[1].(string)
	status, _ := res[2].(int64)
	st.Status = store.Status(status)
	x, _ := res[3].(string)
	expires, err := strconv.ParseInt(x, 10, 64)
	if err != nil {
		return store.PollState{}, fmt.Errorf("redis poll: expiry %q", x)
	}
	st.Expires = time.UnixMilli(expires).UTC()
	interval, _ := res[4].(int64)
	st.Interval = time.Duration(interval) * time.Millisecond
	st.SlowDown, _ = res[5].(string)
	return st, nil
}

// SlowDown implements store.Poller.
func (s *Store) SlowDown(ctx context.Context, key store.RequestKey, _ time.Time) error {
	err := slowDownScript.Run(ctx, s.c, []string{s.requestKey(hex.EncodeToString(key[:]))},
		store.SlowDownStep.Milliseconds(), store.MaxInterval.Milliseconds()).Err()
	return errorOf(err)
}

// Allow implements store.Rates: a sliding-window log per key, exact across
// every replica.
func (s *Store) Allow(ctx context.Context, name, key string, n int, window time.Duration, now time.Time) (bool, time.Duration, error) {
	res, err := rateScript.Run(ctx, s.c, []string{s.rateKey(name, key)},
		ms(now), window.Milliseconds(), n, uniqueSuffix()).Int64Slice()
	return rateAnswer(res, err)
}

// Check implements store.Rates: one read-only script looks at every limit.
func (s *Store) Check(ctx context.Context, now time.Time, limits ...store.RateCheck) (bool, time.Duration, error) {
	keys := make([]string, 0, len(limits))
	args := make([]any, 0, 1+2*len(limits))
	args = append(args, ms(now))
	for _, l := range limits {
		if l.N > 0 { // 0 is no limit
			keys = append(keys, s.rateKey(l.Name, l.Key))
			args = append(args, l.Window.Milliseconds(), l.N)
		}
	}
	if len(keys) == 0 {
		return true, 0, nil
	}
	return rateAnswer(rateCheckScript.Run(ctx, s.ap, keys, args...).Int64Slice())
}

// rateKey is the key of the events of the limit name for key.
func (s *Store) rateKey(name, key string) string {
	sum := sha256.Sum256([]byte(name + "\x00" + key))
	return s.prefix + "rl:" + hex.EncodeToString(sum[:16])
}

// rateAnswer reads the {allowed, milliseconds to wait} of a rate script.
func rateAnswer(res []int64, err error) (bool, time.Duration, error) {
	if err != nil {
		return false, 0, errorOf(err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("redis rate: unexpected answer of %d values", len(res))
	}
	return res[0] == 1, time.Duration(res[1]) * time.Millisecond, nil
}

var (
	_ store.Poller = (*Store)(nil)
	_ store.Rates  = (*Store)(nil)
)
