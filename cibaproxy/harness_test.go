package cibaproxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// The harness of the core's tests: a Server on a Badger store on disk, a
// fake upstream OP serving discovery, a clock the test advances, a minter
// and an authenticator written for the tests. harness_mail_test.go builds
// the same site around the real e-mail link authenticator.

// testMinter is a Minter written for the tests: it returns recognisable
// tokens, or the error set in fail.
type testMinter struct {
	mu     sync.Mutex
	calls  int
	grants []*upstream.Grant
	fail   error
	delay  time.Duration
	hook   func() // run during Mint, after the delay
}

func (m *testMinter) Mint(ctx context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
	m.mu.Lock()
	m.calls++
	m.grants = append(m.grants, g)
	n, fail, delay, hook := m.calls, m.fail, m.delay, m.hook
	m.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if hook != nil {
		hook()
	}
	if fail != nil {
		return nil, fail
	}
	return &upstream.Tokens{
		AccessToken: fmt.Sprintf("at-%s-%d", g.User.Username, n),
		TokenType:   "Bearer",
		ExpiresIn:   300,
		IDToken:     fmt.Sprintf("idt-%s-%d", g.User.Username, n),
		Scope:       strings.Join(g.Scopes, " "),
	}, nil
}

func (m *testMinter) set(fail error) {
	m.mu.Lock()
	m.fail = fail
	m.mu.Unlock()
}

func (m *testMinter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// holdFirst makes the first mint wait until release is closed; entered is
// closed once that mint began (a claim is then in flight).
func (m *testMinter) holdFirst() (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	m.mu.Lock()
	m.hook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	m.mu.Unlock()
	return entered, release
}

// testAuthenticator records the requests it was asked to reach, with one
// approval link each.
type testAuthenticator struct {
	mu    sync.Mutex
	keys  []store.RequestKey
	links []store.LinkKey
	fail  error
}

func (a *testAuthenticator) Start(_ context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return nil, a.fail
	}
	link := store.LinkKeyOf(fmt.Sprintf("link-%d", len(a.links)))
	a.keys = append(a.keys, key)
	a.links = append(a.links, link)
	return &store.Outbound{Links: []store.LinkKey{link}}, nil
}

const (
	testPublic   = "https://idp.example.com"
	testIssuer   = testPublic + "/realms/main"
	testTokenURL = "/realms/main/protocol/openid-connect/token"
	testUsers    = `{"users":[
		{"username":"alice","email":"Alice@Example.com","name":"Alice Example"},
		{"username":"bob","email":"bob@example.com","subject":"u-bob"}]}`
	// testACR is the acr of the harness's authenticator, the fallback of
	// every acr_values.
	testACR = "urn:example:acr:test"
)

// testSealKey seals the ping notifications of the harness's site.
var testSealKey = []byte("0123456789abcdef0123456789abcdef")

// siteClock is the clock of a backend and of the sites on it: a
// cibatest.Clock (fixed: time moves when the test advances it) or a
// cibatest.LiveClock (real time, so that the outbox's timers and backoff
// run as in production, and a deadline can still be made to pass at once).
type siteClock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// siteBackend is a Backend on a store, with the clock of the sites built
// on it: a Badger store in a directory (newSiteBackend) or one client of a
// shared Redis (newRedisBackend).
type siteBackend struct {
	backend *Backend
	store   store.Store
	badger  *badgerstore.Store // the store, when it is Badger's
	clock   siteClock
	log     *zap.Logger            // of the store, the backend and its sites (nil: none)
	logs    *observer.ObservedLogs // what log wrote, for newObservedBackend
}

// newSiteBackend opens the Badger store in dir on clock and builds a
// Backend on it, both logging to log (nil: nowhere); t.Cleanup closes it.
func newSiteBackend(t testing.TB, dir string, clock siteClock, log *zap.Logger) *siteBackend {
	t.Helper()
	st, err := badgerstore.Open(dir, log, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, log, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	return &siteBackend{backend: b, store: st, badger: st, clock: clock, log: log}
}

// newObservedBackend is newSiteBackend logging at debug level to logs.
func newObservedBackend(t testing.TB, dir string, clock siteClock) *siteBackend {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	b := newSiteBackend(t, dir, clock, zap.New(core))
	b.logs = logs
	return b
}

// settle waits for the outbox to empty and stops its worker, which waits
// for the deliveries in flight: what the mail servers received is then
// final, no attempt being left to come.
func (b *siteBackend) settle(t *testing.T) {
	t.Helper()
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, b.store)) == 0 })
	b.backend.Outbox.Close()
}

type harness struct {
	*siteBackend
	t        *testing.T
	srv      *Server
	cfg      Config
	minter   *testMinter
	auth     *testAuthenticator
	upstream *cibatest.FakeOP
}

type harnessOption func(*Config)

// newHarness builds a Server on a Badger store in a fresh directory, with
// clients cc (poll), other (poll), off (disabled), pinger (ping) and
// narrow (scope openid only).
func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	return newHarnessIn(t, t.TempDir(), opts...)
}

// newHarnessIn is newHarness on the store in dir, on a fixed clock.
func newHarnessIn(t *testing.T, dir string, opts ...harnessOption) *harness {
	t.Helper()
	return newHarnessOn(t, newSiteBackend(t, dir, cibatest.NewClock(time.Time{}), nil), opts...)
}

// newHarnessOn is newHarness on b: on its store and clock, logging to its
// logger.
func newHarnessOn(t *testing.T, b *siteBackend, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{siteBackend: b, t: t, minter: &testMinter{}, auth: &testAuthenticator{}}
	h.upstream = cibatest.StartOP(t, testIssuer)
	disc, err := upstream.NewDiscovery(testIssuer, h.upstream.URL(), nil, b.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = Config{
		Issuer:    testIssuer,
		PublicURL: testPublic,
		TokenPath: testTokenURL,
		Clients: []*clients.Client{
			{ID: "cc", Name: "Call Centre", SecretHashes: [][32]byte{clients.HashSecret("cc-secret"), clients.HashSecret("cc-new")}},
			{ID: "other", SecretHashes: [][32]byte{clients.HashSecret("other-secret")}},
			{ID: "off", SecretHashes: [][32]byte{clients.HashSecret("off-secret")}, Disabled: true},
			{ID: "pinger", Mode: clients.ModePing, NotificationEndpoint: "https://cd.example.com/cb", SecretHashes: [][32]byte{clients.HashSecret("pinger-secret")}},
			{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{clients.HashSecret("narrow-secret")}},
		},
		Users:          dir,
		Backend:        b.backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{{Name: "test", ACR: testACR, Fallback: true, Authenticator: h.auth}},
		Minter:         h.minter,
		SealKey:        testSealKey,
		Logger:         b.log,
		Now:            b.clock.Now,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.srv, err = New(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.srv.Close)
	return h
}

var harnessSecrets = map[string]string{
	"cc": "cc-secret", "other": "other-secret", "off": "off-secret",
	"pinger": "pinger-secret", "narrow": "narrow-secret",
}

// post sends a form to path as client (Basic auth; "" for none).
func (h *harness) post(path, client string, form url.Values) *httptest.ResponseRecorder {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodPost, testPublic+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if client != "" {
		req.SetBasicAuth(client, harnessSecrets[client])
	}
	return h.serve(req)
}

// serve serves req; an answer of -1 means the request was left to the
// next handler.
func (h *harness) serve(req *http.Request) *httptest.ResponseRecorder {
	h.t.Helper()
	rec := httptest.NewRecorder()
	if !h.srv.Handle(rec, req) {
		rec.Code = -1 // not handled: would go to the next handler
	}
	return rec
}

// hForm is a backchannel request's form: scope "openid email", login_hint
// alice, changed by the name/value pairs kv (an empty value removes one).
func hForm(kv ...string) url.Values {
	f := url.Values{"scope": {"openid email"}, "login_hint": {"alice"}}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			f.Del(kv[i])
			continue
		}
		f.Set(kv[i], kv[i+1])
	}
	return f
}

// authorize makes a successful backchannel request and returns its id.
func (h *harness) authorize(client string, kv ...string) string {
	h.t.Helper()
	return cibatest.AuthReqID(h.t, h.post(DefaultEndpoint, client, hForm(kv...)))
}

// poll makes a CIBA token request of client for id.
func (h *harness) poll(client, id string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.post(testTokenURL, client, url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
}

type oauthErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// approve records the user's approval of id.
func (h *harness) approve(id string) {
	h.t.Helper()
	if _, err := h.srv.Decide(context.Background(), store.KeyOf(id), authn.Approve); err != nil {
		h.t.Fatal(err)
	}
}

// records counts the stored requests: the Badger engine keeps each under
// 'r' and its 32-byte key.
func (h *harness) records() int {
	h.t.Helper()
	n := 0
	err := h.badger.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'r'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if len(it.Item().Key()) == 1+len(store.RequestKey{}) {
				n++
			}
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// get returns the stored request of id.
func (h *harness) get(id string) *store.AuthRequest {
	h.t.Helper()
	r, err := h.store.Get(context.Background(), store.KeyOf(id))
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// outboxItems returns the items queued in the store.
func outboxItems(t testing.TB, st store.Queue) []*store.OutboxItem {
	t.Helper()
	var items []*store.OutboxItem
	if err := st.ScanOutbox(context.Background(), func(it *store.OutboxItem) bool {
		items = append(items, it)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return items
}

// storeHolds reports whether needle occurs in any key or value (any
// version) of the Badger store.
func storeHolds(t testing.TB, st *badgerstore.Store, needle []byte) bool {
	t.Helper()
	found := false
	err := st.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if bytes.Contains(item.Key(), needle) {
				found = true
			}
			if err := item.Value(func(v []byte) error {
				if bytes.Contains(v, needle) {
					found = true
				}
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// runKilled runs the test binary's test named helper as a child process,
// with env added to its environment; it hands each line of the child's
// standard output, split into fields, to line until line reports it has
// what it waited for (or a minute passes), then kills the child with
// SIGKILL.
func runKilled(t *testing.T, helper string, env []string, line func(fields []string) (done bool)) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if line(strings.Fields(sc.Text())) {
			break
		}
	}
	deadline.Stop()
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// TestHarness checks the harness itself: a request is stored, reaches the
// test authenticator under the fallback acr, and is answered pending.
func TestHarness(t *testing.T) {
	h := newHarness(t)
	id := h.authorize("cc")
	if n := h.records(); n != 1 {
		t.Fatalf("%d records", n)
	}
	if len(h.auth.keys) != 1 || h.auth.keys[0] != store.KeyOf(id) {
		t.Fatalf("authenticator asked for %v", h.auth.keys)
	}
	if r := h.get(id); r.ACR != testACR || r.Status != store.StatusPending {
		t.Errorf("stored %+v", r)
	}
	cibatest.WantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
}
