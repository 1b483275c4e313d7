package cibaproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// liveClock is real time plus an offset the tests advance: the outbox's
// real timers and backoff work as in production, and a request can still
// be made to expire at once.
type liveClock struct{ off atomic.Int64 }

func (c *liveClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *liveClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// mailBackend is a Backend on Badger in a directory, with a live clock and
// an observed logger.
type mailBackend struct {
	*Backend
	store *BadgerStore
	clock *liveClock
	logs  *observer.ObservedLogs
	log   *zap.Logger
}

func newMailBackend(t testing.TB, dir string) *mailBackend {
	t.Helper()
	clock := &liveClock{}
	core, logs := observer.New(zapcore.DebugLevel)
	logger := zap.New(core)
	st, err := OpenBadger(dir, logger, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, logger, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	return &mailBackend{Backend: b, store: st, clock: clock, logs: logs, log: logger}
}

// siteOptions configure one site (one handler configuration) on a backend.
type siteOptions struct {
	smtpAddr   string
	senderName string
	subject    string
	match      bool
	templates  string
}

// mailSite is a Server with a real EmailAuthenticator whose deliverer is
// registered on the backend's outbox, as the Caddy module does in Provision.
type mailSite struct {
	*harness
	mb         *mailBackend
	clock      *liveClock
	auth       *EmailAuthenticator
	unregister func()
}

func testClients() []*Client {
	return []*Client{
		{ID: "cc", Name: "Call Centre", SecretHashes: [][32]byte{HashSecret("cc-secret"), HashSecret("cc-new")}},
		{ID: "other", SecretHashes: [][32]byte{HashSecret("other-secret")}},
		{ID: "off", SecretHashes: [][32]byte{HashSecret("off-secret")}, Disabled: true},
		{ID: "pinger", Mode: ModePing, NotificationEndpoint: "https://cd.example.com/cb", SecretHashes: [][32]byte{HashSecret("pinger-secret")}},
		{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{HashSecret("narrow-secret")}},
	}
}

func newMailSite(t *testing.T, mb *mailBackend, o siteOptions) *mailSite {
	t.Helper()
	ctx := context.Background()
	sender, err := NewSMTPSender(SMTPConfig{
		Addr: o.smtpAddr, TLS: TLSNone, From: "Example Login <login@example.com>", Timeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	clients := testClients()
	names := make(map[string]string)
	for _, c := range clients {
		names[c.ID] = c.DisplayName()
	}
	auth, err := NewEmailAuthenticator(ctx, EmailConfig{
		PublicURL:           testPublic,
		Sender:              sender,
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
	unregister := mb.Outbox.Register(KindMail, auth.SenderName(), auth)
	t.Cleanup(unregister)

	upstream := newFakeUpstream(t, testIssuer)
	disc, err := NewDiscovery(testIssuer, upstream.srv.URL, nil, mb.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	users, err := ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, minter: &testMinter{}, upstream: upstream, store: mb.store, backend: mb.Backend}
	h.cfg = Config{
		Issuer:        testIssuer,
		PublicURL:     testPublic,
		TokenPath:     testTokenURL,
		Clients:       clients,
		Users:         users,
		Backend:       mb.Backend,
		Discovery:     disc,
		Authenticator: auth,
		Minter:        h.minter,
		Logger:        mb.log,
		Now:           mb.clock.Now,
	}
	if h.srv, err = New(h.cfg); err != nil {
		t.Fatal(err)
	}
	return &mailSite{harness: h, mb: mb, clock: mb.clock, auth: auth, unregister: unregister}
}

// newMailTest is one site on a fresh backend, mailing to sink.
func newMailTest(t *testing.T, sink *mailSink, o siteOptions) *mailSite {
	t.Helper()
	o.smtpAddr = sink.addr
	return newMailSite(t, newMailBackend(t, t.TempDir()), o)
}

// requestMail makes a backchannel request as cc and returns its id, the
// mail it caused and the approval link (the first URL of the text part).
func (s *mailSite) requestMail(sink *mailSink, kv ...string) (string, *parsedMail, string) {
	s.t.Helper()
	n := len(sink.received())
	id := s.authorize("cc", kv...)
	mails := sink.wait(s.t, n+1, 10*time.Second)
	pm := parseMail(s.t, mails[n].Data)
	link := firstURL(pm.Text)
	if !strings.HasPrefix(link, testPublic+ApprovePath) {
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
		if c.Name == csrfCookie {
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

func (s *mailSite) wantStatus(id string, want Status) {
	s.t.Helper()
	if got := s.get(id).Status; got != want {
		s.t.Fatalf("request status = %v, want %v", got, want)
	}
}

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

// wantPageHeaders checks the security headers the issue lists, exactly.
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
func outboxItems(t *testing.T, st Store) []*OutboxItem {
	t.Helper()
	var items []*OutboxItem
	if err := st.ScanOutbox(context.Background(), func(it *OutboxItem) bool {
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
func storeHolds(t *testing.T, st *BadgerStore, needle []byte) bool {
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

func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(u.Path, ApprovePath)
	if !validToken(tok) {
		t.Fatalf("link token %q is not 256 bits of base64url", tok)
	}
	return tok
}

var (
	formTag  = regexp.MustCompile(`(?i)<form\b[^>]*>`)
	timeLeft = regexp.MustCompile(`id="time-left">(4 minutes 5\d seconds|5 minutes)<`)
)

// TestEmailApprovalFlow: the mail arrives within a second with the link and
// what the user must see; GET and HEAD change nothing; the POST of the form
// approves and the next poll reaches the minting seam; the link then
// answers 409; the link token is never stored in clear.
func TestEmailApprovalFlow(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{})

	start := time.Now()
	id := s.authorize("cc", "binding_message", "A1-B2")
	mails := sink.wait(t, 1, 5*time.Second)
	if took := mails[0].At.Sub(start); took > time.Second {
		t.Errorf("the mail took %v to arrive, want at most 1 s", took)
	} else {
		t.Logf("the mail arrived %v after the request", took)
	}
	if len(mails[0].To) != 1 || !strings.EqualFold(mails[0].To[0], "alice@example.com") {
		t.Fatalf("envelope recipients %q, want alice's address", mails[0].To)
	}
	if mails[0].From != "login@example.com" {
		t.Errorf("envelope sender %q", mails[0].From)
	}
	pm := parseMail(t, mails[0].Data)
	if pm.ContentType != "multipart/alternative" {
		t.Errorf("Content-Type = %q, want multipart/alternative", pm.ContentType)
	}
	if to, err := pm.Header.AddressList("To"); err != nil || len(to) != 1 || !strings.EqualFold(to[0].Address, "alice@example.com") {
		t.Errorf("To = %v (%v)", to, err)
	}
	if pm.Subject != "Sign-in request from Call Centre" {
		t.Errorf("Subject = %q", pm.Subject)
	}
	link := firstURL(pm.Text)
	if !strings.HasPrefix(link, testPublic+ApprovePath) {
		t.Fatalf("first URL of the text part %q is not the approval link:\n%s", link, pm.Text)
	}
	token := tokenOf(t, link)
	if !strings.Contains(pm.HTML, `href="`+link+`"`) {
		t.Errorf("the HTML part does not link to %s:\n%s", link, pm.HTML)
	}
	req := s.get(id)
	for part, body := range map[string]string{"text": pm.Text, "html": pm.HTML} {
		for _, want := range []string{"Call Centre", "A1-B2", "your identity", "your e-mail address",
			req.Expires.UTC().Format("15:04:05"), "5 minutes"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s part lacks %q:\n%s", part, want, body)
			}
		}
	}

	// GET and HEAD, several times: 200, and nothing changes.
	for i := 0; i < 3; i++ {
		rec := s.page(http.MethodGet, link, nil, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET: %d\n%s", rec.Code, rec.Body)
		}
		wantPageHeaders(t, rec)
		body := rec.Body.String()
		for _, want := range []string{`<html lang="en">`, `<meta name="viewport" content="width=device-width, initial-scale=1">`,
			"Call Centre", "A1-B2", "your identity", "your e-mail address",
			`<button type="submit" name="decision" value="approve"`, `<button type="submit" name="decision" value="deny"`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		if forms := formTag.FindAllString(body, -1); len(forms) != 1 || forms[0] != `<form method="post">` {
			t.Errorf("forms %q, want exactly one <form method=\"post\">", forms)
		}
		if !timeLeft.MatchString(body) {
			t.Errorf("page does not show the time left")
		}
		cookies := rec.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Name != csrfCookie || !cookies[0].HttpOnly || !cookies[0].Secure ||
			cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].Path != ApprovePath+token ||
			cookies[0].MaxAge <= 0 || cookies[0].MaxAge > int(DefaultRequestTTL/time.Second) {
			t.Errorf("CSRF cookie %+v: want one HttpOnly, Secure, SameSite=Strict cookie for the link's path, living as long as the request", cookies)
		}
		head := s.page(http.MethodHead, link, nil, nil)
		if head.Code != http.StatusOK || head.Body.Len() != 0 {
			t.Fatalf("HEAD: %d, %d body bytes", head.Code, head.Body.Len())
		}
		wantPageHeaders(t, head)
	}
	s.wantStatus(id, StatusPending)
	wantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, CodeAuthorizationPending)

	// The stylesheet the page links to is served (CSP style-src 'self').
	if rec := s.page(http.MethodGet, testPublic+stylePath, nil, nil); rec.Code != http.StatusOK ||
		!strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css") || rec.Body.Len() == 0 {
		t.Errorf("stylesheet: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}

	// The POST of the form approves.
	cookie, csrf, _ := s.openForm(link)
	rec := s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}})
	wantOutcome(t, rec, http.StatusOK, "approved")
	s.wantStatus(id, StatusApproved)
	if s.minter.count() != 0 {
		t.Fatal("minted before the poll")
	}
	s.clock.Advance(6 * time.Second) // the polling interval
	poll := s.poll("cc", id)
	if poll.Code != http.StatusOK {
		t.Fatalf("poll after approval: %d %s", poll.Code, poll.Body)
	}
	var tok tokenResponse
	if err := json.Unmarshal(poll.Body.Bytes(), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-alice-1" || tok.IDToken != "idt-alice-1" || s.minter.count() != 1 {
		t.Errorf("tokens %+v after %d mints, want the test minter's", tok, s.minter.count())
	}

	// A replayed link changes nothing: 409 for GET, HEAD and POST.
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if rec := s.page(m, link, nil, nil); rec.Code != http.StatusConflict {
			t.Errorf("%s after the decision: %d, want 409", m, rec.Code)
		} else {
			wantPageHeaders(t, rec)
		}
	}
	for _, d := range []string{"approve", "deny"} {
		rec := s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {d}})
		wantOutcome(t, rec, http.StatusConflict, "decided")
	}
	s.wantStatus(id, StatusConsumed)

	// Only hashes are stored: neither the link token nor the auth_req_id
	// occur in any key or value.
	if storeHolds(t, s.store, []byte(token)) {
		t.Error("the link token is stored in clear")
	}
	if storeHolds(t, s.store, []byte(id)) {
		t.Error("the auth_req_id is stored in clear")
	}
	link2, err := s.store.Link(context.Background(), LinkKeyOf(token))
	if err != nil || link2 != KeyOf(id) {
		t.Errorf("the link's hash does not lead to the request: %v", err)
	}
	// The delivered item leaves the outbox (once the SMTP session ends).
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	if n := len(sink.received()); n != 1 {
		t.Errorf("%d mails sent, want 1", n)
	}
}

// TestEmailDeny: the Deny button gives access_denied, and the link then
// answers 409.
func TestEmailDeny(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{})
	id, _, link := s.requestMail(sink)
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), http.StatusOK, "denied")
	s.wantStatus(id, StatusDenied)
	wantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, CodeAccessDenied)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusConflict, "decided")
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusConflict, "decided")
	s.wantStatus(id, StatusDenied)
	if s.minter.count() != 0 {
		t.Error("a denied request was minted")
	}
}

// TestEmailLateAndUnknownLinks: an expired link answers 410 and a link that
// does not exist 404, each changing nothing.
func TestEmailLateAndUnknownLinks(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{})
	id, _, link := s.requestMail(sink)
	cookie, csrf, _ := s.openForm(link)
	s.clock.Advance(DefaultRequestTTL + time.Second)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusGone, "expired")
	if rec := s.page(http.MethodHead, link, nil, nil); rec.Code != http.StatusGone || rec.Body.Len() != 0 {
		t.Errorf("HEAD of an expired link: %d", rec.Code)
	}
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusGone, "expired")
	s.wantStatus(id, StatusPending)
	wantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, CodeExpiredToken)

	unknown, err := randomToken(32)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{
		testPublic + ApprovePath + unknown,
		testPublic + ApprovePath + "short",
		testPublic + ApprovePath,
		testPublic + ApprovePath + unknown + "/x",
	} {
		wantOutcome(t, s.page(http.MethodGet, l, nil, nil), http.StatusNotFound, "unknown")
		wantOutcome(t, s.page(http.MethodPost, l, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusNotFound, "unknown")
	}
	if rec := s.page(http.MethodPut, link, nil, nil); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d, want 405", rec.Code)
	}
}

// TestEmailCSRF: a POST without the CSRF field, without the cookie, with
// the cookie of another link or with a tampered token is refused with 403
// and changes nothing.
func TestEmailCSRF(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{})
	idA, _, linkA := s.requestMail(sink, "binding_message", "A")
	_, _, linkB := s.requestMail(sink, "binding_message", "B")
	cookieA, csrfA, _ := s.openForm(linkA)
	cookieB, csrfB, _ := s.openForm(linkB)
	if csrfA == csrfB {
		t.Fatal("two links share a CSRF token")
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	tamperedMAC := csrfA[:len(csrfA)-1] + map[bool]string{true: "A", false: "B"}[csrfA[len(csrfA)-1] != 'A']
	cases := []struct {
		name   string
		cookie *http.Cookie
		form   url.Values
	}{
		{"no csrf field", cookieA, url.Values{"decision": {"approve"}}},
		{"empty csrf field", cookieA, url.Values{"csrf": {""}, "decision": {"approve"}}},
		{"no cookie", nil, url.Values{"csrf": {csrfA}, "decision": {"approve"}}},
		{"cookie and field of another link", cookieB, url.Values{"csrf": {csrfB}, "decision": {"approve"}}},
		{"field of another link", cookieA, url.Values{"csrf": {csrfB}, "decision": {"approve"}}},
		{"tampered field", cookieA, url.Values{"csrf": {flip(csrfA)}, "decision": {"approve"}}},
		{"tampered nonce in both", &http.Cookie{Name: csrfCookie, Value: flip(csrfA)}, url.Values{"csrf": {flip(csrfA)}, "decision": {"approve"}}},
		{"tampered mac in both", &http.Cookie{Name: csrfCookie, Value: tamperedMAC}, url.Values{"csrf": {tamperedMAC}, "decision": {"approve"}}},
		{"no mac", &http.Cookie{Name: csrfCookie, Value: "nonce"}, url.Values{"csrf": {"nonce"}, "decision": {"approve"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantOutcome(t, s.page(http.MethodPost, linkA, tc.cookie, tc.form), http.StatusForbidden, "forbidden")
			s.wantStatus(idA, StatusPending)
		})
	}
	// A body that is not a form is refused too.
	req := httptest.NewRequest(http.MethodPost, linkA, strings.NewReader(`{"decision":"approve"}`))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(cookieA)
	if rec := s.serve(req); rec.Code != http.StatusBadRequest {
		t.Errorf("JSON body: %d, want 400", rec.Code)
	}
	wantOutcome(t, s.page(http.MethodPost, linkA, cookieA, url.Values{"csrf": {csrfA}, "decision": {"maybe"}}), http.StatusBadRequest, "invalid")
	s.wantStatus(idA, StatusPending)
	// The genuine form still works.
	wantOutcome(t, s.page(http.MethodPost, linkA, cookieA, url.Values{"csrf": {csrfA}, "decision": {"approve"}}), http.StatusOK, "approved")
	s.wantStatus(idA, StatusApproved)
}

// TestEmailEscaping: a binding message with markup is escaped in the mail
// and on the page; one with CR/LF is refused at the endpoint; no header of
// the mail carries a value the client sent.
func TestEmailEscaping(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{subject: "Confirm your sign-in"})
	const msg = `<b>x</b>&"'`
	id, pm, link := s.requestMail(sink, "binding_message", msg)
	if s.get(id).BindingMessage != msg {
		t.Fatalf("binding message stored as %q", s.get(id).BindingMessage)
	}
	if strings.Contains(pm.HTML, "<b>") || strings.Contains(pm.HTML, "</b>") {
		t.Errorf("the HTML part holds the raw markup:\n%s", pm.HTML)
	}
	if !strings.Contains(pm.HTML, "&lt;b&gt;x&lt;/b&gt;&amp;") {
		t.Errorf("the HTML part lacks the escaped message:\n%s", pm.HTML)
	}
	if !strings.Contains(pm.Text, msg) {
		t.Errorf("the text part lacks the message as is:\n%s", pm.Text)
	}
	_, _, page := s.openForm(link)
	if strings.Contains(page, "<b>") || !strings.Contains(page, "&lt;b&gt;x&lt;/b&gt;&amp;") {
		t.Errorf("the page does not escape the message:\n%s", page)
	}
	if pm.Subject != "Confirm your sign-in" {
		t.Errorf("Subject = %q, want the operator's", pm.Subject)
	}
	for k, vs := range pm.Header {
		for _, v := range vs {
			if strings.Contains(v, "<b>") || strings.Contains(v, "x</b>") || strings.Contains(v, "&") {
				t.Errorf("header %s carries the client's value: %q", k, v)
			}
		}
	}

	// CR and LF cannot reach a header (or the mail): refused, nothing stored.
	before := s.records()
	for _, bad := range []string{"hi\r\nBcc: evil@example.com", "hi\nX-Evil: 1", "hi\rthere"} {
		rec := s.post(DefaultEndpoint, "cc", hForm("binding_message", bad))
		wantOAuthError(t, rec, http.StatusBadRequest, CodeInvalidBindingMessage)
	}
	if s.records() != before {
		t.Error("a refused request was stored")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(sink.received()); n != 1 {
		t.Errorf("%d mails sent, want 1", n)
	}
	for _, m := range sink.received() {
		if len(m.To) != 1 {
			t.Errorf("recipients %q", m.To)
		}
	}
}

// TestEmailSubjectFromOperator: the default subject names the client by
// its configured name; a configured one-line subject is used as is.
func TestEmailSubjectFromOperator(t *testing.T) {
	_, err := NewEmailAuthenticator(context.Background(), EmailConfig{
		PublicURL: testPublic, Sender: &SMTPSender{}, Store: newMailBackend(t, t.TempDir()).Store,
		Subject: "Sign in\r\nBcc: x@example.com",
	})
	if err == nil {
		t.Error("a subject with CR/LF was accepted")
	}
}

// TestEmailSMTPDown: the endpoint answers at once while the mail server is
// down; the mail goes out once the server is up, before expiry, through the
// retry backoff.
func TestEmailSMTPDown(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t) // nothing listens yet
	mb := newMailBackend(t, t.TempDir())
	s := newMailSite(t, mb, siteOptions{smtpAddr: addr})

	start := time.Now()
	rec := s.post(DefaultEndpoint, "cc", hForm("binding_message", "DOWN-1"))
	took := time.Since(start)
	if rec.Code != http.StatusOK {
		t.Fatalf("backchannel request with SMTP down: %d %s", rec.Code, rec.Body)
	}
	if took > 500*time.Millisecond {
		t.Errorf("the endpoint took %v with SMTP down: it waits for SMTP", took)
	}
	// Wait for the first attempt to fail, so the delivery is a retry.
	waitFor(t, 5*time.Second, "a failed attempt", func() bool {
		items := outboxItems(t, s.store)
		return len(items) == 1 && items[0].LastError != ""
	})
	items := outboxItems(t, s.store)
	if strings.Contains(strings.ToLower(items[0].LastError), "alice@example.com") {
		t.Errorf("the stored error shows the address: %q", items[0].LastError)
	}
	up := time.Now()
	sink := startMailSink(t, addr)
	mails := sink.wait(t, 1, MaxRetryDelay+5*time.Second)
	t.Logf("delivered %v after SMTP came up (attempts before: %d)", mails[0].At.Sub(up), items[0].Attempts)
	if d := mails[0].At.Sub(up); d > MaxRetryDelay+time.Second {
		t.Errorf("delivered %v after SMTP came up, more than the backoff cap", d)
	}
	if !mails[0].At.Before(start.Add(DefaultRequestTTL)) {
		t.Error("delivered after the request expired")
	}
	pm := parseMail(t, mails[0].Data)
	if !strings.Contains(pm.Text, "Code on your device: DOWN-1\n") {
		t.Error("wrong mail")
	}
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	time.Sleep(1500 * time.Millisecond)
	if n := len(sink.received()); n != 1 {
		t.Errorf("%d mails delivered, want exactly 1", n)
	}
	// The link of the retried mail works.
	if rec := s.page(http.MethodGet, firstURL(pm.Text), nil, nil); rec.Code != http.StatusOK {
		t.Errorf("GET of the retried mail's link: %d", rec.Code)
	}
}

// TestEmailEndpointDoesNotWaitForSMTP: with a mail server that accepts
// connections and never answers, the endpoint still answers at once, while
// the delivery attempt is in flight.
func TestEmailEndpointDoesNotWaitForSMTP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c) // never greets
			heldMu.Unlock()
		}
	}()
	mb := newMailBackend(t, t.TempDir())
	s := newMailSite(t, mb, siteOptions{smtpAddr: ln.Addr().String()})
	// Registered after the backend, so it runs before the backend's Close,
	// which waits for the attempts in flight.
	t.Cleanup(func() {
		_ = ln.Close()
		heldMu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		heldMu.Unlock()
	})
	for i := 0; i < 3; i++ {
		start := time.Now()
		s.authorize("cc")
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("the endpoint took %v while the mail server hangs", took)
		}
	}
	waitFor(t, 2*time.Second, "the attempts to be in flight", func() bool {
		now := mb.clock.Now()
		items := outboxItems(t, s.store)
		for _, it := range items {
			if !it.LeaseUntil.After(now) {
				return false
			}
		}
		return len(items) == 3
	})
}

// TestEmailSMTPTempFailure: a 421 answer is retried, and the mail is
// delivered once.
func TestEmailSMTPTempFailure(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t, "127.0.0.1:0")
	sink.setMailErr(func(n int) error {
		if n == 1 {
			return smtpReply(421, "Service not available, try again later")
		}
		return nil
	})
	s := newMailTest(t, sink, siteOptions{})
	start := time.Now()
	s.authorize("cc")
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("the endpoint took %v", took)
	}
	mails := sink.wait(t, 1, 10*time.Second)
	if d := mails[0].At.Sub(start); d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("delivered %v after the request, want about 1 s (the first backoff)", d)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := len(sink.received()); n != 1 {
		t.Errorf("%d mails delivered, want 1", n)
	}
	if mc, _ := sink.commands(); mc != 2 {
		t.Errorf("%d MAIL commands, want 2 (one refused, one accepted)", mc)
	}
	if n := len(outboxItems(t, s.store)); n != 0 {
		t.Errorf("%d items left in the outbox", n)
	}
}

// TestEmailPermanentFailure: a 5xx answer to RCPT drops the mail at once,
// logged with its reason and without the address in clear.
func TestEmailPermanentFailure(t *testing.T) {
	t.Parallel()
	sink := startMailSink(t, "127.0.0.1:0")
	sink.setRcptErr(smtpReply(550, "<Alice@Example.com>: mailbox unavailable"))
	mb := newMailBackend(t, t.TempDir())
	s := newMailSite(t, mb, siteOptions{smtpAddr: sink.addr})
	id := s.authorize("cc")
	waitFor(t, 5*time.Second, "the mail to be dropped", func() bool { return len(outboxItems(t, s.store)) == 0 })
	waitFor(t, 5*time.Second, "the abandonment to be logged", func() bool {
		return mb.logs.FilterMessage("delivery abandoned").Len() == 1
	})
	e := mb.logs.FilterMessage("delivery abandoned").All()[0]
	reason, _ := e.ContextMap()["reason"].(string)
	if !strings.Contains(reason, "550") || !strings.Contains(reason, "mailbox unavailable") {
		t.Errorf("reason %q does not say why", reason)
	}
	if e.Level < zapcore.WarnLevel {
		t.Errorf("logged at %v", e.Level)
	}
	time.Sleep(1500 * time.Millisecond) // no retry comes
	if _, rc := sink.commands(); rc != 1 {
		t.Errorf("%d RCPT commands, want 1 (no retry)", rc)
	}
	if n := len(sink.received()); n != 0 {
		t.Errorf("%d mails delivered", n)
	}
	s.wantStatus(id, StatusPending)
	for _, e := range mb.logs.All() {
		line := strings.ToLower(fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
		if strings.Contains(line, "alice@example.com") {
			t.Errorf("log line shows the address: %s", line)
		}
		if strings.Contains(line, strings.ToLower(id)) {
			t.Errorf("log line shows the auth_req_id: %s", line)
		}
	}
}

// TestEmailKillHelper is not a test: TestEmailSIGKILLQueuedMail runs the
// test binary with it as a child process, which queues a mail while SMTP is
// down and is then killed with SIGKILL.
func TestEmailKillHelper(t *testing.T) {
	dir := os.Getenv("CIBAPROXY_MAILKILL_DIR")
	if dir == "" {
		t.Skip("helper process for TestEmailSIGKILLQueuedMail")
	}
	mb := newMailBackend(t, dir)
	failed := make(chan struct{}, 1)
	mb.Outbox.Observe(func(ev OutboxEvent) {
		if ev.Outcome == "retry" {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	})
	s := newMailSite(t, mb, siteOptions{smtpAddr: os.Getenv("CIBAPROXY_MAILKILL_SMTP")})
	id := s.authorize("cc", "binding_message", "KILL-9")
	<-failed
	fmt.Printf("queued %s\n", id)
	select {}
}

// TestEmailSIGKILLQueuedMail: a mail queued while SMTP was down survives
// kill -9 and is delivered exactly once after the restart.
func TestEmailSIGKILLQueuedMail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	dir := t.TempDir()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmailKillHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "CIBAPROXY_MAILKILL_DIR="+dir, "CIBAPROXY_MAILKILL_SMTP="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.AfterFunc(time.Minute, func() { _ = cmd.Process.Kill() })
	var id string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "queued" {
			id = f[1]
			break
		}
	}
	deadline.Stop()
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if id == "" {
		t.Fatal("the helper did not queue its request")
	}

	sink := startMailSink(t, addr)
	mb := newMailBackend(t, dir)
	if n := len(outboxItems(t, mb.store)); n != 1 {
		t.Fatalf("%d items queued after the kill, want 1", n)
	}
	s := newMailSite(t, mb, siteOptions{smtpAddr: addr})
	mails := sink.wait(t, 1, ItemLease+5*time.Second)
	time.Sleep(3 * time.Second)
	if n := len(sink.received()); n != 1 {
		t.Fatalf("%d mails delivered after the restart, want exactly 1", n)
	}
	pm := parseMail(t, mails[0].Data)
	if !strings.Contains(pm.Text, "Code on your device: KILL-9\n") || !strings.EqualFold(mails[0].To[0], "alice@example.com") {
		t.Errorf("wrong mail: %q\n%s", mails[0].To, pm.Text)
	}
	// Its link leads to the request the dead process answered.
	link := firstURL(pm.Text)
	lk, err := s.store.Link(context.Background(), LinkKeyOf(tokenOf(t, link)))
	if err != nil || lk != KeyOf(id) {
		t.Fatalf("the link does not lead to %s: %v", id, err)
	}
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusOK, "approved")
	if rec := s.poll("cc", id); rec.Code != http.StatusOK {
		t.Errorf("poll after approval: %d %s", rec.Code, rec.Body)
	}
	if n := len(outboxItems(t, mb.store)); n != 0 {
		t.Errorf("%d items left in the outbox", n)
	}
}

// TestEmailReloadWhileQueued: mails queued under one configuration are
// delivered exactly once by the next one (registered before the old one is
// unregistered, as Caddy reloads), through the new SMTP settings.
func TestEmailReloadWhileQueued(t *testing.T) {
	t.Parallel()
	oldAddr, newAddr := freeAddr(t), freeAddr(t)
	mb := newMailBackend(t, t.TempDir())
	old := newMailSite(t, mb, siteOptions{smtpAddr: oldAddr, senderName: "idp"})
	ids := make(map[string]string) // binding message → auth_req_id
	for i := 1; i <= 5; i++ {
		bm := fmt.Sprintf("R-%d", i)
		ids[bm] = old.authorize("cc", "binding_message", bm)
	}
	waitFor(t, 5*time.Second, "every mail to fail once", func() bool {
		items := outboxItems(t, mb.store)
		for _, it := range items {
			if it.Attempts < 1 || it.LastError == "" {
				return false
			}
		}
		return len(items) == 5
	})

	// The reload: the new configuration is provisioned, then the old one
	// cleaned up.
	next := newMailSite(t, mb, siteOptions{smtpAddr: newAddr, senderName: "idp"})
	old.unregister()
	// No attempt of the old configuration may still be in flight.
	waitFor(t, 5*time.Second, "no attempt in flight", func() bool {
		now := mb.clock.Now()
		for _, it := range outboxItems(t, mb.store) {
			if it.LeaseUntil.After(now) {
				return false
			}
		}
		return true
	})
	oldSink := startMailSink(t, oldAddr)
	newSink := startMailSink(t, newAddr)
	mails := newSink.wait(t, 5, MaxRetryDelay+10*time.Second)
	waitFor(t, 5*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, mb.store)) == 0 })
	time.Sleep(2 * time.Second)
	if n := len(newSink.received()); n != 5 {
		t.Errorf("%d mails delivered, want exactly 5", n)
	}
	if n := len(oldSink.received()); n != 0 {
		t.Errorf("%d mails went through the old configuration's server", n)
	}
	seen := make(map[string]int)
	for _, m := range mails {
		pm := parseMail(t, m.Data)
		link := firstURL(pm.Text)
		lk, err := mb.Store.Link(context.Background(), LinkKeyOf(tokenOf(t, link)))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for bm, id := range ids {
			if KeyOf(id) == lk {
				found = true
				seen[bm]++
				if !strings.Contains(pm.Text, "Code on your device: "+bm+"\n") {
					t.Errorf("the mail of %s does not show it", bm)
				}
			}
		}
		if !found {
			t.Errorf("a link leads to no queued request")
		}
		if rec := next.page(http.MethodGet, link, nil, nil); rec.Code != http.StatusOK {
			t.Errorf("GET through the new configuration: %d", rec.Code)
		}
	}
	for bm := range ids {
		if seen[bm] != 1 {
			t.Errorf("request %s mailed %d times", bm, seen[bm])
		}
	}
}

// TestEmailTwoSitesOneStore: two sites (two sender names) on one store each
// deliver their own mails, once.
func TestEmailTwoSitesOneStore(t *testing.T) {
	t.Parallel()
	sinkA, sinkB := startMailSink(t, "127.0.0.1:0"), startMailSink(t, "127.0.0.1:0")
	mb := newMailBackend(t, t.TempDir())
	a := newMailSite(t, mb, siteOptions{smtpAddr: sinkA.addr, senderName: "site-a"})
	b := newMailSite(t, mb, siteOptions{smtpAddr: sinkB.addr, senderName: "site-b"})
	for i := 0; i < 3; i++ {
		a.authorize("cc", "binding_message", fmt.Sprintf("A-%d", i))
	}
	for i := 0; i < 2; i++ {
		b.authorize("cc", "binding_message", fmt.Sprintf("B-%d", i), "login_hint", "bob")
	}
	sinkA.wait(t, 3, 10*time.Second)
	sinkB.wait(t, 2, 10*time.Second)
	time.Sleep(1500 * time.Millisecond)
	check := func(sink *mailSink, n int, prefix, rcpt string) {
		t.Helper()
		mails := sink.received()
		if len(mails) != n {
			t.Errorf("%s: %d mails, want %d", prefix, len(mails), n)
		}
		seen := make(map[string]bool)
		for _, m := range mails {
			pm := parseMail(t, m.Data)
			if !strings.EqualFold(m.To[0], rcpt) {
				t.Errorf("%s: mail to %q", prefix, m.To)
			}
			code := ""
			if m := regexp.MustCompile(`Code on your device: ([AB]-\d)\b`).FindStringSubmatch(pm.Text); m != nil {
				code = m[1]
			}
			if !strings.HasPrefix(code, prefix) || seen[code] {
				t.Errorf("%s: mail %q (seen: %v)", prefix, code, seen[code])
			}
			seen[code] = true
		}
	}
	check(sinkA, 3, "A-", "alice@example.com")
	check(sinkB, 2, "B-", "bob@example.com")
}

var choiceInput = regexp.MustCompile(`<input type="radio" name="choice" value="([^"]*)"`)

func pageChoices(page string) []string {
	var out []string
	for _, m := range choiceInput.FindAllStringSubmatch(page, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// TestEmailNumberMatching: the page shows the binding message among three
// decoys, the same ones on every load; a wrong pick denies the request, the
// right one approves it; a request without a binding message is refused.
func TestEmailNumberMatching(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{match: true})

	before := s.records()
	rec := s.post(DefaultEndpoint, "cc", hForm())
	wantOAuthError(t, rec, http.StatusBadRequest, CodeInvalidRequest)
	// Decoys vary ASCII letters and digits: a message without any would be
	// the only choice of its kind.
	for _, msg := range []string{"Привет", "---", "★★"} {
		rec = s.post(DefaultEndpoint, "cc", hForm("binding_message", msg))
		wantOAuthError(t, rec, http.StatusBadRequest, CodeInvalidBindingMessage)
	}
	if s.records() != before {
		t.Error("a refused request was stored")
	}

	const code = "K7-42"
	id, pm, link := s.requestMail(sink, "binding_message", code)
	// The mail must not give the code away: the user takes it from their
	// device.
	if strings.Contains(pm.Text, code) || strings.Contains(pm.HTML, code) {
		t.Errorf("the mail shows the code to match:\n%s", pm.Text)
	}
	if !strings.Contains(pm.Text, "you will pick the code your device shows") || !strings.Contains(pm.HTML, "you will pick the code your device shows") {
		t.Errorf("the mail does not say a code will be asked for:\n%s", pm.Text)
	}
	_, _, page := s.openForm(link)
	choices := pageChoices(page)
	if len(choices) != 4 {
		t.Fatalf("choices %q, want 4", choices)
	}
	distinct := make(map[string]bool)
	for _, c := range choices {
		distinct[c] = true
		if len(c) != len(code) || c[2] != '-' {
			t.Errorf("decoy %q is not shaped like %q", c, code)
		}
	}
	if len(distinct) != 4 || !distinct[code] {
		t.Fatalf("choices %q: want 4 distinct including %q", choices, code)
	}
	if strings.Count(page, code) != 2 { // the radio's value and its label
		t.Errorf("the page shows the code outside the choices (%d times)", strings.Count(page, code))
	}
	for i := 0; i < 2; i++ {
		_, _, again := s.openForm(link)
		if got := pageChoices(again); strings.Join(got, "|") != strings.Join(choices, "|") {
			t.Errorf("reloaded choices %q, want %q", got, choices)
		}
	}
	var wrong string
	for _, c := range choices {
		if c != code {
			wrong = c
		}
	}
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}, "choice": {wrong}}),
		http.StatusBadRequest, "mismatch")
	s.wantStatus(id, StatusDenied)
	wantOAuthError(t, s.poll("cc", id), http.StatusBadRequest, CodeAccessDenied)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusConflict, "decided")

	// No pick at all (a scanner submitting the form) denies too.
	id2, _, link2 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link2)
	wantOutcome(t, s.page(http.MethodPost, link2, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}),
		http.StatusBadRequest, "mismatch")
	s.wantStatus(id2, StatusDenied)

	// The right pick approves.
	id3, _, link3 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link3)
	wantOutcome(t, s.page(http.MethodPost, link3, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}, "choice": {code}}),
		http.StatusOK, "approved")
	s.wantStatus(id3, StatusApproved)
	if rec := s.poll("cc", id3); rec.Code != http.StatusOK {
		t.Errorf("poll after approval: %d %s", rec.Code, rec.Body)
	}

	// Deny needs no pick.
	id4, _, link4 := s.requestMail(sink, "binding_message", code)
	cookie, csrf, _ = s.openForm(link4)
	wantOutcome(t, s.page(http.MethodPost, link4, cookie, url.Values{"csrf": {csrf}, "decision": {"deny"}}), http.StatusOK, "denied")
	s.wantStatus(id4, StatusDenied)
}

// ---- unit tests ----

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0 seconds"},
		{0, "0 seconds"},
		{time.Second, "1 second"},
		{1400 * time.Millisecond, "1 second"},
		{59 * time.Second, "59 seconds"},
		{59600 * time.Millisecond, "1 minute"},
		{time.Minute, "1 minute"},
		{61 * time.Second, "1 minute 1 second"},
		{4*time.Minute + 12*time.Second, "4 minutes 12 seconds"},
		{5 * time.Minute, "5 minutes"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func charClass(r rune) string {
	switch {
	case r >= 'A' && r <= 'Z':
		return "upper"
	case r >= 'a' && r <= 'z':
		return "lower"
	case r >= '0' && r <= '9':
		return "digit"
	}
	return string(r)
}

func TestDecoyShape(t *testing.T) {
	for _, msg := range []string{"A1-B2", "ab 12!", "Hello, World 2026", "X", "7", "ÄÖ-1"} {
		rng := mrand.New(mrand.NewPCG(1, uint64(len(msg))))
		for i := 0; i < 200; i++ {
			d := []rune(decoy(rng, msg, false))
			m := []rune(msg)
			if len(d) != len(m) {
				t.Fatalf("decoy %q of %q has another length", string(d), msg)
			}
			for j := range m {
				if charClass(d[j]) != charClass(m[j]) {
					t.Fatalf("decoy %q of %q: position %d is %q", string(d), msg, j, d[j])
				}
			}
		}
	}
	// Nothing to vary: a number is appended.
	rng := mrand.New(mrand.NewPCG(2, 2))
	if d := decoy(rng, "--", false); !strings.HasPrefix(d, "-- ") || len(d) < 4 {
		t.Errorf("decoy of %q = %q", "--", d)
	}
}

// TestChoices: four distinct choices including the message, fixed per link,
// and decoys drawn like the message so that its letters do not single it
// out.
func TestChoices(t *testing.T) {
	sink := startMailSink(t, "127.0.0.1:0")
	s := newMailTest(t, sink, siteOptions{match: true})
	a := s.auth
	for _, msg := range []string{"K7-42", "7", "a", "--", "OIlo-10"} {
		link := LinkKeyOf("link-" + msg)
		c := a.choices(link, msg)
		set := make(map[string]bool)
		for _, x := range c {
			set[x] = true
		}
		if len(c) != 4 || len(set) != 4 || !set[msg] {
			t.Errorf("choices(%q) = %q", msg, c)
		}
		if again := a.choices(link, msg); strings.Join(again, "|") != strings.Join(c, "|") {
			t.Errorf("choices(%q) not stable: %q then %q", msg, c, again)
		}
	}
	// The message's letters appear among the decoys too: over many links
	// the real code is not the only one with an O, an I, an l or an o.
	const msg = "OIlo"
	count := map[rune]int{}
	for i := 0; i < 300; i++ {
		for _, c := range a.choices(LinkKeyOf(fmt.Sprint("l", i)), msg) {
			if c == msg {
				continue
			}
			for _, r := range c {
				if strings.ContainsRune(msg, r) {
					count[r]++
				}
			}
		}
	}
	for _, r := range msg {
		if count[r] == 0 {
			t.Errorf("no decoy ever holds %q: the real code is the only one that can", r)
		}
	}
	// Decoys change position: the real code is not always at one index.
	pos := map[int]bool{}
	for i := 0; i < 40; i++ {
		for j, c := range a.choices(LinkKeyOf(fmt.Sprint("p", i)), "K7-42") {
			if c == "K7-42" {
				pos[j] = true
			}
		}
	}
	if len(pos) < 3 {
		t.Errorf("the real code takes only positions %v", pos)
	}
}

// TestTemplatesDir: a file in the templates directory replaces the embedded
// template; a broken one fails the configuration load.
func TestTemplatesDir(t *testing.T) {
	mb := newMailBackend(t, t.TempDir())
	sender, err := NewSMTPSender(SMTPConfig{Addr: "127.0.0.1:25", TLS: TLSNone, From: "login@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	newAuth := func(dir string) (*EmailAuthenticator, error) {
		return NewEmailAuthenticator(context.Background(), EmailConfig{
			PublicURL: testPublic, Sender: sender, Store: mb.Store, TemplatesDir: dir, Now: mb.clock.Now,
		})
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mail.txt"), []byte("CUSTOM {{.ClientName}} {{.BindingMessage}}\n{{.URL}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := newAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.textSkeletons != nil || a.htmlSkeletons == nil {
		t.Error("a template from the directory must be executed, the embedded one may use skeletons")
	}
	now := mb.clock.Now()
	out, err := a.Start(context.Background(), KeyOf("x"), &AuthRequest{
		ClientID: "cc", User: User{Username: "alice", Email: "alice@example.com"}, Scopes: []string{"openid"},
		BindingMessage: "BM-1", Created: now, Expires: now.Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 || out.Items[0].ID.Kind != KindMail || out.Items[0].Sender != testPublic {
		t.Fatalf("outbound %+v", out)
	}
	q, err := decodeQueuedMail(out.Items[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(q.Mail.Text, "CUSTOM cc BM-1\n"+testPublic+ApprovePath+q.Marker) {
		t.Errorf("custom text template not used:\n%s", q.Mail.Text)
	}
	if !strings.Contains(q.Mail.HTML, "<!DOCTYPE html>") {
		t.Errorf("the HTML template should stay the embedded one:\n%s", q.Mail.HTML)
	}

	for name, src := range map[string]string{
		"mail.txt":     "{{.Nope}}",
		"mail.html":    "{{if}}",
		"approve.html": "{{.URL}}", // not a field of the page
		"result.html":  "{{template \"missing\"}}",
	} {
		bad := t.TempDir()
		if err := os.WriteFile(filepath.Join(bad, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := newAuth(bad); err == nil {
			t.Errorf("a broken %s was accepted", name)
		}
	}
	// The stylesheet can be replaced too.
	css := t.TempDir()
	if err := os.WriteFile(filepath.Join(css, "style.css"), []byte("body { color: red }"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err = newAuth(css)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if !a.ServePage(rec, httptest.NewRequest(http.MethodGet, testPublic+stylePath, nil), nil) ||
		rec.Code != http.StatusOK || rec.Body.String() != "body { color: red }" {
		t.Errorf("custom stylesheet: %d %q", rec.Code, rec.Body)
	}

	// An unreadable templates entry (a directory named like a template) fails too.
	odd := t.TempDir()
	if err := os.Mkdir(filepath.Join(odd, "mail.html"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := newAuth(odd); err == nil {
		t.Error("an unreadable mail.html was accepted")
	}
}

// TestMailSkeletonsMatchTemplates: the embedded mail templates rendered
// from their skeletons (mailskeleton.go) are byte for byte what executing
// them writes, for requests of every shape with values full of what HTML
// escaping changes, invalid UTF-8 and the skeletons' own sentinels.
func TestMailSkeletonsMatchTemplates(t *testing.T) {
	mb := newMailBackend(t, t.TempDir())
	sender, err := NewSMTPSender(SMTPConfig{Addr: "127.0.0.1:25", TLS: TLSNone, From: "login@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(7, 11))
	pieces := []string{"a", "Z", "0", " ", "<", ">", "&", "'", "\"", "+", "\x00", "é", "€", "💡", "\xff",
		"{{.URL}}", "&amp;", "<script>", mailSentinel(0), mailSentinel(mailMarker), "\n", "%41", "javascript:"}
	str := func(maxPieces int) string {
		var b strings.Builder
		for range rng.IntN(maxPieces + 1) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	scopes := []string{"openid", "profile", "email", "offline_access", "custom:<x>", "a+b"}
	for _, match := range []bool{false, true} {
		a, err := NewEmailAuthenticator(context.Background(), EmailConfig{
			PublicURL: testPublic, Sender: sender, Store: mb.Store, Now: mb.clock.Now,
			MatchBindingMessage: match,
			ClientName:          func(id string) string { return id },
		})
		if err != nil {
			t.Fatal(err)
		}
		if a.textSkeletons == nil || a.htmlSkeletons == nil {
			t.Fatal("the embedded mail templates are executed, not rendered from skeletons")
		}
		now := mb.clock.Now()
		for i := range 1500 {
			req := &AuthRequest{
				ClientID:       str(4),
				User:           User{Username: str(3), Name: str(3), Email: "u@example.com"},
				BindingMessage: str(4),
				Created:        now,
				Expires:        now.Add(time.Duration(rng.IntN(3600)+1) * time.Second),
			}
			for range rng.IntN(5) {
				req.Scopes = append(req.Scopes, scopes[rng.IntN(len(scopes))])
			}
			if rng.IntN(3) == 0 {
				req.Scopes = append(req.Scopes, str(3))
			}
			marker := "CIBALINK" + fmt.Sprint(i) + "-_x"
			d := a.mailData(req, marker)
			for _, c := range []struct {
				name string
				sk   *mailSkeletons
				exec func(io.Writer, any) error
			}{{"text", a.textSkeletons, a.mailText.Execute}, {"html", a.htmlSkeletons, a.mailHTML.Execute}} {
				var want, got strings.Builder
				if err := c.exec(&want, &d); err != nil {
					t.Fatal(err)
				}
				if err := c.sk.render(&got, &d, mailFields(&d, marker)); err != nil {
					t.Fatal(err)
				}
				if got.String() != want.String() {
					t.Fatalf("match=%v, %s mail of %+v:\nskeleton: %q\ntemplate: %q", match, c.name, req, got.String(), want.String())
				}
			}
		}
		for _, sk := range []*mailSkeletons{a.textSkeletons, a.htmlSkeletons} {
			executed := 0
			for _, s := range sk.shapes {
				if s == nil {
					executed++
				}
			}
			if len(sk.shapes) < 4 || executed > 0 {
				t.Errorf("match=%v: %d shapes, %d of them executed: want several, none executed", match, len(sk.shapes), executed)
			}
		}
	}
}

// BenchmarkMailRender: a mail (text and HTML) executed from the templates
// and rendered from their skeletons.
func BenchmarkMailRender(b *testing.B) {
	mb := newMailBackend(b, b.TempDir())
	sender, err := NewSMTPSender(SMTPConfig{Addr: "127.0.0.1:25", TLS: TLSNone, From: "login@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	a, err := NewEmailAuthenticator(context.Background(), EmailConfig{PublicURL: testPublic, Sender: sender, Store: mb.Store, Now: mb.clock.Now})
	if err != nil {
		b.Fatal(err)
	}
	now := mb.clock.Now()
	req := &AuthRequest{ClientID: "cc", User: User{Username: "alice", Name: "Alice Example", Email: "alice@example.com"},
		Scopes: []string{"openid", "email"}, BindingMessage: "A1-B2", Created: now, Expires: now.Add(5 * time.Minute)}
	for _, name := range []string{"executed", "skeleton"} {
		b.Run(name, func(b *testing.B) {
			c := *a
			if name == "executed" {
				c.textSkeletons, c.htmlSkeletons = nil, nil
			}
			for b.Loop() {
				if _, err := c.render(req, "CIBALINKbench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
