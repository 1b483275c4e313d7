package cibaproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// hClock is an injected clock tests advance by hand.
type hClock struct {
	mu sync.Mutex
	t  time.Time
}

func newHClock() *hClock {
	return &hClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *hClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *hClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testMinter is a Minter written for the tests: it returns recognisable
// tokens, or the error set in fail.
type testMinter struct {
	mu     sync.Mutex
	calls  int
	grants []*Grant
	fail   error
	delay  time.Duration
	hook   func() // run during Mint, after the delay
}

func (m *testMinter) Mint(ctx context.Context, g *Grant) (*Tokens, error) {
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
	return &Tokens{
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

// testAuthenticator records the requests it was asked to reach, with one
// approval link each.
type testAuthenticator struct {
	mu    sync.Mutex
	keys  []RequestKey
	links []LinkKey
	fail  error
}

func (a *testAuthenticator) Start(_ context.Context, key RequestKey, req *AuthRequest) (*Outbound, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return nil, a.fail
	}
	link := LinkKeyOf(fmt.Sprintf("link-%d", len(a.links)))
	a.keys = append(a.keys, key)
	a.links = append(a.links, link)
	return &Outbound{Links: []LinkKey{link}}, nil
}

// fakeUpstream serves the upstream's discovery document.
type fakeUpstream struct {
	srv     *httptest.Server
	issuer  string
	fetches atomic.Int32
	down    atomic.Bool
	doc     map[string]any
	mu      sync.Mutex
	hosts   []string
	proto   []string
}

func newFakeUpstream(t *testing.T, issuer string) *fakeUpstream {
	u := &fakeUpstream{issuer: issuer}
	u.doc = map[string]any{
		"issuer":                                issuer,
		"token_endpoint":                        issuer + "/protocol/openid-connect/token",
		"jwks_uri":                              issuer + "/protocol/openid-connect/certs",
		"authorization_endpoint":                issuer + "/protocol/openid-connect/auth",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	iss, _ := url.Parse(issuer)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != iss.Path+"/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		u.fetches.Add(1)
		u.mu.Lock()
		u.hosts = append(u.hosts, r.Host)
		u.proto = append(u.proto, r.Header.Get("X-Forwarded-Proto"))
		doc := u.doc
		u.mu.Unlock()
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

const (
	testPublic   = "https://idp.example.com"
	testIssuer   = testPublic + "/realms/main"
	testTokenURL = "/realms/main/protocol/openid-connect/token"
	testUsers    = `{"users":[
		{"username":"alice","email":"Alice@Example.com","name":"Alice Example"},
		{"username":"bob","email":"bob@example.com","subject":"u-bob"}]}`
)

type harness struct {
	t        *testing.T
	srv      *Server
	cfg      Config
	store    *BadgerStore
	backend  *Backend
	clock    *hClock
	minter   *testMinter
	auth     *testAuthenticator
	upstream *fakeUpstream
	dir      string
}

type harnessOption func(*Config)

// newHarness builds a Server on a Badger store in a fresh directory, with
// clients cc (poll), other (poll), off (disabled) and pinger (ping).
func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	dir := t.TempDir()
	return newHarnessIn(t, dir, opts...)
}

func newHarnessIn(t *testing.T, dir string, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, clock: newHClock(), minter: &testMinter{}, auth: &testAuthenticator{}, dir: dir}
	st, err := OpenBadger(dir, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	h.store = st
	h.backend = NewBackend(st, nil, h.clock.Now)
	t.Cleanup(func() { _ = h.backend.Close() })
	h.upstream = newFakeUpstream(t, testIssuer)
	disc, err := NewDiscovery(testIssuer, h.upstream.srv.URL, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	users, err := ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = Config{
		Issuer:    testIssuer,
		PublicURL: testPublic,
		TokenPath: testTokenURL,
		Clients: []*Client{
			{ID: "cc", Name: "Call Centre", SecretHashes: [][32]byte{HashSecret("cc-secret"), HashSecret("cc-new")}},
			{ID: "other", SecretHashes: [][32]byte{HashSecret("other-secret")}},
			{ID: "off", SecretHashes: [][32]byte{HashSecret("off-secret")}, Disabled: true},
			{ID: "pinger", Mode: ModePing, NotificationEndpoint: "https://cd.example.com/cb", SecretHashes: [][32]byte{HashSecret("pinger-secret")}},
			{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{HashSecret("narrow-secret")}},
		},
		Users:         users,
		Backend:       h.backend,
		Discovery:     disc,
		Authenticator: h.auth,
		Minter:        h.minter,
		Now:           h.clock.Now,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.srv, err = New(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
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

func (h *harness) serve(req *http.Request) *httptest.ResponseRecorder {
	h.t.Helper()
	rec := httptest.NewRecorder()
	if !h.srv.Handle(rec, req) {
		rec.Code = -1 // not handled: would go to the next handler
	}
	return rec
}

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
	rec := h.post(DefaultEndpoint, client, hForm(kv...))
	if rec.Code != http.StatusOK {
		h.t.Fatalf("backchannel request: %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		h.t.Fatal(err)
	}
	return resp.AuthReqID
}

func (h *harness) poll(client, id string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.post(testTokenURL, client, url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {id}})
}

type oauthErrorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// wantOAuthError checks an OAuth error answer.
func wantOAuthError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var e oauthErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q is not JSON: %v", rec.Body, err)
	}
	if e.Error != code {
		t.Fatalf("error = %q (%s), want %q", e.Error, e.Description, code)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
}

func (h *harness) approve(id string) {
	h.t.Helper()
	if _, err := h.srv.Decide(context.Background(), KeyOf(id), Approve); err != nil {
		h.t.Fatal(err)
	}
}

// records counts the stored requests.
func (h *harness) records() int {
	h.t.Helper()
	n := 0
	err := h.store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindRequest}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) get(id string) *AuthRequest {
	h.t.Helper()
	r, err := h.store.Get(context.Background(), KeyOf(id))
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}
