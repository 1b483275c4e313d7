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
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

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
// and an authenticator written for the tests.

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

type harness struct {
	t        *testing.T
	srv      *Server
	cfg      Config
	store    *badgerstore.Store
	backend  *Backend
	clock    *cibatest.Clock
	minter   *testMinter
	auth     *testAuthenticator
	upstream *cibatest.FakeOP
	dir      string
}

type harnessOption func(*Config)

// newHarness builds a Server on a Badger store in a fresh directory, with
// clients cc (poll), other (poll), off (disabled), pinger (ping) and
// narrow (scope openid only).
func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	return newHarnessIn(t, t.TempDir(), opts...)
}

// newHarnessIn is newHarness on the store in dir.
func newHarnessIn(t *testing.T, dir string, opts ...harnessOption) *harness {
	t.Helper()
	h := &harness{t: t, clock: cibatest.NewClock(time.Time{}), minter: &testMinter{}, auth: &testAuthenticator{}, dir: dir}
	st, err := badgerstore.Open(dir, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	h.store = st
	h.backend = NewBackend(st, nil, h.clock.Now)
	t.Cleanup(func() { _ = h.backend.Close() })
	h.upstream = cibatest.StartOP(t, testIssuer)
	disc, err := upstream.NewDiscovery(testIssuer, h.upstream.URL(), nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir2, err := users.ParseUsers([]byte(testUsers))
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
		Users:          dir2,
		Backend:        h.backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{{Name: "test", ACR: testACR, Fallback: true, Authenticator: h.auth}},
		Minter:         h.minter,
		SealKey:        testSealKey,
		Now:            h.clock.Now,
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

// poll makes a CIBA token request of client for id.
func (h *harness) poll(client, id string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.post(testTokenURL, client, url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
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
	err := h.store.DB().View(func(txn *badger.Txn) error {
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

// waitFor waits up to timeout for cond, failing the test with what.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
	wantOAuthError(t, h.poll("cc", id), http.StatusBadRequest, oauth.CodeAuthorizationPending)
}
