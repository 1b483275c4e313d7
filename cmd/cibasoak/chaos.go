package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"
)

// outageGrace is how long after a component came back an answer still
// counts as given during its outage (a 503 whose request began just before).
const outageGrace = 5 * time.Second

// window is an outage of one component: from..to (to zero while down).
type window struct {
	name     string
	from, to time.Time
}

// outages records when each component was down.
type outages struct {
	mu      sync.Mutex
	windows []window
	open    map[string]int // name → index of its open window
}

func newOutages() *outages { return &outages{open: make(map[string]int)} }

func (o *outages) down(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.open[name]; ok {
		return
	}
	o.open[name] = len(o.windows)
	o.windows = append(o.windows, window{name: name, from: time.Now()})
}

func (o *outages) up(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if i, ok := o.open[name]; ok {
		o.windows[i].to = time.Now()
		delete(o.open, name)
	}
}

// during returns the name of a component whose outage overlapped
// [from, to] (or ended less than grace before from), or "".
func (o *outages) during(from, to time.Time, grace time.Duration) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.windows) - 1; i >= 0; i-- {
		w := o.windows[i]
		end := w.to
		if end.IsZero() {
			end = to
		}
		if !w.from.After(to) && !end.Add(grace).Before(from) {
			return w.name
		}
	}
	return ""
}

// killedDuring reports whether the proxy was killed while [from, to] lasted.
func (o *outages) killedDuring(from, to time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.windows) - 1; i >= 0; i-- {
		w := o.windows[i]
		if w.name == "proxy" && !w.from.Before(from) && !w.from.After(to) {
			return true
		}
	}
	return false
}

// count returns the number of outages of name and their total length.
func (o *outages) count(name string) (n int, total time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range o.windows {
		if w.name == name {
			n++
			if !w.to.IsZero() {
				total += w.to.Sub(w.from)
			}
		}
	}
	return n, total
}

// write writes the outages, one a line, to path.
func (o *outages) write(path string, began time.Time) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	for _, w := range o.windows {
		fmt.Fprintf(&b, "%s +%.3fs %-5s down", w.from.Format("15:04:05.000"), w.from.Sub(began).Seconds(), w.name)
		if !w.to.IsZero() {
			fmt.Fprintf(&b, " for %.3fs", w.to.Sub(w.from).Seconds())
		}
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// uniform returns a duration in [lo, hi].
func uniform(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// startChaos starts the chaos until soak ends: the proxy killed with
// SIGKILL and restarted, and the mail server, Dex (and Redis) taken down
// and brought back. Each goroutine leaves its component up when it returns;
// hard ends the restarts too (an interrupt).
func (s *stack) startChaos(soak, hard context.Context, wg *sync.WaitGroup) {
	c := s.cfg
	run := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	run(func() { s.proxyChaos(soak, hard, rand.New(rand.NewPCG(c.seed, 0xc4a0_0001))) })
	if c.smtpDown > 0 {
		run(func() {
			s.cycle(soak, rand.New(rand.NewPCG(c.seed, 0xc4a0_0002)), "smtp", c.smtpPeriod, c.smtpDown,
				func() { s.sink.down() },
				func() error { return s.sink.up() })
		})
	}
	if c.dexDown > 0 {
		run(func() {
			s.cycle(soak, rand.New(rand.NewPCG(c.seed, 0xc4a0_0003)), "dex", c.dexPeriod, c.dexDown,
				func() {
					// The keys of the Dex going away, for the tokens it minted.
					_ = s.keys.refresh(hard)
					s.dex.kill()
				},
				func() error { return s.startDex(hard) })
		})
	}
	if s.redis != nil && c.redisDown > 0 {
		run(func() {
			s.cycle(soak, rand.New(rand.NewPCG(c.seed, 0xc4a0_0004)), "redis", c.redisPeriod, c.redisDown,
				func() { s.redis.kill() },
				func() error { return s.startRedis(hard) })
		})
	}
}

// proxyChaos kills the proxy with SIGKILL at random intervals (killMin to
// killMax; never with killMax 0) and restarts it at once. It also restarts
// a proxy that exited on its own (counted apart: a finding).
func (s *stack) proxyChaos(soak, hard context.Context, rng *rand.Rand) {
	for {
		wait := uniform(rng, s.cfg.killMin, s.cfg.killMax)
		timer := time.NewTimer(wait)
		if s.cfg.killMax <= 0 {
			timer.Stop()
		}
		select {
		case <-soak.Done():
			timer.Stop()
			return
		case <-s.proxy.exited():
			timer.Stop()
			s.outages.down("proxy")
			logf("the proxy exited on its own; restarting it")
		case <-timer.C:
			s.outages.down("proxy")
			s.proxy.kill()
		}
		if err := s.startProxy(hard); err != nil {
			s.abort(fmt.Errorf("restarting the proxy: %w", err))
			return
		}
		s.outages.up("proxy")
	}
}

// cycle takes a component down for downFor once in every period, at a
// random point of it, and brings it back. A component stays up once soak
// ends.
func (s *stack) cycle(soak context.Context, rng *rand.Rand, name string, period, downFor time.Duration, takeDown func(), bringUp func() error) {
	for {
		offset := uniform(rng, 0, max(period-downFor, 0))
		if !sleep(soak, offset) {
			return
		}
		s.outages.down(name)
		takeDown()
		sleep(soak, downFor) // back at once when the soak ends
		if err := bringUp(); err != nil {
			s.abort(fmt.Errorf("bringing %s back: %w", name, err))
			return
		}
		s.outages.up(name)
		if !sleep(soak, period-downFor-offset) {
			return
		}
	}
}
