package cibaproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// The HTTP fuzz target: whole requests through the Server's Handle, on a
// Badger store on disk, the real e-mail link authenticator mailing an SMTP
// sink of the test kit, the subject-token issuer, and a fake upstream OP
// serving discovery. Each input picks an endpoint, a method, the
// Content-Type and Authorization headers, a query (or the rest of an
// approval path) and a body. In a body, {id} stands for the auth_req_id of
// a pending request made by the site, and {csrf} for the CSRF field of its
// approval form, so that seeds (and what the fuzzer derives from them) can
// reach the success paths.

// fzsEndpoints are the paths an input picks from; fzsLink and fzsPage are
// the approval link of the site's pending request and an approval path
// ending in the input's suffix.
const (
	fzsBackchannel = iota
	fzsToken
	fzsLink
	fzsPage
	fzsDiscovery
	fzsJWKS
	fzsHealth
	fzsIssuerDiscovery
	fzsEndpointCount
)

var fzsMethods = []string{
	http.MethodPost, http.MethodGet, http.MethodHead, http.MethodPut,
	http.MethodDelete, http.MethodOptions, http.MethodPatch,
}

// fzsSite is the site the fuzz target sends its inputs to, with its pending
// request: id, approval link path, and the CSRF cookie and field of its
// approval form.
type fzsSite struct {
	srv     *Server
	st      *siteBackend
	sink    *cibatest.SMTPSink
	made    int
	id      string
	link    string
	cookie  *http.Cookie
	csrf    string
	setting []string
}

func newFzsSite(tb testing.TB) *fzsSite {
	tb.Helper()
	clock := cibatest.NewLiveClock()
	b := newSiteBackend(tb, tb.TempDir(), clock, nil)
	sink := cibatest.StartSMTP(tb, "127.0.0.1:0")
	op := cibatest.StartOP(tb, testIssuer)
	ctx := context.Background()
	disc, err := upstream.NewDiscovery(testIssuer, op.URL(), nil, clock.Now)
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := issuer.New(ctx, issuer.Config{PublicURL: testPublic, Store: b.store, Now: clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	m := metrics.New()
	auth, err := email.New(ctx, email.Config{
		PublicURL:  testPublic,
		SMTP:       mail.Config{Addr: sink.Addr(), TLS: mail.TLSNone, From: "Example Login <login@example.com>", Timeout: 10 * time.Second},
		Store:      b.store,
		ClientName: func(id string) string { return id },
		Metrics:    m,
		Now:        clock.Now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(Config{
		Issuer:    testIssuer,
		PublicURL: testPublic,
		TokenPath: testTokenURL,
		Clients: []*clients.Client{
			{ID: "cc", SecretHashes: [][32]byte{clients.HashSecret("cc-secret")}},
			{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{clients.HashSecret("narrow-secret")}},
		},
		Users:          dir,
		Backend:        b.backend,
		Discovery:      disc,
		Authenticators: []*authn.Entry{auth.Entry()},
		Minter:         &testMinter{},
		SubjectIssuer:  iss,
		Metrics:        m,
		Now:            clock.Now,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	s := &fzsSite{srv: srv, st: b, sink: sink,
		// The settings the site keeps: the approval pages' secret, the
		// token path learned from the upstream, the issuer's keys.
		setting: []string{"page_secret", settingTokenPath, "signing_keys"}}
	if !s.refresh(tb) {
		tb.Fatal("the site's first request failed")
	}
	return s
}

// quiesce waits for the outbox to empty: every mail queued so far is then
// in the sink.
func (s *fzsSite) quiesce(tb testing.TB) {
	tb.Helper()
	cibatest.WaitFor(tb, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(tb, s.st.store)) == 0 })
}

// refresh makes a new pending request for bob, waits for its mail and opens
// its approval form; it reports false, keeping the request it had, when
// the request was refused (the fuzzer's own requests for bob can reach his
// limit).
func (s *fzsSite) refresh(tb testing.TB) bool {
	tb.Helper()
	s.quiesce(tb)
	n := len(s.sink.Received())
	s.made++
	req := fzsRequest(http.MethodPost, DefaultEndpoint, "", "application/x-www-form-urlencoded", "cc:cc-secret",
		[]byte(url.Values{"scope": {"openid"}, "login_hint": {"bob"}, "binding_message": {fmt.Sprintf("setup %d", s.made)}}.Encode()))
	rec := httptest.NewRecorder()
	s.srv.Handle(rec, req)
	if rec.Code != http.StatusOK {
		return false
	}
	id := cibatest.AuthReqID(tb, rec)
	pm := cibatest.ParseMail(tb, s.sink.Wait(tb, n+1, 10*time.Second)[n].Data)
	u, err := url.Parse(pm.ApprovalURL())
	if err != nil || !strings.HasPrefix(u.Path, email.ApprovePath) {
		tb.Fatalf("approval link %q", pm.ApprovalURL())
	}
	rec = httptest.NewRecorder()
	s.srv.Handle(rec, fzsRequest(http.MethodGet, u.Path, "", "", "", nil))
	field := mailCSRFField.FindStringSubmatch(rec.Body.String())
	if rec.Code != http.StatusOK || field == nil {
		tb.Fatalf("GET %s: %d\n%s", u.Path, rec.Code, rec.Body)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == mailCSRFCookie {
			s.cookie = &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	s.id, s.link, s.csrf = id, u.Path, html.UnescapeString(field[1])
	s.quiesce(tb)
	return true
}

// open reports whether the site's request can still be approved or
// redeemed: it is pending or approved, and not expired.
func (s *fzsSite) open(tb testing.TB) bool {
	tb.Helper()
	r, err := s.st.store.Get(context.Background(), store.KeyOf(s.id))
	if err != nil {
		tb.Fatal(err)
	}
	return (r.Status == store.StatusPending || r.Status == store.StatusApproved) && !r.Expired(s.st.clock.Now())
}

// fzsRequest builds a request to path with the query, Content-Type and
// Authorization given: auth with a colon is a user:password for Basic
// authentication, anything else the header's value.
func fzsRequest(method, path, query, ctype, auth string, body []byte) *http.Request {
	req := httptest.NewRequest(method, testPublic+"/", bytes.NewReader(body))
	req.URL.Path, req.URL.RawQuery = path, query
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if strings.Contains(auth, ":") {
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(auth)))
	} else if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return req
}

// fzsState is what a request can change in the store and the sink.
type fzsState struct {
	requests map[store.RequestKey]store.Status
	outbox   map[store.Kind]int
	mails    int
	settings map[string]string
}

func (s *fzsSite) state(tb testing.TB) fzsState {
	tb.Helper()
	ctx := context.Background()
	st := fzsState{requests: map[store.RequestKey]store.Status{}, settings: map[string]string{}, mails: len(s.sink.Received())}
	var keys []store.RequestKey
	err := s.st.badger.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'r'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) == 1+len(store.RequestKey{}) {
				keys = append(keys, store.RequestKey(k[1:]))
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	for _, k := range keys {
		r, err := s.st.store.Get(ctx, k)
		if err != nil {
			tb.Fatal(err)
		}
		st.requests[k] = r.Status
	}
	if st.outbox, err = s.st.store.OutboxCounts(ctx); err != nil {
		tb.Fatal(err)
	}
	for _, name := range s.setting {
		v, err := s.st.store.Setting(ctx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			tb.Fatal(err)
		}
		st.settings[name] = string(v)
	}
	return st
}

func (a fzsState) equal(b fzsState) bool {
	return maps.Equal(a.requests, b.requests) && maps.Equal(a.outbox, b.outbox) &&
		a.mails == b.mails && maps.Equal(a.settings, b.settings)
}

func (a fzsState) String() string {
	pending := 0
	for _, st := range a.requests {
		if st == store.StatusPending {
			pending++
		}
	}
	return fmt.Sprintf("%d requests (%d pending), outbox %v, %d mails, %d settings", len(a.requests), pending, a.outbox, a.mails, len(a.settings))
}

const fzsForm = "application/x-www-form-urlencoded"

// fzsSeed is one input of FuzzServer.
type fzsSeed struct {
	ep     int
	method string
	ctype  string
	auth   string
	cookie bool
	suffix string
	body   string
}

var fzsSeeds = []fzsSeed{
	{fzsBackchannel, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "scope=openid&login_hint=alice"},
	{fzsBackchannel, http.MethodPost, fzsForm + "; charset=utf-8", "cc:cc-secret", false, "", "scope=openid+email&login_hint=alice%40example.com&binding_message=W4SCT&requested_expiry=120&acr_values=urn%3Ax+urn%3Acibaproxy%3Aacr%3Aemail-link"},
	{fzsBackchannel, http.MethodPost, fzsForm, "", false, "", "scope=openid&login_hint=alice&client_id=cc&client_secret=cc-secret"},
	{fzsBackchannel, http.MethodPost, fzsForm, "narrow:narrow-secret", false, "", "scope=openid+email&login_hint=bob"},
	{fzsBackchannel, http.MethodPost, fzsForm, "cc:wrong", false, "", "scope=openid&login_hint=alice"},
	{fzsBackchannel, http.MethodPost, "application/json", "cc:cc-secret", false, "", `{"scope":"openid","login_hint":"alice"}`},
	{fzsBackchannel, http.MethodGet, "", "cc:cc-secret", false, "scope=openid&login_hint=alice", ""},
	{fzsBackchannel, http.MethodPost, fzsForm, "Bearer x", false, "", "scope=openid&login_hint=nobody"},
	{fzsLink, http.MethodGet, "", "", false, "", ""},
	{fzsLink, http.MethodHead, "", "", true, "csrf={csrf}&decision=approve", ""},
	{fzsLink, http.MethodPost, fzsForm, "", false, "", "csrf={csrf}&decision=approve"},
	{fzsLink, http.MethodPost, fzsForm, "", true, "csrf={csrf}&decision=approve", ""},
	{fzsToken, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "grant_type=urn%3Aopenid%3Aparams%3Agrant-type%3Aciba&auth_req_id={id}"},
	{fzsLink, http.MethodPost, fzsForm, "", true, "", "csrf={csrf}&decision=approve"},
	{fzsToken, http.MethodPost, fzsForm, "", false, "", "grant_type=urn:openid:params:grant-type:ciba&auth_req_id={id}&client_id=cc&client_secret=cc-secret"},
	{fzsToken, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "grant_type=urn:openid:params:grant-type:ciba&auth_req_id={id}"},
	{fzsLink, http.MethodPost, fzsForm, "", true, "", "csrf={csrf}&decision=maybe"},
	{fzsLink, http.MethodPost, fzsForm, "", true, "", "csrf={csrf}&decision=deny"},
	{fzsToken, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "grant_type=urn:openid:params:grant-type:ciba&auth_req_id={id}"},
	{fzsToken, http.MethodPost, fzsForm, "narrow:narrow-secret", false, "", "grant_type=urn:openid:params:grant-type:ciba&auth_req_id={id}"},
	{fzsToken, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "grant_type=urn:openid:params:grant-type:ciba&auth_req_id={id}&auth_req_id=x"},
	{fzsToken, http.MethodPost, fzsForm, "cc:cc-secret", false, "", "grant_type=authorization_code&code=x"},
	{fzsPage, http.MethodGet, "", "", false, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ""},
	{fzsPage, http.MethodPost, fzsForm, "", true, "x/../..", "csrf={csrf}&decision=approve"},
	{fzsDiscovery, http.MethodGet, "", "", false, "", ""},
	{fzsJWKS, http.MethodGet, "", "", false, "", ""},
	{fzsHealth, http.MethodGet, "", "", false, "", ""},
	{fzsHealth, http.MethodPost, fzsForm, "", false, "", "x=y"},
	{fzsIssuerDiscovery, http.MethodGet, "", "", false, "", ""},
}

// FuzzServer: no request, however malformed, gets a 5xx or a panic; an
// error of the backchannel or token endpoint is a JSON body with a known
// RFC 6749 error code; and nothing but a successful backchannel request,
// poll or approval form changes the store or sends mail.
func FuzzServer(f *testing.F) {
	for _, sd := range fzsSeeds {
		m := 0
		for i, x := range fzsMethods {
			if x == sd.method {
				m = i
			}
		}
		f.Add(uint8(sd.ep), uint8(m), sd.ctype, sd.auth, sd.cookie, sd.suffix, []byte(sd.body))
	}
	s := newFzsSite(f)
	f.Fuzz(func(t *testing.T, ep, m uint8, ctype, auth string, cookie bool, suffix string, body []byte) {
		if !s.open(t) {
			s.refresh(t)
		}
		// Each request comes one poll interval after the one before it.
		s.st.clock.Advance(DefaultInterval)
		s.quiesce(t)
		method := fzsMethods[int(m)%len(fzsMethods)]
		body = bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("{id}"), []byte(s.id)), []byte("{csrf}"), []byte(s.csrf))
		path, query := fzsPath(s, int(ep)%fzsEndpointCount, suffix)
		req := fzsRequest(method, path, query, ctype, auth, body)
		if cookie && s.cookie != nil {
			req.AddCookie(s.cookie)
		}
		before := s.state(t)
		rec := httptest.NewRecorder()
		handled := s.srv.Handle(rec, req)
		in := fmt.Sprintf("%s %s?%s (Content-Type %q, Authorization %q) %q", method, path, query, ctype, auth, body)
		t.Logf("%s: handled %v, %d", in, handled, rec.Code)
		if handled {
			fzsCheckAnswer(t, in, int(ep)%fzsEndpointCount, rec)
		}
		changes := handled && rec.Code == http.StatusOK && method == http.MethodPost &&
			(path == DefaultEndpoint || path == testTokenURL || path == s.link)
		if changes {
			return
		}
		s.quiesce(t)
		if after := s.state(t); !after.equal(before) {
			t.Fatalf("%s: answered %d (handled %v), and the state changed from %v to %v\n%s", in, rec.Code, handled, before, after, rec.Body)
		}
	})
}

// fzsPath returns the path and query of endpoint ep for suffix: the rest
// of the path on the fuzzed approval page, the query elsewhere.
func fzsPath(s *fzsSite, ep int, suffix string) (string, string) {
	switch ep {
	case fzsBackchannel:
		return DefaultEndpoint, suffix
	case fzsToken:
		return testTokenURL, suffix
	case fzsLink:
		return s.link, suffix
	case fzsPage:
		return email.ApprovePath + suffix, ""
	case fzsDiscovery:
		return s.srv.wellKnown, suffix
	case fzsJWKS:
		return issuer.Path + "/jwks", suffix
	case fzsHealth:
		return HealthPath, suffix
	}
	return issuer.Path + "/.well-known/openid-configuration", suffix
}

// fzsCheckAnswer checks an answer of the Server: never a 5xx, and on the
// backchannel and token endpoints a 4xx is an RFC 6749 error body.
func fzsCheckAnswer(t *testing.T, in string, ep int, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s: answered %d\n%s", in, rec.Code, rec.Body)
	}
	if rec.Code < 400 || (ep != fzsBackchannel && ep != fzsToken) {
		return
	}
	if mt, _, _ := mime.ParseMediaType(rec.Header().Get("Content-Type")); mt != "application/json" {
		t.Fatalf("%s: error %d with Content-Type %q\n%s", in, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var e oauthErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !fuzzKnownCodes[e.Error] {
		t.Fatalf("%s: error %d with body %q (%v), not an RFC 6749 error of a known code", in, rec.Code, rec.Body, err)
	}
}
