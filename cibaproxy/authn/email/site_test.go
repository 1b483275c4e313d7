package email_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// The site of the flow tests: a Server (package cibaproxy) whose only
// authenticator is the e-mail link, on a Badger store on disk, mailing
// through a real SMTP server of the test kit; the approval pages are
// reached through the Server's Handle, as Caddy would.

const (
	testPublic   = "https://idp.example.com"
	testIssuer   = testPublic + "/realms/main"
	testTokenURL = "/realms/main/protocol/openid-connect/token"
	testUsers    = `{"users":[
		{"username":"alice","email":"Alice@Example.com","name":"Alice Example"},
		{"username":"bob","email":"bob@example.com","subject":"u-bob"}]}`
)

// testSealKey seals the ping notifications of the site (its client pinger
// uses ping mode).
var testSealKey = []byte("0123456789abcdef0123456789abcdef")

// mailClock is the clock of a backend: cibatest.LiveClock (real time, the
// outbox's timers and backoff as in production) or cibatest.Clock (fixed:
// a retry is due only when the test advances it).
type mailClock interface {
	Now() time.Time
	Advance(d time.Duration)
}

// mailBackend is a Backend on Badger in a directory, with a clock and an
// observed logger.
type mailBackend struct {
	*cibaproxy.Backend
	store *badgerstore.Store
	clock mailClock
	logs  *observer.ObservedLogs
	log   *zap.Logger
}

// newMailBackend opens the store in dir on clock (nil: a live clock).
func newMailBackend(t testing.TB, dir string, clock mailClock) *mailBackend {
	t.Helper()
	if clock == nil {
		clock = cibatest.NewLiveClock()
	}
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	st, err := badgerstore.Open(dir, logger, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := cibaproxy.NewBackend(st, logger, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	return &mailBackend{Backend: b, store: st, clock: clock, logs: logs, log: logger}
}

// settle waits for the outbox to empty and stops its worker, which waits
// for the deliveries in flight: what the mail servers received is then
// final, no attempt being left to come.
func (mb *mailBackend) settle(t *testing.T) {
	t.Helper()
	waitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, mb.store)) == 0 })
	mb.Outbox.Close()
}

// siteOptions configure one site (one handler configuration) on a backend.
type siteOptions struct {
	smtpAddr   string
	senderName string
	subject    string
	match      bool
	templates  string
}

// mailSite is a Server whose authenticator is a real email.Authenticator;
// the Server registers its deliverer with the backend's outbox, as it
// does for the Caddy module.
type mailSite struct {
	t      *testing.T
	srv    *cibaproxy.Server
	mb     *mailBackend
	store  *badgerstore.Store
	clock  mailClock
	auth   *email.Authenticator
	minter *mailMinter
}

func testClients() []*clients.Client {
	return []*clients.Client{
		{ID: "cc", Name: "Call Centre", SecretHashes: [][32]byte{clients.HashSecret("cc-secret"), clients.HashSecret("cc-new")}},
		{ID: "other", SecretHashes: [][32]byte{clients.HashSecret("other-secret")}},
		{ID: "off", SecretHashes: [][32]byte{clients.HashSecret("off-secret")}, Disabled: true},
		{ID: "pinger", Mode: clients.ModePing, NotificationEndpoint: "https://cd.example.com/cb", SecretHashes: [][32]byte{clients.HashSecret("pinger-secret")}},
		{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{clients.HashSecret("narrow-secret")}},
	}
}

var clientSecrets = map[string]string{
	"cc": "cc-secret", "other": "other-secret", "off": "off-secret",
	"pinger": "pinger-secret", "narrow": "narrow-secret",
}

// newMailSite builds a site on mb; t.Cleanup closes it (before the
// backend).
func newMailSite(t *testing.T, mb *mailBackend, o siteOptions) *mailSite {
	t.Helper()
	ctx := context.Background()
	cls := testClients()
	names := make(map[string]string)
	for _, c := range cls {
		names[c.ID] = c.DisplayName()
	}
	auth, err := email.New(ctx, email.Config{
		PublicURL:           testPublic,
		SMTP:                mail.Config{Addr: o.smtpAddr, TLS: mail.TLSNone, From: "Example Login <login@example.com>", Timeout: 3 * time.Second},
		SenderName:          o.senderName,
		Subject:             o.subject,
		TemplatesDir:        o.templates,
		MatchBindingMessage: o.match,
		Store:               mb.Store,
		ClientName:          func(id string) string { return names[id] },
		Logger:              mb.log,
		Now:                 mb.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	op := cibatest.StartOP(t, testIssuer)
	disc, err := upstream.NewDiscovery(testIssuer, op.URL(), nil, mb.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	s := &mailSite{t: t, mb: mb, store: mb.store, clock: mb.clock, auth: auth, minter: &mailMinter{}}
	s.srv, err = cibaproxy.New(cibaproxy.Config{
		Issuer:         testIssuer,
		PublicURL:      testPublic,
		TokenPath:      testTokenURL,
		Clients:        cls,
		Users:          dir,
		Backend:        mb.Backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{auth.Entry()},
		Minter:         s.minter,
		SealKey:        testSealKey,
		Logger:         mb.log,
		Now:            mb.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.srv.Close)
	return s
}

// newMailTest is one site on a fresh backend (live clock), mailing to sink.
func newMailTest(t *testing.T, sink *cibatest.SMTPSink, o siteOptions) *mailSite {
	t.Helper()
	o.smtpAddr = sink.Addr()
	return newMailSite(t, newMailBackend(t, t.TempDir(), nil), o)
}

// mailMinter mints recognisable tokens and counts its calls.
type mailMinter struct {
	mu    sync.Mutex
	calls int
}

func (m *mailMinter) Mint(_ context.Context, g *upstream.Grant) (*upstream.Tokens, error) {
	m.mu.Lock()
	m.calls++
	n := m.calls
	m.mu.Unlock()
	return &upstream.Tokens{
		AccessToken: fmt.Sprintf("at-%s-%d", g.User.Username, n),
		TokenType:   "Bearer",
		ExpiresIn:   300,
		IDToken:     fmt.Sprintf("idt-%s-%d", g.User.Username, n),
		Scope:       strings.Join(g.Scopes, " "),
	}, nil
}

func (m *mailMinter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// tokenResponse is the token endpoint's answer.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	IDToken     string `json:"id_token"`
}

// post sends a form to path as client (Basic auth; "" for none).
func (s *mailSite) post(path, client string, form url.Values) *httptest.ResponseRecorder {
	s.t.Helper()
	req := httptest.NewRequest(http.MethodPost, testPublic+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if client != "" {
		req.SetBasicAuth(client, clientSecrets[client])
	}
	return s.serve(req)
}

// serve serves req; an answer of -1 means the request was left to the
// next handler.
func (s *mailSite) serve(req *http.Request) *httptest.ResponseRecorder {
	s.t.Helper()
	rec := httptest.NewRecorder()
	if !s.srv.Handle(rec, req) {
		rec.Code = -1
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

// authReqID returns the auth_req_id of a successful backchannel answer.
func authReqID(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel request: %d %s", rec.Code, rec.Body)
	}
	var resp struct {
		AuthReqID string `json:"auth_req_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.AuthReqID == "" {
		t.Fatalf("backchannel answer %s: %v", rec.Body, err)
	}
	return resp.AuthReqID
}

// authorize makes a successful backchannel request and returns its id.
func (s *mailSite) authorize(client string, kv ...string) string {
	s.t.Helper()
	return authReqID(s.t, s.post(cibaproxy.DefaultEndpoint, client, hForm(kv...)))
}

// poll makes a CIBA token request of client for id.
func (s *mailSite) poll(client, id string) *httptest.ResponseRecorder {
	s.t.Helper()
	return s.post(testTokenURL, client, url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
}

// get returns the stored request of id.
func (s *mailSite) get(id string) *store.AuthRequest {
	s.t.Helper()
	r, err := s.store.Get(context.Background(), store.KeyOf(id))
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// records counts the stored requests: the Badger engine keeps each under
// 'r' and its 32-byte key.
func (s *mailSite) records() int {
	s.t.Helper()
	n := 0
	err := s.store.DB().View(func(txn *badger.Txn) error {
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
		s.t.Fatal(err)
	}
	return n
}

// requestMail makes a backchannel request as cc and returns its id, the
// mail it caused and the approval link (the first URL of the text part).
func (s *mailSite) requestMail(sink *cibatest.SMTPSink, kv ...string) (string, *cibatest.ParsedMail, string) {
	s.t.Helper()
	n := len(sink.Received())
	id := s.authorize("cc", kv...)
	mails := sink.Wait(s.t, n+1, 10*time.Second)
	pm := cibatest.ParseMail(s.t, mails[n].Data)
	link := cibatest.FirstURL(pm.Text)
	if !strings.HasPrefix(link, testPublic+email.ApprovePath) {
		s.t.Fatalf("first URL of the text part is %q, not an approval link", link)
	}
	return id, pm, link
}

// page sends method to link with an optional cookie and form.
func (s *mailSite) page(method, link string, cookie *http.Cookie, form url.Values) *httptest.ResponseRecorder {
	s.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, link, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	return s.serve(req)
}

var csrfField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]+)">`)

// openForm GETs the approval page and returns its CSRF cookie, the CSRF
// form field and the page.
func (s *mailSite) openForm(link string) (*http.Cookie, string, string) {
	s.t.Helper()
	rec := s.page(http.MethodGet, link, nil, nil)
	if rec.Code != http.StatusOK {
		s.t.Fatalf("GET %s: %d\n%s", link, rec.Code, rec.Body)
	}
	var cookie *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == email.CSRFCookieName {
			cookie = c
		}
	}
	if cookie == nil {
		s.t.Fatal("the approval page set no CSRF cookie")
	}
	m := csrfField.FindStringSubmatch(rec.Body.String())
	if m == nil {
		s.t.Fatalf("the approval page has no CSRF field:\n%s", rec.Body)
	}
	return &http.Cookie{Name: cookie.Name, Value: cookie.Value}, html.UnescapeString(m[1]), rec.Body.String()
}

func (s *mailSite) wantStatus(id string, want store.Status) {
	s.t.Helper()
	if got := s.get(id).Status; got != want {
		s.t.Fatalf("request status = %v, want %v", got, want)
	}
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

// wantOutcome checks a result page: its status, its outcome and its
// headers.
func wantOutcome(t *testing.T, rec *httptest.ResponseRecorder, status int, outcome string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d\n%s", rec.Code, status, rec.Body)
	}
	if want := `data-outcome="` + outcome + `"`; !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("page lacks %s:\n%s", want, rec.Body)
	}
	wantPageHeaders(t, rec)
}

// wantPageHeaders checks the security headers every page carries, exactly.
func wantPageHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"Content-Type":            "text/html; charset=utf-8",
	}
	for k, v := range want {
		if got := rec.Header().Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// outboxItems returns the queued items.
func outboxItems(t *testing.T, st store.Store) []*store.OutboxItem {
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

// waitFor polls cond every 10 ms for at most timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// storeHolds reports whether needle occurs in any key or value (any
// version) of the Badger store.
func storeHolds(t *testing.T, st *badgerstore.Store, needle []byte) bool {
	t.Helper()
	found := false
	err := st.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, PrefetchValues: false})
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

// tokenOf returns the token of an approval link, checking its shape.
func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(u.Path, email.ApprovePath)
	if !email.ValidLinkToken(tok) {
		t.Fatalf("link token %q is not 256 bits of base64url", tok)
	}
	return tok
}
