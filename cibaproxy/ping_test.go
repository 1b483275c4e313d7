package cibaproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// pingCall is a notification the test endpoint received.
type pingCall struct {
	Method, Path, ContentType, Auth, Cookie string
	Body                                    []byte
}

// pingEndpoint is a client's notification endpoint: an https listener in
// the test that records what it receives and answers as answer says (204
// when nil). n counts the calls, from 1.
type pingEndpoint struct {
	srv    *httptest.Server
	URL    string
	answer func(n int, w http.ResponseWriter)

	mu    sync.Mutex
	calls []pingCall
}

func newPingEndpoint(t *testing.T, answer func(n int, w http.ResponseWriter)) *pingEndpoint {
	t.Helper()
	e := &pingEndpoint{answer: answer}
	e.srv = httptest.NewUnstartedServer(e)
	e.srv.Listener = cibatest.ListenLoopback(t)
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	e.URL = e.srv.URL + "/ciba/cb?tenant=7"
	return e
}

func (e *pingEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.calls = append(e.calls, pingCall{
		Method: r.Method, Path: r.URL.RequestURI(), ContentType: r.Header.Get("Content-Type"),
		Auth: r.Header.Get("Authorization"), Cookie: r.Header.Get("Cookie"), Body: body,
	})
	n := len(e.calls)
	e.mu.Unlock()
	if e.answer == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	e.answer(n, w)
}

// Calls returns the notifications received so far.
func (e *pingEndpoint) Calls() []pingCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]pingCall(nil), e.calls...)
}

// pingTestRoots trusts the certificate of httptest's TLS servers (one for
// all).
func pingTestRoots(t *testing.T) *x509.CertPool {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

// pingEvents records the outbox's outcomes of ping deliveries.
type pingEvents struct {
	mu  sync.Mutex
	evs []outbox.Event
}

func (p *pingEvents) record(ev outbox.Event) {
	if ev.Kind != ping.Kind {
		return
	}
	p.mu.Lock()
	p.evs = append(p.evs, ev)
	p.mu.Unlock()
}

func (p *pingEvents) count(outcome string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, ev := range p.evs {
		if ev.Outcome == outcome {
			n++
		}
	}
	return n
}

func (p *pingEvents) all() []outbox.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]outbox.Event(nil), p.evs...)
}

// pingRig is the harness with the ping client "pinger" notified at an
// endpoint; the site's Server registers its ping notifier, which trusts
// httptest's certificate.
type pingRig struct {
	*harness
	events *pingEvents
	logs   *observer.ObservedLogs
	roots  *x509.CertPool
}

// pingSite points pinger at endpoint, trusts roots for the notifications
// and logs to logger.
func pingSite(endpoint string, roots *x509.CertPool, logger *zap.Logger) harnessOption {
	return func(c *Config) {
		c.Logger = logger
		c.PingTLSConfig = &tls.Config{RootCAs: roots}
		for _, cl := range c.Clients {
			if cl.ID == "pinger" {
				cl.NotificationEndpoint = endpoint
			}
		}
	}
}

// newPingRig builds the harness in dir; register says whether the site's
// notifier stays registered with the outbox. Without it the site's Server
// is closed at once (its notifier unregistered, as between the cleanup of
// one configuration and the start of the next): it still takes requests
// and decisions, whose notifications wait in the outbox for a sender.
func newPingRig(t *testing.T, dir, endpoint string, register bool) *pingRig {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	r := &pingRig{events: &pingEvents{}, logs: logs, roots: pingTestRoots(t)}
	r.harness = newHarnessIn(t, dir, pingSite(endpoint, r.roots, zap.New(core)))
	r.backend.Outbox.Observe(r.events.record)
	if !register {
		r.srv.Close()
	}
	return r
}

// register starts another Server of the site on the same backend, as a
// configuration reload does; it registers the site's notifier, until the
// test ends. Requests go to it from now on.
func (r *pingRig) register() *Server {
	r.t.Helper()
	srv, err := New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(srv.Close)
	r.srv = srv
	return srv
}

// start makes a ping request with a fresh notification token.
func (r *pingRig) start() (id, token string) {
	r.t.Helper()
	token, err := random.Token(24)
	if err != nil {
		r.t.Fatal(err)
	}
	token = "cnt." + token + "~+/=" // the whole b64token alphabet of RFC 6750
	return r.authorize("pinger", "client_notification_token", token), token
}

func (r *pingRig) decide(id string, d authn.Decision) {
	r.t.Helper()
	if _, err := r.srv.Decide(context.Background(), store.KeyOf(id), d); err != nil {
		r.t.Fatal(err)
	}
}

// settled waits until the outbox holds no notification: the delivered
// ones are removed (a delivery's item goes once its attempt returned, a
// moment after the endpoint saw the call; moving the clock past its lease
// before that would let the outbox deliver it again, as it must after a
// crash).
func (r *pingRig) settled() {
	r.t.Helper()
	cibatest.WaitFor(r.t, 5*time.Second, "the delivered notifications to leave the outbox", func() bool {
		counts, err := r.store.OutboxCounts(context.Background())
		return err == nil && counts[ping.Kind] == 0
	})
}

// advance moves the clock on (retries come due) and wakes the outbox.
func (r *pingRig) advance(d time.Duration) {
	r.clock.Advance(d)
	r.backend.Outbox.Wake()
}

// pingRetryDelay is the outbox's backoff after the n-th attempt: 1 s,
// 2 s, 4 s, 8 s, then 15 s.
func pingRetryDelay(n int) time.Duration {
	if n > 4 {
		return outbox.MaxRetryDelay
	}
	return min(time.Second<<(n-1), outbox.MaxRetryDelay)
}

// pingQuiet waits a moment and checks that the endpoint saw want calls,
// not more: nothing else was sent.
func pingQuiet(t *testing.T, e *pingEndpoint, want int) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	if n := len(e.Calls()); n != want {
		t.Fatalf("the endpoint received %d notifications, want %d", n, want)
	}
}

// pingWantNotification checks a call: exactly the CIBA Core §10.2
// request.
func pingWantNotification(t *testing.T, c pingCall, id, token string) {
	t.Helper()
	if c.Method != http.MethodPost || c.Path != "/ciba/cb?tenant=7" {
		t.Errorf("notification %s %s, want POST /ciba/cb?tenant=7", c.Method, c.Path)
	}
	if c.ContentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json", c.ContentType)
	}
	if c.Auth != "Bearer "+token {
		t.Errorf("Authorization %q, want Bearer and the client_notification_token", c.Auth)
	}
	if c.Cookie != "" {
		t.Errorf("the notification carries cookies: %q", c.Cookie)
	}
	if want := `{"auth_req_id":"` + id + `"}`; string(c.Body) != want {
		t.Errorf("body %s, want exactly %s", c.Body, want)
	}
}

// wantTokens polls and checks the answer is the minted tokens.
func (r *pingRig) wantTokens(id string) {
	r.t.Helper()
	rec := r.poll("pinger", id)
	if rec.Code != http.StatusOK {
		r.t.Fatalf("poll after the notification: %d %s", rec.Code, rec.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || !strings.HasPrefix(tok.AccessToken, "at-alice-") {
		r.t.Fatalf("poll answer %s: %v", rec.Body, err)
	}
}

// checkNothingLeaks fails if the store holds the auth_req_id or the token
// in readable form, or if a log entry or delivery error holds either.
func (r *pingRig) checkNothingLeaks(secrets ...string) {
	r.t.Helper()
	for _, s := range secrets {
		if storeHolds(r.t, r.badger, []byte(s)) {
			r.t.Errorf("the store holds %q readable", s)
		}
		for _, e := range r.logs.All() {
			line := e.Message
			for k, v := range e.ContextMap() {
				line += fmt.Sprintf(" %s=%v", k, v)
			}
			if strings.Contains(line, s) {
				r.t.Errorf("the log holds %q: %s", s, line)
			}
		}
		for _, ev := range r.events.all() {
			if (ev.Err != nil && strings.Contains(ev.Err.Error(), s)) || (ev.Item != nil && strings.Contains(ev.Item.LastError, s)) {
				r.t.Errorf("a delivery error holds %q: %v", s, ev.Err)
			}
		}
	}
}

// TestPingApproved: after approval the endpoint receives exactly
// {"auth_req_id"} with the bearer token, once; the poll then returns the
// tokens. Neither the auth_req_id nor the token is readable in the store
// at any point: pending, queued, delivered.
func TestPingApproved(t *testing.T) {
	ep := newPingEndpoint(t, nil)
	r := newPingRig(t, t.TempDir(), ep.URL, false)
	id, token := r.start()

	// Ping clients may poll as well (CIBA Core §10.2).
	cibatest.WantOAuthError(t, r.poll("pinger", id), 400, oauth.CodeAuthorizationPending)
	if sealed := r.get(id).Ping; len(sealed) == 0 {
		t.Fatal("the request keeps nothing for its notification")
	}
	r.checkNothingLeaks(id, token)

	r.decide(id, authn.Approve)
	items := outboxItems(t, r.store)
	if len(items) != 1 || items[0].ID.Kind != ping.Kind || items[0].ID.Request != store.KeyOf(id) ||
		items[0].Sender != ping.SenderName(testPublic) || !items[0].NotAfter.Equal(r.get(id).Expires) {
		t.Fatalf("queued with the decision: %+v", items)
	}
	r.checkNothingLeaks(id, token)
	if len(ep.Calls()) != 0 {
		t.Fatal("notified before a notifier was registered")
	}

	r.register()
	cibatest.WaitFor(t, 5*time.Second, "the notification", func() bool { return len(ep.Calls()) == 1 })
	pingWantNotification(t, ep.Calls()[0], id, token)
	cibatest.WaitFor(t, 5*time.Second, "the delivery to be recorded", func() bool { return r.events.count("delivered") == 1 })
	if n := len(outboxItems(t, r.store)); n != 0 {
		t.Errorf("%d items left in the outbox", n)
	}

	r.clock.Advance(5 * time.Second) // the interval since the poll above
	r.wantTokens(id)
	pingQuiet(t, ep, 1)
	r.checkNothingLeaks(id, token)
}

// TestPingDenied: a denial is notified too; the poll answers access_denied.
func TestPingDenied(t *testing.T) {
	ep := newPingEndpoint(t, nil)
	r := newPingRig(t, t.TempDir(), ep.URL, true)
	id, token := r.start()
	r.decide(id, authn.Deny)
	cibatest.WaitFor(t, 5*time.Second, "the notification", func() bool { return len(ep.Calls()) == 1 })
	pingWantNotification(t, ep.Calls()[0], id, token)
	cibatest.WantOAuthError(t, r.poll("pinger", id), 400, oauth.CodeAccessDenied)
	pingQuiet(t, ep, 1)
	r.checkNothingLeaks(id, token)
}

// TestPingPollClientNotNotified: a poll client's decision queues nothing.
func TestPingPollClientNotNotified(t *testing.T) {
	ep := newPingEndpoint(t, nil)
	r := newPingRig(t, t.TempDir(), ep.URL, true)
	id := r.authorize("cc")
	if len(r.get(id).Ping) != 0 {
		t.Error("a poll client's request keeps a notification")
	}
	r.approve(id)
	if n := len(outboxItems(t, r.store)); n != 0 {
		t.Errorf("%d items queued for a poll client", n)
	}
	pingQuiet(t, ep, 0)
}

// TestPingEndpointAnswers: what the endpoint answers decides whether the
// notification is retried; the flow always completes by polling (a 401,
// a 403 or a 400 is not retried, a body is ignored, a 5xx is retried).
func TestPingEndpointAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []int // by call; the last repeats
		body    string
		calls   int    // calls in the end
		outcome string // the last outcome
	}{
		{"204", []int{204}, "", 1, "delivered"},
		{"200 with a body", []int{200}, `{"ok":true,"note":"ignored"}`, 1, "delivered"},
		{"401 is not retried", []int{401}, `{"error":"invalid_token"}`, 1, "failed"},
		{"403 is not retried", []int{403}, "", 1, "failed"},
		{"400 is not retried", []int{400}, "", 1, "failed"},
		{"5xx then 204 is retried and delivered once", []int{503, 500, 204}, "", 3, "delivered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep := newPingEndpoint(t, func(n int, w http.ResponseWriter) {
				code := tc.answers[min(n, len(tc.answers))-1]
				// A cookie the notifier must neither keep nor send back.
				http.SetCookie(w, &http.Cookie{Name: "session", Value: fmt.Sprint(n)})
				if tc.body != "" {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(code)
				_, _ = io.WriteString(w, tc.body)
			})
			r := newPingRig(t, t.TempDir(), ep.URL, true)
			id, token := r.start()
			r.approve(id)
			for n := 1; n <= tc.calls; n++ {
				cibatest.WaitFor(t, 5*time.Second, fmt.Sprintf("call %d", n), func() bool { return len(ep.Calls()) >= n })
				pingWantNotification(t, ep.Calls()[n-1], id, token)
				if n < tc.calls {
					cibatest.WaitFor(t, 5*time.Second, "the retry to be scheduled", func() bool { return r.events.count("retry") == n })
					// Not before the backoff: 1 s, then 2 s.
					pingQuiet(t, ep, n)
					r.advance(pingRetryDelay(n))
				}
			}
			cibatest.WaitFor(t, 5*time.Second, tc.outcome, func() bool { return r.events.count(tc.outcome) == 1 })
			// Nothing more, however long the request lives.
			r.advance(time.Minute)
			pingQuiet(t, ep, tc.calls)
			if n := len(outboxItems(t, r.store)); n != 0 {
				t.Errorf("%d items left in the outbox", n)
			}
			r.wantTokens(id)
			r.checkNothingLeaks(id, token)
		})
	}
}

// TestPingRedirectNotFollowed: a redirect, whichever its status (307 and
// 308 would repeat the POST with its bearer token), is a failed delivery:
// not followed (its target, on another port, receives nothing), not
// retried (CIBA Core §10.2: the OP MUST NOT follow redirects).
func TestPingRedirectNotFollowed(t *testing.T) {
	for _, status := range []int{
		http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect,
	} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			target := newPingEndpoint(t, nil)
			ep := newPingEndpoint(t, func(_ int, w http.ResponseWriter) {
				w.Header().Set("Location", target.URL)
				http.SetCookie(w, &http.Cookie{Name: "session", Value: "x"})
				w.WriteHeader(status)
			})
			r := newPingRig(t, t.TempDir(), ep.URL, true)
			id, token := r.start()
			r.approve(id)
			cibatest.WaitFor(t, 5*time.Second, "the failure", func() bool { return r.events.count("failed") == 1 })
			r.advance(time.Minute)
			pingQuiet(t, ep, 1)
			if n := len(target.Calls()); n != 0 {
				t.Fatalf("the redirect was followed: its target received %d requests", n)
			}
			if n := r.events.count("retry"); n != 0 {
				t.Errorf("%d retries of a redirect, want none", n)
			}
			pingWantNotification(t, ep.Calls()[0], id, token)
			r.wantTokens(id)
		})
	}
}

// TestPingEndpointDown: a network error is retried; once the endpoint is
// up the notification arrives, once.
func TestPingEndpointDown(t *testing.T) {
	addr := cibatest.FreeAddr(t) // nothing listens: connection refused
	endpoint := "https://" + addr + "/ciba/cb?tenant=7"
	r := newPingRig(t, t.TempDir(), endpoint, true)
	id, token := r.start()
	r.approve(id)
	cibatest.WaitFor(t, 5*time.Second, "a failed attempt", func() bool { return r.events.count("retry") == 1 })
	if ev := r.events.all()[0]; ev.Err == nil || !strings.Contains(ev.Err.Error(), "pinger") {
		t.Errorf("retry reason %v: should name the client", ev.Err)
	}

	ep := &pingEndpoint{}
	srv := httptest.NewUnstartedServer(ep)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on the reserved address %s: %v", addr, err)
	}
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.advance(pingRetryDelay(1))
	cibatest.WaitFor(t, 5*time.Second, "the notification", func() bool { return len(ep.Calls()) == 1 })
	pingWantNotification(t, ep.Calls()[0], id, token)
	cibatest.WaitFor(t, 5*time.Second, "the delivery", func() bool { return r.events.count("delivered") == 1 })
	r.advance(time.Minute)
	pingQuiet(t, ep, 1)
	r.checkNothingLeaks(id, token)
}

// TestPingExpiredNotSent: a notification that could not be delivered
// before its request expired is dropped (the client knows expires_in).
func TestPingExpiredNotSent(t *testing.T) {
	ep := newPingEndpoint(t, func(int, http.ResponseWriter) {})
	r := newPingRig(t, t.TempDir(), ep.URL, false)
	id, _ := r.start()
	r.approve(id)
	r.clock.Advance(DefaultRequestTTL)
	r.register()
	cibatest.WaitFor(t, 5*time.Second, "the item to be dropped", func() bool { return r.events.count("expired") == 1 })
	pingQuiet(t, ep, 0)
}

// TestPingReloadAndTwoSites: during a reload two notifiers of one site are
// registered, and two sites share the store; each notification is still
// delivered once, by its own site, to its own client's endpoint.
func TestPingReloadAndTwoSites(t *testing.T) {
	epA := newPingEndpoint(t, nil)
	epB := newPingEndpoint(t, nil)
	r := newPingRig(t, t.TempDir(), epA.URL, true)
	r.register() // the reloaded configuration, before the old one is cleaned up

	// Site B on the same store; its Server registers its own notifier.
	cfgB := r.cfg
	cfgB.PublicURL, cfgB.Issuer = "https://login.example.com", "https://login.example.com/realms/main"
	cfgB.Clients = []*clients.Client{{ID: "pinger", Mode: clients.ModePing, NotificationEndpoint: epB.URL, SecretHashes: [][32]byte{clients.HashSecret("pinger-secret")}}}
	cfgB.Logger = zap.NewNop()
	srvB, err := New(cfgB)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srvB.Close)

	idA, tokenA := r.start()
	saved := r.srv
	r.srv = srvB
	idB, tokenB := r.start()
	r.srv = saved
	r.decide(idA, authn.Approve)
	if _, err := srvB.Decide(context.Background(), store.KeyOf(idB), authn.Deny); err != nil {
		t.Fatal(err)
	}
	cibatest.WaitFor(t, 5*time.Second, "both notifications", func() bool { return len(epA.Calls()) == 1 && len(epB.Calls()) == 1 })
	pingWantNotification(t, epA.Calls()[0], idA, tokenA)
	pingWantNotification(t, epB.Calls()[0], idB, tokenB)
	r.settled()
	r.advance(time.Minute)
	pingQuiet(t, epA, 1)
	pingQuiet(t, epB, 1)
}

// TestPingKillHelper is not a test: TestPingSIGKILL runs the test binary
// with it as a child process, which it then kills with SIGKILL.
func TestPingKillHelper(t *testing.T) {
	dir := os.Getenv("CIBAPROXY_PING_KILL_DIR")
	if dir == "" {
		t.Skip("helper process for TestPingSIGKILL")
	}
	// The site's Server is closed: the only ping deliverer is the one
	// below.
	r := newPingRig(t, dir, "https://127.0.0.1:1/unused", false)
	// The first notification's delivery hangs: the process dies holding
	// its lease.
	delivering := make(chan struct{}, 1)
	unregister := r.backend.Outbox.Register(ping.Kind, ping.SenderName(testPublic), outbox.DelivererFunc(func(ctx context.Context, _ *store.OutboxItem) error {
		delivering <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}))
	leased, _ := r.start()
	queued, _ := r.start()
	r.decide(leased, authn.Approve)
	<-delivering
	unregister()
	// The second is decided after its site's deliverer is gone: it dies
	// queued, never attempted.
	r.decide(queued, authn.Deny)
	fmt.Printf("ping-ids %s %s\n", leased, queued)
	select {}
}

// TestPingSIGKILL: a process killed between a decision and its
// notification's delivery (one in flight, one queued) delivers each
// exactly once after the restart, both at once (the lease of the one in
// flight died with its process).
func TestPingSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	var ids []string
	runKilled(t, "TestPingKillHelper", []string{"CIBAPROXY_PING_KILL_DIR=" + dir}, func(f []string) bool {
		if len(f) == 3 && f[0] == "ping-ids" {
			ids = f[1:]
			return true
		}
		return false
	})
	if len(ids) != 2 {
		t.Fatal("the helper did not report its requests")
	}
	leased, queued := ids[0], ids[1]

	ep := newPingEndpoint(t, nil)
	r := newPingRig(t, dir, ep.URL, true)
	// Both go at once, without the clock moving: the dead process's lease
	// is void at open.
	cibatest.WaitFor(t, 5*time.Second, "both notifications", func() bool { return len(ep.Calls()) == 2 })
	pingQuiet(t, ep, 2)
	got := map[string]bool{}
	for _, c := range ep.Calls() {
		got[string(c.Body)] = true
	}
	for _, id := range []string{leased, queued} {
		if !got[`{"auth_req_id":"`+id+`"}`] {
			t.Fatalf("notifications %v: none for %s", got, id)
		}
	}
	r.settled()
	r.advance(time.Minute) // past the old lease: nothing is sent again
	pingQuiet(t, ep, 2)
	r.wantTokens(leased)
	cibatest.WantOAuthError(t, r.poll("pinger", queued), 400, oauth.CodeAccessDenied)
}

// TestPingWrongSealKey: a notification sealed with another key (the key
// was replaced) is dropped as permanent, never sent.
func TestPingWrongSealKey(t *testing.T) {
	ep := newPingEndpoint(t, nil)
	r := newPingRig(t, t.TempDir(), ep.URL, false)
	// The site with its seal key replaced: its notifier opens nothing
	// sealed with the old key.
	replaced := r.cfg
	replaced.SealKey = bytes.Repeat([]byte{1}, ping.SealKeySize)
	srv, err := New(replaced)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	id, _ := r.start() // sealed with the old key, by the closed Server
	r.approve(id)
	cibatest.WaitFor(t, 5*time.Second, "the failure", func() bool { return r.events.count("failed") == 1 })
	pingQuiet(t, ep, 0)
}

// TestPingWithoutSealKey: a site with a ping client and no seal key (or
// one of the wrong size) is a configuration error, refused by New; without
// ping clients no seal key is needed and poll clients work.
func TestPingWithoutSealKey(t *testing.T) {
	h := newHarness(t)
	for _, key := range [][]byte{nil, make([]byte, ping.SealKeySize-1)} {
		cfg := h.cfg
		cfg.SealKey = key
		if srv, err := New(cfg); err == nil {
			srv.Close()
			t.Errorf("a site with a ping client and a %d-byte seal key was built", len(key))
		} else if !strings.Contains(err.Error(), "seal key") {
			t.Errorf("error %q does not name the seal key", err)
		}
	}
	pollOnly := newHarness(t, func(c *Config) {
		c.SealKey = nil
		c.Clients = slices.DeleteFunc(slices.Clone(c.Clients), func(cl *clients.Client) bool { return cl.Mode == clients.ModePing })
	})
	pollOnly.authorize("cc")
	cibatest.WantOAuthError(t, pollOnly.post(DefaultEndpoint, "pinger", hForm("client_notification_token", "tok")), 401, oauth.CodeInvalidClient)
	if _, err := ping.New(ping.Config{}); err == nil {
		t.Error("a notifier without a seal key was built")
	}
}

// TestPingDiscovery: discovery advertises poll and ping, never push.
func TestPingDiscovery(t *testing.T) {
	h := newHarness(t)
	rec := h.serve(httptest.NewRequest(http.MethodGet, testIssuer+"/.well-known/openid-configuration", nil))
	var doc struct {
		Modes []string `json:"backchannel_token_delivery_modes_supported"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if strings.Join(doc.Modes, " ") != "poll ping" {
		t.Errorf("backchannel_token_delivery_modes_supported = %q, want [poll ping]", doc.Modes)
	}
}

// TestPingValidation: the rules of a client's mode and notification
// endpoint.
func TestPingValidation(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     clients.DeliveryMode
		endpoint string
		insecure bool
		want     string // a substring of the error; "" accepted
	}{
		{"https", clients.ModePing, "https://cd.example.com/cb", false, ""},
		{"https with a port and a query", clients.ModePing, "https://cd.example.com:8443/cb?x=1", false, ""},
		{"https to loopback (no address range is refused)", clients.ModePing, "https://127.0.0.1:9443/cb", false, ""},
		{"https to a private address", clients.ModePing, "https://10.1.2.3/cb", false, ""},
		{"https with insecure_notification", clients.ModePing, "https://cd.example.com/cb", true, ""},
		{"http to 127.0.0.1 with insecure_notification", clients.ModePing, "http://127.0.0.1:8080/cb", true, ""},
		{"http to localhost with insecure_notification", clients.ModePing, "http://localhost:8080/cb", true, ""},
		{"http to ::1 with insecure_notification", clients.ModePing, "http://[::1]:8080/cb", true, ""},
		{"http to loopback without insecure_notification", clients.ModePing, "http://127.0.0.1:8080/cb", false, "must be https"},
		{"http to a remote host", clients.ModePing, "http://cd.example.com/cb", false, "must be https"},
		{"http to a remote host with insecure_notification", clients.ModePing, "http://cd.example.com/cb", true, "only to a loopback host"},
		{"http to a private address with insecure_notification", clients.ModePing, "http://192.168.1.1/cb", true, "only to a loopback host"},
		{"ping without notification_endpoint", clients.ModePing, "", false, "needs a notification_endpoint"},
		{"not absolute", clients.ModePing, "cd.example.com/cb", false, "absolute https URL"},
		{"another scheme", clients.ModePing, "ftp://cd.example.com/cb", false, "absolute https URL"},
		{"no host", clients.ModePing, "https:///cb", false, "absolute https URL"},
		{"user info", clients.ModePing, "https://u:p@cd.example.com/cb", false, "user info"},
		{"fragment", clients.ModePing, "https://cd.example.com/cb#x", false, "fragment"},
		{"poll", clients.ModePoll, "", false, ""},
		{"push", "push", "https://cd.example.com/cb", false, "must be poll or ping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := &clients.Client{ID: "c", Mode: tc.mode, NotificationEndpoint: tc.endpoint, InsecureNotification: tc.insecure,
				SecretHashes: [][32]byte{clients.HashSecret("s")}}
			err := clients.Validate([]*clients.Client{cl}, nil, false)
			cibatest.WantErr(t, err, tc.want)
		})
	}
	// Through the whole configuration.
	h := newHarness(t)
	cfg := h.cfg
	cfg.Clients = []*clients.Client{{ID: "p", Mode: clients.ModePing, SecretHashes: [][32]byte{clients.HashSecret("s")}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "notification_endpoint") {
		t.Errorf("a ping client without notification_endpoint: %v", err)
	}
}
