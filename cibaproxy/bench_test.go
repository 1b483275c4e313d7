package cibaproxy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// The benchmarks of the hot paths: the backchannel request, the pending
// and the approved poll, the store operations and client authentication.
// Every one runs against Badger on disk (b.TempDir()) with the production
// options (badgerstore.Options: SyncWrites on), so a write costs what it costs in
// production. They print figures; none asserts a timing. A wrong answer
// (not the status the benchmark is about) fails it, as a broken test would.
// The variants named -nosync and -groupsync run prototypes defined in this
// file (SyncWrites off, a group commit): yardsticks of what a change would
// gain, not what production runs; -read polls without the store's memory
// of pending requests, a yardstick of what it saves.
//
//	go test -run '^$' -bench . -benchtime=1s ./cibaproxy/

const (
	benchUsers    = 1000
	benchClientID = "cc"
	benchSecret   = "cc-bench-secret"
)

// benchEnv is a Server on a Badger store on disk with a fake clock, an
// instant minter, benchUsers users (u00000…) and one poll client.
type benchEnv struct {
	srv     *Server
	store   *badgerstore.Store
	backend *Backend
	clock   *cibatest.Clock
	dir     string
	users   []store.User
	auth    string // the client's Authorization header value
}

type benchOptions struct {
	// email uses the real e-mail authenticator (templates rendered, the
	// mail queued in the same transaction); its outbox delivers to a
	// deliverer that accepts at once. Otherwise the test authenticator
	// stores one link per request and queues nothing.
	email bool
	// fill creates this many pending requests before the Server starts,
	// with SyncWrites off, then reopens the store with badgerstore.Options.
	fill int
	// sync is how the store makes writes durable: "" or "group" as
	// production (badgerstore.SyncGroup), "committer"
	// (badgerstore.SyncCommitter), "badger" (Badger's own SyncWrites: its
	// writer goroutine syncs once per batch of the transactions that
	// queued while it wrote the previous one), "nosync" (not production:
	// a yardstick of what the fsync costs).
	sync string
	// read hides the store's memory of pending requests (readStore), so
	// that every poll reads its request from Badger.
	read bool
}

// readStore hides the store's memory of pending requests (PendingPeeker):
// every poll reads its request, as before that memory existed.
type readStore struct{ store.Store }

// instantMinter mints constant tokens at once: the upstream exchange costs
// nothing, so what is measured is cibaproxy's own time.
type instantMinter struct{}

func (instantMinter) Mint(_ context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
	return &upstream.Tokens{AccessToken: "at", TokenType: "Bearer", ExpiresIn: 300, IDToken: "idt", Scope: strings.Join(g.Scopes, " ")}, nil
}

func benchUserList() ([]store.User, []byte) {
	list := make([]store.User, benchUsers)
	for i := range list {
		list[i] = store.User{
			Username: fmt.Sprintf("u%05d", i),
			Email:    fmt.Sprintf("u%05d@bench.example", i),
			Subject:  fmt.Sprintf("u%05d", i),
			Name:     fmt.Sprintf("Bench User %d", i),
		}
	}
	doc, _ := json.Marshal(struct {
		Users []store.User `json:"users"`
	}{list})
	return list, doc
}

// newBenchEnv builds the Server the benchmarks drive; everything is closed
// by b.Cleanup. The returned ids are those of the o.fill requests.
func newBenchEnv(b *testing.B, o benchOptions) (*benchEnv, []string) {
	b.Helper()
	e := &benchEnv{clock: cibatest.NewClock(time.Time{}), dir: b.TempDir()}
	var userDoc []byte
	e.users, userDoc = benchUserList()
	dir, err := users.ParseUsers(userDoc)
	if err != nil {
		b.Fatal(err)
	}
	var ids []string
	if o.fill > 0 {
		st, err := badgerstore.OpenWithOptions(badgerstore.Options(e.dir).WithSyncWrites(false), nil, e.clock.Now)
		if err != nil {
			b.Fatal(err)
		}
		ids = benchCreate(b, st, o.fill, e.users, e.clock.Now(), time.Hour)
		if err := st.DB().Sync(); err != nil {
			b.Fatal(err)
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}
	switch o.sync {
	case "", "group", "committer":
		e.store, err = badgerstore.Open(e.dir, nil, e.clock.Now)
		if err == nil && o.sync == "committer" {
			e.store.SetSyncMode(badgerstore.SyncCommitter)
		} else if err == nil && o.sync == "group" {
			e.store.SetSyncMode(badgerstore.SyncGroup)
		}
	case "badger":
		e.store, err = badgerstore.OpenWithOptions(badgerstore.Options(e.dir).WithSyncWrites(true), nil, e.clock.Now)
	case "nosync":
		e.store, err = badgerstore.OpenWithOptions(badgerstore.Options(e.dir).WithSyncWrites(false), nil, e.clock.Now)
	default:
		b.Fatalf("unknown sync mode %q", o.sync)
	}
	if err != nil {
		b.Fatal(err)
	}
	var st store.Store = e.store
	if o.read {
		st = readStore{Store: st}
	}
	e.backend = NewBackend(st, nil, e.clock.Now)
	b.Cleanup(func() { _ = e.backend.Close() })
	disc, err := upstream.NewDiscovery(testIssuer, "http://127.0.0.1:9", nil, e.clock.Now)
	if err != nil {
		b.Fatal(err)
	}
	var auth authn.Authenticator = &testAuthenticator{}
	if o.email {
		ea, err := email.New(context.Background(), email.Config{
			PublicURL: testPublic,
			SMTP:      mail.Config{Addr: "127.0.0.1:25", TLS: mail.TLSNone, From: "Bench <login@bench.example>"},
			Store:     st,
			Now:       e.clock.Now,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ea.Close() })
		// Its mails go to a deliverer that accepts them at once, not to
		// an SMTP server: held, so the Server does not register the real
		// one.
		kind, sender := ea.Route()
		unregister := e.backend.Outbox.Register(kind, sender,
			outbox.DelivererFunc(func(context.Context, *store.OutboxItem) error { return nil }))
		b.Cleanup(unregister)
		auth = heldAuthenticator{ea}
	}
	cfg := Config{
		Issuer:         testIssuer,
		PublicURL:      testPublic,
		TokenPath:      testTokenURL,
		RequestTTL:     1000 * time.Hour, // the fake clock runs far in long runs
		Clients:        []*clients.Client{{ID: benchClientID, Name: "Bench", SecretHashes: [][32]byte{clients.HashSecret(benchSecret)}}},
		Users:          dir,
		Backend:        e.backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{{Name: "bench", ACR: testACR, Fallback: true, Authenticator: auth}},
		Minter:         instantMinter{},
		Metrics:        metrics.New(),
		Now:            e.clock.Now,
	}
	e.srv, err = New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.srv.Close)
	e.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(benchClientID+":"+benchSecret))
	return e, ids
}

// benchCreate stores n pending requests of the bench client, users taken
// round-robin, from 8 goroutines (so Badger batches their commits), and
// returns their auth_req_ids.
func benchCreate(b *testing.B, st store.Store, n int, users []store.User, now time.Time, life time.Duration) []string {
	b.Helper()
	ids := make([]string, n)
	for i := range ids {
		id, err := NewAuthReqID()
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				r := &store.AuthRequest{
					ClientID: benchClientID, User: users[i%len(users)], Scopes: []string{"openid", "email"},
					BindingMessage: "bench", Created: now, Expires: now.Add(life),
					Interval: DefaultInterval, Status: store.StatusPending,
				}
				if err := st.Create(context.Background(), store.KeyOf(ids[i]), r, nil, store.UserLimit{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return ids
}

// benchWriter is a reusable ResponseWriter that keeps the status and body.
type benchWriter struct {
	h    http.Header
	code int
	body []byte
}

func newBenchWriter() *benchWriter { return &benchWriter{h: make(http.Header)} }

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(c int) {
	if w.code == 0 {
		w.code = c
	}
}
func (w *benchWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}
func (w *benchWriter) reset() {
	clear(w.h)
	w.code = 0
	w.body = w.body[:0]
}

// errorCode returns the OAuth error code of an answer ("" for none).
func (w *benchWriter) errorCode() string {
	_, rest, ok := bytes.Cut(w.body, []byte(`"error":"`))
	if !ok {
		return ""
	}
	code, _, _ := bytes.Cut(rest, []byte(`"`))
	return string(code)
}

// formRequest builds the POST the HTTP server would hand to Handle.
func (e *benchEnv) formRequest(path string, body []byte) *http.Request {
	return &http.Request{
		Method:     http.MethodPost,
		URL:        &url.URL{Path: path},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1,
		Host: "idp.example.com",
		Header: http.Header{
			"Content-Type":  {"application/x-www-form-urlencoded"},
			"Authorization": {e.auth},
		},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		RemoteAddr:    "127.0.0.1:40000",
	}
}

func pollBody(id string) []byte {
	return []byte("grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id=" + id)
}

// durations collects per-iteration times and reports their percentiles.
type durations []time.Duration

func (d durations) report(b *testing.B) {
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) float64 { return float64(s[min(len(s)-1, int(p*float64(len(s))))].Nanoseconds()) }
	b.ReportMetric(at(0.50), "p50-ns")
	b.ReportMetric(at(0.99), "p99-ns")
}

// BenchmarkBackchannel is Handle of a valid backchannel authentication
// request: client authentication, validation, the user lookup, and the
// request stored (one synced Badger transaction). Users are taken
// round-robin; limits are off. "link" stores one approval link; "email"
// renders and queues the approval mail in the same transaction and has the
// outbox deliver it (to a deliverer that accepts at once).
// "email-parallel-<mode>" is "email" from 32 goroutines, as the load
// run's 32 connections, on the store's sync modes side by side (see
// benchOptions.sync; "group" is production's): it reports the device
// flushes per request (flushes/op, counted by the block device of the
// store's directory, so other work on the machine adds to them) and
// requests per flush.
func BenchmarkBackchannel(b *testing.B) {
	for _, name := range []string{"link", "email", "email-parallel-group", "email-parallel-committer", "email-parallel-badger", "email-parallel-nosync"} {
		b.Run(name, func(b *testing.B) {
			mode, _ := strings.CutPrefix(name, "email-parallel-")
			if mode == name {
				mode = ""
			}
			e, _ := newBenchEnv(b, benchOptions{email: name != "link", sync: mode})
			bodies := make([][]byte, len(e.users))
			for i, u := range e.users {
				bodies[i] = []byte("scope=openid%20email&login_hint=" + u.Username + "&binding_message=bench")
			}
			if strings.HasPrefix(name, "email-parallel") {
				var next atomic.Int64
				var failed atomic.Int64
				b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
				flushes, ferr := cibatest.NewFlushCounter("/sys", e.dir)
				var f0 int64
				if ferr == nil {
					f0, ferr = flushes.Read()
				}
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					w := newBenchWriter()
					for pb.Next() {
						w.reset()
						// Time moves on as in the binary: with the clock
						// standing still every mail would be due at the
						// same instant, and each outbox pass would read
						// from that instant over all the mails sent.
						e.clock.Advance(10 * time.Microsecond)
						e.srv.Handle(w, e.formRequest(DefaultEndpoint, bodies[next.Add(1)%int64(len(bodies))]))
						if w.code != http.StatusOK {
							failed.Add(1)
						}
					}
				})
				if n := failed.Load(); n > 0 {
					b.Fatalf("%d backchannel requests were not answered 200", n)
				}
				if ferr == nil {
					if f1, err := flushes.Read(); err == nil && f1 > f0 {
						b.ReportMetric(float64(f1-f0)/float64(b.N), "flushes/op")
						b.ReportMetric(float64(b.N)/float64(f1-f0), "req/flush")
					}
				}
				return
			}
			w := newBenchWriter()
			var d durations
			i := 0
			for b.Loop() {
				w.reset()
				r := e.formRequest(DefaultEndpoint, bodies[i%len(bodies)])
				t0 := time.Now()
				e.srv.Handle(w, r)
				d = append(d, time.Since(t0))
				if w.code != http.StatusOK {
					b.Fatalf("backchannel answered %d %s", w.code, w.body)
				}
				i++
			}
			d.report(b)
		})
	}
}

// BenchmarkPendingPoll is Handle of CIBA polls spread round-robin over
// 10,000 pending requests. "pending": the fake clock advances 1 ms per poll,
// so a request is polled again 10 s later, after its 5 s interval, and
// every answer is authorization_pending. "slow_down": the clock stands
// still, so every repeat is early and answered slow_down (raising the
// interval, as the tracker enforces). "parallel": pending polls from
// GOMAXPROCS goroutines, the clock advancing as in "pending".
// "pending-read": "pending" with the store's memory of pending requests
// hidden (readStore): every poll reads its request from Badger, as the
// first poll of a request not held (after a restart, before the scan at
// open has reached it) does.
func BenchmarkPendingPoll(b *testing.B) {
	const pending = 10000
	for _, mode := range []string{"pending", "slow_down", "parallel", "pending-read"} {
		b.Run(mode, func(b *testing.B) {
			e, ids := newBenchEnv(b, benchOptions{fill: pending, read: mode == "pending-read"})
			bodies := make([][]byte, len(ids))
			for i, id := range ids {
				bodies[i] = pollBody(id)
			}
			if mode == "parallel" {
				var next atomic.Int64
				var other atomic.Int64
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					w := newBenchWriter()
					for pb.Next() {
						i := next.Add(1)
						e.clock.Advance(time.Millisecond)
						w.reset()
						e.srv.Handle(w, e.formRequest(testTokenURL, bodies[i%pending]))
						if c := w.errorCode(); c != oauth.CodeAuthorizationPending && c != oauth.CodeSlowDown {
							other.Add(1)
						}
					}
				})
				if n := other.Load(); n > 0 {
					b.Fatalf("%d polls answered neither authorization_pending nor slow_down", n)
				}
				return
			}
			w := newBenchWriter()
			var d durations
			counts := map[string]int{}
			i := 0
			for b.Loop() {
				if mode != "slow_down" {
					e.clock.Advance(time.Millisecond)
				}
				w.reset()
				r := e.formRequest(testTokenURL, bodies[i%pending])
				t0 := time.Now()
				e.srv.Handle(w, r)
				d = append(d, time.Since(t0))
				counts[w.errorCode()]++
				i++
			}
			for c := range counts {
				if c != oauth.CodeAuthorizationPending && c != oauth.CodeSlowDown {
					b.Fatalf("answers %v: only authorization_pending and slow_down are expected", counts)
				}
			}
			b.ReportMetric(float64(counts[oauth.CodeAuthorizationPending])/float64(i), "pending-frac")
			b.ReportMetric(float64(counts[oauth.CodeSlowDown])/float64(i), "slowdown-frac")
			d.report(b)
		})
	}
}

// BenchmarkApprovedPoll is Handle of the poll that redeems an approved
// request with an instant minter: everything cibaproxy does on its own
// (authentication, the claim and the consumption, each a synced Badger
// transaction, and the answer) but the upstream exchange. Requests are
// created and approved in batches with the timer stopped; each is polled
// once, as its first poll. p50-ns is "cibaproxy's own time on an approved
// poll".
func BenchmarkApprovedPoll(b *testing.B) {
	const batch = 256
	e, _ := newBenchEnv(b, benchOptions{})
	w := newBenchWriter()
	var d durations
	var ready []string
	approve := func() {
		ids := benchCreate(b, e.store, batch, e.users, e.clock.Now(), time.Hour)
		var wg sync.WaitGroup
		errs := make(chan error, len(ids))
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := g; j < len(ids); j += 8 {
					if _, err := e.srv.Decide(context.Background(), store.KeyOf(ids[j]), authn.Approve); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		ready = ids
	}
	approve()
	for b.Loop() {
		if len(ready) == 0 {
			b.StopTimer()
			approve()
			b.StartTimer()
		}
		id := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		w.reset()
		r := e.formRequest(testTokenURL, pollBody(id))
		t0 := time.Now()
		e.srv.Handle(w, r)
		d = append(d, time.Since(t0))
		if w.code != http.StatusOK {
			b.Fatalf("approved poll answered %d %s", w.code, w.body)
		}
	}
	d.report(b)
}

// BenchmarkStoreCreate is badgerstore.Store.Create of a pending request with its
// indexes and counts (one synced transaction). "serial" is one writer, so
// every Create waits for its own fsync; "parallel" has GOMAXPROCS×8
// writers, whose commits Badger batches into shared fsyncs.
func BenchmarkStoreCreate(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		e, _ := newBenchEnv(b, benchOptions{})
		now := e.clock.Now()
		var d durations
		i := 0
		for b.Loop() {
			r := &store.AuthRequest{
				ClientID: benchClientID, User: e.users[i%len(e.users)], Scopes: []string{"openid", "email"},
				Created: now, Expires: now.Add(time.Hour), Interval: DefaultInterval, Status: store.StatusPending,
			}
			key := store.KeyOf(fmt.Sprintf("create-%d", i))
			t0 := time.Now()
			if err := e.store.Create(context.Background(), key, r, nil, store.UserLimit{}); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
			i++
		}
		d.report(b)
	})
	b.Run("parallel", func(b *testing.B) {
		e, _ := newBenchEnv(b, benchOptions{})
		now := e.clock.Now()
		var next atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := next.Add(1)
				r := &store.AuthRequest{
					ClientID: benchClientID, User: e.users[int(i)%len(e.users)], Scopes: []string{"openid", "email"},
					Created: now, Expires: now.Add(time.Hour), Interval: DefaultInterval, Status: store.StatusPending,
				}
				if err := e.store.Create(context.Background(), store.KeyOf(fmt.Sprintf("create-%d", i)), r, nil, store.UserLimit{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkStoreGet is badgerstore.Store.Get (read and JSON decoding) of
// requests spread over 10,000.
func BenchmarkStoreGet(b *testing.B) {
	const n = 10000
	e, ids := newBenchEnv(b, benchOptions{fill: n})
	keys := make([]store.RequestKey, len(ids))
	for i, id := range ids {
		keys[i] = store.KeyOf(id)
	}
	i := 0
	for b.Loop() {
		if _, err := e.store.Get(context.Background(), keys[(i*7919)%n]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkStoreUpdate is badgerstore.Store.Update of a pending request that
// stays pending (read, decode, encode, one synced write), one writer.
func BenchmarkStoreUpdate(b *testing.B) {
	const n = 10000
	e, ids := newBenchEnv(b, benchOptions{fill: n})
	keys := make([]store.RequestKey, len(ids))
	for i, id := range ids {
		keys[i] = store.KeyOf(id)
	}
	var d durations
	i := 0
	for b.Loop() {
		t0 := time.Now()
		_, err := e.store.Update(context.Background(), keys[(i*7919)%n], func(r *store.AuthRequest) error {
			r.BindingMessage = "updated"
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(t0))
		i++
	}
	d.report(b)
}

// BenchmarkClientAuth is client authentication on the poll path: "basic"
// decodes the Authorization header and checks the secret (the client
// registry's Authenticate); "check" is the SHA-256 of the secret
// (clients.HashSecret) and the constant-time comparison with the client's
// hashes alone, as the registry makes them.
func BenchmarkClientAuth(b *testing.B) {
	e, _ := newBenchEnv(b, benchOptions{})
	b.Run("basic", func(b *testing.B) {
		r := e.formRequest(testTokenURL, nil)
		form := url.Values{}
		for b.Loop() {
			if _, err := e.srv.clients.Authenticate(r, form); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		cl := e.srv.clients.Get(benchClientID)
		for b.Loop() {
			sum := clients.HashSecret(benchSecret)
			ok := 0
			for i := range cl.SecretHashes {
				ok |= subtle.ConstantTimeCompare(sum[:], cl.SecretHashes[i][:])
			}
			if ok != 1 {
				b.Fatal("the secret did not match")
			}
		}
	})
}
