// Command cibasoak is cibaproxy's chaos soak, run by scripts/soak.sh (make
// soak). Tens of consumption devices complete CIBA logins against the real
// binary in front of a real Dex, with an SMTP server of the soak's own,
// while the proxy is killed with SIGKILL and restarted at random intervals,
// and the mail server, Dex (and Redis) go down and come back. Each device
// sends a backchannel request, its user approves or denies through the
// approval page as a browser does, and the device polls as CIBA says,
// checking the tokens against Dex's keys. It prints what it saw and exits
// non-zero on a lost request or approval, a double issuance, a wrong token,
// or an unexpected answer. It talks to loopback only, on free ports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type config struct {
	dir                    string
	proxyBin, dexBin       string
	redisBin               string
	store                  string
	duration               time.Duration
	devices, users         int
	denyShare, raceShare   float64
	seed                   uint64
	requestTTL             time.Duration
	killMin, killMax       time.Duration
	smtpPeriod, smtpDown   time.Duration
	dexPeriod, dexDown     time.Duration
	redisPeriod, redisDown time.Duration
	settle                 time.Duration
}

func parseFlags(args []string) (*config, error) {
	c := new(config)
	fs := flag.NewFlagSet("cibasoak", flag.ContinueOnError)
	fs.StringVar(&c.dir, "dir", "", "work directory (configs, logs, the store); required, and empty")
	fs.StringVar(&c.proxyBin, "proxy", "bin/cibaproxy", "the cibaproxy binary")
	fs.StringVar(&c.dexBin, "dex", "bin/dex", "the Dex binary")
	fs.StringVar(&c.redisBin, "redis-server", "redis-server", "the redis-server binary (with -store redis)")
	fs.StringVar(&c.store, "store", "badger", "the proxy's store: badger or redis")
	fs.DurationVar(&c.duration, "duration", 3*time.Minute, "how long devices start new logins (the logins under way then finish)")
	fs.IntVar(&c.devices, "devices", 20, "concurrent consumption devices")
	fs.IntVar(&c.users, "users", 200, "users in the generated users.json")
	fs.Float64Var(&c.denyShare, "deny", 0.2, "share of the users who deny")
	fs.Float64Var(&c.raceShare, "race", 0.25, "share of the approvals that 5 concurrent polls race to redeem")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of every random choice (users, decisions, races, chaos schedule)")
	fs.DurationVar(&c.requestTTL, "request-ttl", 2*time.Minute, "the proxy's request_ttl")
	fs.DurationVar(&c.killMin, "kill-min", 3*time.Second, "shortest time between two SIGKILLs of the proxy")
	fs.DurationVar(&c.killMax, "kill-max", 20*time.Second, "longest time between two SIGKILLs of the proxy (0: never)")
	fs.DurationVar(&c.smtpPeriod, "smtp-period", 45*time.Second, "the mail server goes down once in every period")
	fs.DurationVar(&c.smtpDown, "smtp-down", 10*time.Second, "for this long (0: never)")
	fs.DurationVar(&c.dexPeriod, "dex-period", 60*time.Second, "Dex goes down once in every period")
	fs.DurationVar(&c.dexDown, "dex-down", 5*time.Second, "for this long (0: never)")
	fs.DurationVar(&c.redisPeriod, "redis-period", 50*time.Second, "with -store redis, Redis is killed (SIGKILL) once in every period")
	fs.DurationVar(&c.redisDown, "redis-down", 2*time.Second, "and restarted after this long (0: never)")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait this long after the last login for late mails (duplicates)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case c.dir == "":
		return nil, errors.New("-dir is required")
	case c.store != "badger" && c.store != "redis":
		return nil, fmt.Errorf("-store must be badger or redis, not %q", c.store)
	case c.devices < 1 || c.users < 1 || c.duration <= 0:
		return nil, errors.New("-devices, -users and -duration must be positive")
	case c.requestTTL < 30*time.Second:
		return nil, errors.New("-request-ttl must be at least 30s: the outages must fit in a request's life")
	case c.killMax > 0 && c.killMin < time.Second:
		return nil, errors.New("-kill-min must be at least 1s")
	case c.smtpDown >= c.smtpPeriod || c.dexDown >= c.dexPeriod || c.redisDown >= c.redisPeriod:
		return nil, errors.New("an outage must be shorter than its period")
	}
	var err error
	for _, p := range []*string{&c.dir, &c.proxyBin, &c.dexBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, err
		}
	}
	return c, nil
}

type ports struct{ proxy, dex, smtp, redis int }

// stack is what the soak runs: the proxy, Dex, the SMTP sink, Redis.
type stack struct {
	cfg     *config
	ports   ports
	base    string // the proxy's origin, http://127.0.0.1:<port>
	users   []soakUser
	clients []clientCred

	proxy, dex, redis *proc
	sink              *sink
	keys              *keySet
	outages           *outages
	probe             *http.Client
	abort             func(error) // ends the soak on a failure of its own
}

func (s *stack) path(name string) string { return filepath.Join(s.cfg.dir, name) }

func newStack(cfg *config) (*stack, error) {
	p, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	s := &stack{
		cfg:     cfg,
		ports:   ports{proxy: p[0], dex: p[1], smtp: p[2], redis: p[3]},
		users:   makeUsers(cfg.users, cfg.denyShare, cfg.seed),
		clients: makeClients(3, cfg.seed),
		outages: newOutages(),
		probe:   &http.Client{Timeout: 2 * time.Second},
	}
	s.base = "http://127.0.0.1:" + strconv.Itoa(s.ports.proxy)
	s.sink = newSink("127.0.0.1:" + strconv.Itoa(s.ports.smtp))
	s.keys = newKeySet(fmt.Sprintf("http://127.0.0.1:%d/dex/keys", s.ports.dex))
	for _, d := range []string{"xdg/config", "xdg/data", "badger"} {
		if err := os.MkdirAll(s.path(d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := s.writeConfigs(); err != nil {
		return nil, err
	}
	return s, s.newProcs()
}

// up starts everything: the sink, Redis, the proxy, then Dex (which needs
// the proxy's subject-token issuer).
func (s *stack) up(ctx context.Context) error {
	if err := s.sink.up(); err != nil {
		return err
	}
	if s.redis != nil {
		if err := s.startRedis(ctx); err != nil {
			return err
		}
	}
	if err := s.startProxy(ctx); err != nil {
		return fmt.Errorf("cibaproxy (see %s): %w", s.path("cibaproxy.log"), err)
	}
	if err := s.startDex(ctx); err != nil {
		return fmt.Errorf("%w (see %s)", err, s.path("dex.log"))
	}
	return nil
}

// close stops every process the soak started.
func (s *stack) close() {
	for _, p := range []*proc{s.dex, s.proxy, s.redis} {
		if p != nil {
			p.stop()
			p.log.Close()
		}
	}
	s.sink.down()
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "cibasoak %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cibasoak:", err)
		}
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

func run(cfg *config) int {
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hard, cancelHard := context.WithCancelCause(sig)
	defer cancelHard(nil)
	s, err := newStack(cfg)
	if err != nil {
		logf("%v", err)
		return 1
	}
	s.abort = func(err error) {
		logf("aborting: %v", err)
		cancelHard(err)
	}
	defer s.close()
	if err := s.up(hard); err != nil {
		logf("%v", err)
		return 1
	}
	logf("up in %s: cibaproxy %s (store %s), Dex on port %d, SMTP on port %d; %d devices for %v, seed %d",
		cfg.dir, s.base, cfg.store, s.ports.dex, s.ports.smtp, cfg.devices, cfg.duration, cfg.seed)
	st := newStats(s.outages)
	began := time.Now()
	soak, endSoak := context.WithTimeout(hard, cfg.duration)
	defer endSoak()
	var chaos, devices sync.WaitGroup
	s.startChaos(soak, hard, &chaos)
	go progress(soak, st, s, began)
	for i := range cfg.devices {
		d := &device{id: i, s: s, st: st, rng: rand.New(rand.NewPCG(cfg.seed, uint64(i))),
			http: newHTTPClient(), page: newHTTPClient()}
		devices.Go(func() {
			if sleep(soak, uniform(d.rng, 0, time.Second)) { // not all at once
				d.run(soak, hard)
			}
		})
	}
	<-soak.Done()
	logf("%v over: the chaos stops and everything comes back; the logins under way finish", cfg.duration)
	chaos.Wait()
	devices.Wait()
	sleep(hard, cfg.settle)
	t := st.tallyUp(s)
	if err := st.writeLogins(s.path("logins.txt")); err != nil {
		logf("%v", err)
	}
	if err := s.outages.write(s.path("outages.txt"), began); err != nil {
		logf("%v", err)
	}
	t.print(os.Stdout, st, s, time.Since(began))
	if cause := context.Cause(hard); cause != nil {
		fmt.Printf("  result: INTERRUPTED (%v)\n", cause)
		return 1
	}
	if f := t.failures(st, s); len(f) > 0 {
		fmt.Printf("  result: FAILED: %v\n", f)
		return 1
	}
	fmt.Println("  result: OK")
	return 0
}

// progress prints a line every 15 s while the soak runs.
func progress(soak context.Context, st *stats, s *stack, began time.Time) {
	for sleep(soak, 15*time.Second) {
		st.mu.Lock()
		acked, logins, tokens := 0, len(st.logins), st.tokens
		for _, a := range st.attempts {
			if a {
				acked++
			}
		}
		st.mu.Unlock()
		kills, _ := s.outages.count("proxy")
		logf("%3.0fs: %d requests acknowledged, %d logins done, %d tokens, %d proxy kills",
			time.Since(began).Seconds(), acked, logins, tokens, kills)
	}
}
