package cibaproxy

import (
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// pollStep is one call on a PollTracker in a scripted scenario.
type pollStep struct {
	at       time.Duration // offset from the scenario's start
	key      byte          // request key, shard 0 unless keyShard is set
	keyShard byte          // first byte of the key (its shard)
	op       string        // "poll" (default), "poll-hold" (done not called yet), "done", "slowdown", "forget"
	slow     bool          // for polls: the expected answer
	interval time.Duration // when non-zero, the interval expected after the step
	len      int           // when non-zero, the tracker's expected Len after the step
}

func pollTestKey(shard, b byte) store.RequestKey {
	var k store.RequestKey
	k[0] = shard
	k[1] = b
	return k
}

// runPollScript drives a fresh tracker through steps with base interval
// base and requests expiring at start+expiresIn.
func runPollScript(t *testing.T, base, expiresIn time.Duration, steps []pollStep) {
	t.Helper()
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	pt := NewPollTracker()
	held := map[store.RequestKey][]func(){}
	for i, st := range steps {
		key := pollTestKey(st.keyShard, st.key)
		now := start.Add(st.at)
		switch st.op {
		case "", "poll", "poll-hold":
			slow, done := pt.Poll(key, now, base, start.Add(expiresIn))
			if slow != st.slow {
				t.Fatalf("step %d (%s at +%v, key %d): slow_down = %v, want %v", i, st.op, st.at, st.key, slow, st.slow)
			}
			if slow && done != nil {
				t.Fatalf("step %d: slow_down poll returned a done func", i)
			}
			if !slow {
				if done == nil {
					t.Fatalf("step %d: accepted poll returned no done func", i)
				}
				if st.op == "poll-hold" {
					held[key] = append(held[key], done)
				} else {
					done()
				}
			}
		case "done":
			fs := held[key]
			if len(fs) == 0 {
				t.Fatalf("step %d: no held poll for key %d", i, st.key)
			}
			fs[0]()
			held[key] = fs[1:]
		case "slowdown":
			pt.SlowDown(key, now)
		case "forget":
			pt.Forget(key)
		default:
			t.Fatalf("step %d: unknown op %q", i, st.op)
		}
		if st.interval != 0 {
			got, ok := pt.Interval(key)
			if !ok || got != st.interval {
				t.Fatalf("step %d: Interval = %v, %v; want %v", i, got, ok, st.interval)
			}
		}
		if st.len != 0 {
			if got := pt.Len(); got != st.len {
				t.Fatalf("step %d: Len = %d, want %d", i, got, st.len)
			}
		}
	}
}

type pollCase struct {
	name  string
	base  time.Duration // default 5s
	steps []pollStep
}

func runPollCases(t *testing.T, cases []pollCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			if base == 0 {
				base = 5 * time.Second
			}
			runPollScript(t, base, 10*time.Minute, tc.steps)
		})
	}
}

const oneNS = time.Nanosecond

// Rule: the first poll is never slow_down.
func TestPollFirstPollNeverSlowDown(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "first poll at once", steps: []pollStep{{at: 0, interval: 5 * time.Second}}},
		{name: "first poll late", steps: []pollStep{{at: 4 * time.Minute}}},
		{name: "first poll with a long base interval", base: 60 * time.Second, steps: []pollStep{{at: 0, interval: 60 * time.Second}}},
		{name: "first poll of a second request right after another's", steps: []pollStep{
			{at: 0, key: 1}, {at: oneNS, key: 2, interval: 5 * time.Second}}},
	})
}

// Rule: a poll at or after last + interval is answered normally; one
// earlier than last + interval minus 10 % is slow_down.
func TestPollInterval(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "exactly at last+interval", steps: []pollStep{{at: 0}, {at: 5 * time.Second, interval: 5 * time.Second}}},
		{name: "well after last+interval", steps: []pollStep{{at: 0}, {at: 30 * time.Second, interval: 5 * time.Second}}},
		{name: "at last+0.9*interval (tolerance boundary)", steps: []pollStep{{at: 0}, {at: 4500 * time.Millisecond, interval: 5 * time.Second}}},
		{name: "just before last+0.9*interval", steps: []pollStep{{at: 0}, {at: 4500*time.Millisecond - oneNS, slow: true}}},
		{name: "at once after the first", steps: []pollStep{{at: 0}, {at: 0, slow: true}}},
		{name: "one second after the first", steps: []pollStep{{at: 0}, {at: time.Second, slow: true}}},
		{name: "tolerance scales with the interval", base: 10 * time.Second, steps: []pollStep{
			{at: 0}, {at: 9 * time.Second, interval: 10 * time.Second},
			{at: 18*time.Second - oneNS, slow: true}}},
		{name: "interval counted from the last poll, not the first", steps: []pollStep{
			{at: 0}, {at: 5 * time.Second}, {at: 9 * time.Second, slow: true}}},
		{name: "steady polling at the interval", steps: []pollStep{
			{at: 0}, {at: 5 * time.Second}, {at: 10 * time.Second}, {at: 15 * time.Second}, {at: 20 * time.Second, interval: 5 * time.Second}}},
		{name: "steady polling at the tolerance", steps: []pollStep{
			{at: 0}, {at: 4500 * time.Millisecond}, {at: 9000 * time.Millisecond}, {at: 13500 * time.Millisecond, interval: 5 * time.Second}}},
	})
}

// Rule: slow_down raises the request's interval by 5 s, for this and all
// later polls.
func TestPollSlowDownRaisesInterval(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "one slow_down", steps: []pollStep{
			{at: 0, interval: 5 * time.Second},
			{at: time.Second, slow: true, interval: 10 * time.Second},
		}},
		{name: "later poll at the old interval is slow_down", steps: []pollStep{
			{at: 0},
			{at: time.Second, slow: true},
			// last = 1s, interval 10s: 1s + 5s is too early now.
			{at: 6 * time.Second, slow: true, interval: 15 * time.Second},
		}},
		{name: "later poll at the raised interval is fine", steps: []pollStep{
			{at: 0},
			{at: time.Second, slow: true},
			{at: 11 * time.Second, interval: 10 * time.Second},
		}},
		{name: "raised interval keeps its 10 % tolerance", steps: []pollStep{
			{at: 0},
			{at: time.Second, slow: true},
			{at: 10 * time.Second, interval: 10 * time.Second}, // 1s + 9s
		}},
		{name: "just before the raised tolerance", steps: []pollStep{
			{at: 0},
			{at: time.Second, slow: true},
			{at: 10*time.Second - oneNS, slow: true, interval: 15 * time.Second},
		}},
		{name: "raised interval stays after a good poll", steps: []pollStep{
			{at: 0},
			{at: time.Second, slow: true},
			{at: 11 * time.Second},
			{at: 16 * time.Second, slow: true, interval: 15 * time.Second},
			{at: 31 * time.Second, interval: 15 * time.Second},
		}},
		{name: "every early poll raises again", steps: []pollStep{
			{at: 0},
			{at: 1 * time.Second, slow: true, interval: 10 * time.Second},
			{at: 2 * time.Second, slow: true, interval: 15 * time.Second},
			{at: 3 * time.Second, slow: true, interval: 20 * time.Second},
		}},
	})
}

// Rule: the interval is capped at 60 s.
func TestPollIntervalCap(t *testing.T) {
	steps := []pollStep{{at: 0}}
	for i := 1; i <= 11; i++ { // 5s + 11*5s = 60s
		steps = append(steps, pollStep{at: time.Duration(i) * time.Millisecond, slow: true, interval: time.Duration(5+5*i) * time.Second})
	}
	runPollCases(t, []pollCase{
		{name: "reaches 60s", steps: steps},
		{name: "stays at 60s", steps: append(append([]pollStep{}, steps...),
			pollStep{at: time.Second, slow: true, interval: 60 * time.Second},
			pollStep{at: 2 * time.Second, slow: true, interval: 60 * time.Second},
		)},
		{name: "a poll 60s later is fine at the cap", steps: append(append([]pollStep{}, steps...),
			pollStep{at: 11*time.Millisecond + 60*time.Second, interval: 60 * time.Second},
		)},
		{name: "a poll 54s later is fine at the cap (tolerance)", steps: append(append([]pollStep{}, steps...),
			pollStep{at: 11*time.Millisecond + 54*time.Second, interval: 60 * time.Second},
		)},
		{name: "base at the cap", base: 60 * time.Second, steps: []pollStep{
			{at: 0}, {at: time.Second, slow: true, interval: 60 * time.Second}}},
		{name: "base 58s capped at 60s", base: 58 * time.Second, steps: []pollStep{
			{at: 0}, {at: time.Second, slow: true, interval: 60 * time.Second}}},
	})
}

// Rule: a poll that overlaps another poll of the same request is slow_down,
// even when both are first polls; once the other is done, the normal rules
// apply.
func TestPollOverlap(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "overlapping first polls", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: 0, slow: true, interval: 10 * time.Second},
		}},
		{name: "overlapping poll long after the held one", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: 30 * time.Second, slow: true, interval: 10 * time.Second},
		}},
		{name: "overlap after a good poll", steps: []pollStep{
			{at: 0},
			{at: 5 * time.Second, op: "poll-hold"},
			{at: 10 * time.Second, slow: true, interval: 10 * time.Second},
		}},
		{name: "every overlapping poll is slow_down", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: 30 * time.Second, slow: true},
			{at: 60 * time.Second, slow: true},
			{at: 90 * time.Second, slow: true, interval: 20 * time.Second},
		}},
		{name: "after done the normal rules apply", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: time.Second, op: "done"},
			{at: 5 * time.Second, interval: 5 * time.Second},
		}},
		{name: "after done an early poll is still slow_down", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: time.Second, op: "done"},
			{at: 2 * time.Second, slow: true},
		}},
		{name: "after an overlap and done, the raised interval counts from the overlapping poll", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: 2 * time.Second, slow: true, interval: 10 * time.Second},
			{at: 3 * time.Second, op: "done"},
			{at: 11*time.Second - oneNS, slow: true}, // 2s + 9s
		}},
		{name: "after an overlap and done, a poll at the raised interval is fine", steps: []pollStep{
			{at: 0, op: "poll-hold"},
			{at: 2 * time.Second, slow: true},
			{at: 3 * time.Second, op: "done"},
			{at: 12 * time.Second, interval: 10 * time.Second},
		}},
		{name: "a held poll of another request does not overlap", steps: []pollStep{
			{at: 0, key: 1, op: "poll-hold"},
			{at: 0, key: 2},
			{at: 5 * time.Second, key: 2},
		}},
	})
}

// Rule: the proxy's own slow_down (an upstream failing transiently) raises
// the interval as a client's early poll does.
func TestPollSlowDownMethod(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "raises by 5s", steps: []pollStep{
			{at: 0},
			{at: time.Second, op: "slowdown", interval: 10 * time.Second},
		}},
		{name: "a poll at the old interval is then slow_down", steps: []pollStep{
			{at: 0},
			{at: time.Second, op: "slowdown"},
			{at: 5 * time.Second, slow: true, interval: 15 * time.Second},
		}},
		{name: "a poll at the raised interval is fine", steps: []pollStep{
			{at: 0},
			{at: time.Second, op: "slowdown"},
			{at: 9 * time.Second, interval: 10 * time.Second}, // 0 + 0.9*10s
		}},
		{name: "capped at 60s", base: 55 * time.Second, steps: []pollStep{
			{at: 0},
			{at: time.Second, op: "slowdown", interval: 60 * time.Second},
			{at: 2 * time.Second, op: "slowdown", interval: 60 * time.Second},
		}},
		{name: "on an untracked request does nothing", steps: []pollStep{
			{at: 0, key: 1, op: "slowdown"},
			{at: 0, key: 1, interval: 5 * time.Second},
		}},
	})
}

// Rule: Forget drops a request's state; different requests are independent.
func TestPollForgetAndIndependence(t *testing.T) {
	runPollCases(t, []pollCase{
		{name: "forget resets", steps: []pollStep{
			{at: 0, key: 1},
			{at: time.Second, key: 1, slow: true, interval: 10 * time.Second},
			{at: 2 * time.Second, key: 1, op: "forget"},
			{at: 2 * time.Second, key: 1, interval: 5 * time.Second},
		}},
		{name: "forget keeps the others", steps: []pollStep{
			{at: 0, key: 1},
			{at: 0, key: 2, len: 2},
			{at: time.Second, key: 1, op: "forget", len: 1},
			{at: 2 * time.Second, key: 2, slow: true},
		}},
		{name: "keys in one shard are independent", steps: []pollStep{
			{at: 0, key: 1},
			{at: time.Second, key: 2},
			{at: 2 * time.Second, key: 3},
			{at: 3 * time.Second, key: 1, slow: true, interval: 10 * time.Second},
			{at: 3 * time.Second, key: 2, slow: true, interval: 10 * time.Second},
			{at: 7 * time.Second, key: 3, interval: 5 * time.Second},
		}},
		{name: "keys in other shards are independent", steps: []pollStep{
			{at: 0, keyShard: 0, key: 1},
			{at: 0, keyShard: 1, key: 1},
			{at: 0, keyShard: 64, key: 1, len: 3}, // same shard as 0, different key
			{at: time.Second, keyShard: 1, key: 1, slow: true, interval: 10 * time.Second},
			{at: 5 * time.Second, keyShard: 0, key: 1, interval: 5 * time.Second},
			{at: 5 * time.Second, keyShard: 64, key: 1, interval: 5 * time.Second},
		}},
	})
}

// Rule: entries of expired requests are swept, at most once a minute per
// shard, unless a poll is in flight.
func TestPollSweep(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		run     func(t *testing.T, pt *PollTracker)
		wantLen int
	}{
		{name: "expired entry dropped after a minute", wantLen: 1, run: func(t *testing.T, pt *PollTracker) {
			_, done := pt.Poll(pollTestKey(0, 1), start, 5*time.Second, start.Add(10*time.Second))
			done()
			_, done = pt.Poll(pollTestKey(0, 2), start.Add(61*time.Second), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "not swept within the minute", wantLen: 2, run: func(t *testing.T, pt *PollTracker) {
			_, done := pt.Poll(pollTestKey(0, 1), start, 5*time.Second, start.Add(10*time.Second))
			done()
			_, done = pt.Poll(pollTestKey(0, 2), start.Add(59*time.Second), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "live entry kept", wantLen: 2, run: func(t *testing.T, pt *PollTracker) {
			_, done := pt.Poll(pollTestKey(0, 1), start, 5*time.Second, start.Add(5*time.Minute))
			done()
			_, done = pt.Poll(pollTestKey(0, 2), start.Add(61*time.Second), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "entry with a poll in flight kept", wantLen: 2, run: func(t *testing.T, pt *PollTracker) {
			_, _ = pt.Poll(pollTestKey(0, 1), start, 5*time.Second, start.Add(10*time.Second)) // never done
			_, done := pt.Poll(pollTestKey(0, 2), start.Add(61*time.Second), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "several expired entries dropped", wantLen: 1, run: func(t *testing.T, pt *PollTracker) {
			for b := byte(1); b <= 5; b++ {
				_, done := pt.Poll(pollTestKey(0, b), start, 5*time.Second, start.Add(10*time.Second))
				done()
			}
			_, done := pt.Poll(pollTestKey(64, 9), start.Add(2*time.Minute), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "sweeps again a minute after the last sweep", wantLen: 1, run: func(t *testing.T, pt *PollTracker) {
			_, done := pt.Poll(pollTestKey(0, 1), start, 5*time.Second, start.Add(90*time.Second))
			done()
			// Swept at +61s: key 1 still live.
			_, done = pt.Poll(pollTestKey(0, 2), start.Add(61*time.Second), 5*time.Second, start.Add(100*time.Second))
			done()
			// Swept at +122s: both expired; key 3 is fresh.
			_, done = pt.Poll(pollTestKey(0, 3), start.Add(122*time.Second), 5*time.Second, start.Add(10*time.Minute))
			done()
		}},
		{name: "a swept request starts over", wantLen: 1, run: func(t *testing.T, pt *PollTracker) {
			k := pollTestKey(0, 1)
			_, done := pt.Poll(k, start, 5*time.Second, start.Add(10*time.Second))
			done()
			pt.SlowDown(k, start)
			_, done = pt.Poll(pollTestKey(0, 2), start.Add(61*time.Second), 5*time.Second, start.Add(10*time.Second))
			if done != nil {
				done()
			}
			if _, ok := pt.Interval(k); ok {
				t.Error("the swept request is still tracked")
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt := NewPollTracker()
			tc.run(t, pt)
			if got := pt.Len(); got != tc.wantLen {
				t.Errorf("Len = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

// TestPollConcurrent: 50 simultaneous polls of one request, at the same
// instant: exactly one is answered, the others overlap it (slow_down).
func TestPollConcurrent(t *testing.T) {
	tests := []struct {
		name      string
		firstPoll bool // whether the request was never polled before
	}{
		{name: "first polls", firstPoll: true},
		{name: "polls after a good one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 50
			start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
			pt := NewPollTracker()
			key := store.KeyOf("concurrent")
			now := start
			if !tc.firstPoll {
				_, done := pt.Poll(key, start, 5*time.Second, start.Add(time.Hour))
				done()
				now = start.Add(5 * time.Second)
			}
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				dones []func()
				slow  int
			)
			gate := make(chan struct{})
			for range n {
				wg.Go(func() {
					<-gate
					s, done := pt.Poll(key, now, 5*time.Second, start.Add(time.Hour))
					mu.Lock()
					defer mu.Unlock()
					if s {
						slow++
					} else {
						dones = append(dones, done)
					}
				})
			}
			close(gate)
			wg.Wait()
			if len(dones) != 1 || slow != n-1 {
				t.Fatalf("%d answered, %d slow_down; want 1 and %d", len(dones), slow, n-1)
			}
			for _, d := range dones {
				d()
			}
			if got := pt.Len(); got != 1 {
				t.Errorf("Len = %d, want 1", got)
			}
			if got, _ := pt.Interval(key); got != MaxInterval {
				t.Errorf("Interval = %v after %d slow_downs, want %v", got, n-1, MaxInterval)
			}
		})
	}
}
