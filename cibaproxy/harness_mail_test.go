package cibaproxy

import (
	"context"
	"encoding/base64"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The harness with the real e-mail link authenticator: it mails through an
// SMTP server of the test kit, and the approval pages are reached through
// the Server's Handle, as Caddy would.

// mailOptions configure the e-mail link authenticator of a mail site.
type mailOptions struct {
	smtpAddr    string // the SMTP server (a cibatest.SMTPSink's Addr, or cibatest.FreeAddr for one that is down)
	senderName  string
	subject     string
	templates   string
	match       bool                       // match_binding_message
	clientIP    func(*http.Request) string // for the server and the approval page
	holdSender  bool                       // the mails wait in the outbox until mailSite.registerSender
	smtpTimeout time.Duration              // of one delivery; 0 for 3 s
}

// mailSite is the harness whose one authenticator is the real e-mail link
// authenticator. Its Server registers the authenticator's deliverer with
// the backend's outbox (unless held), as it does for the Caddy module. It
// records into metrics of its own, read back through reg, which also
// count the backend's queue and are told of its deliveries (the outbox
// tells the metrics of the last site built on the backend).
type mailSite struct {
	*harness
	email   *email.Authenticator
	metrics *metrics.Metrics
	reg     *prometheus.Registry
}

// newMailSite builds a mail site on a backend of its own: a live clock,
// and a logger the test reads.
func newMailSite(t *testing.T, o mailOptions, opts ...harnessOption) *mailSite {
	t.Helper()
	return newMailSiteOn(t, newObservedBackend(t, t.TempDir(), cibatest.NewLiveClock()), o, opts...)
}

// newMailSiteOn builds a mail site on b; opts change its Config once the
// authenticator is in.
func newMailSiteOn(t *testing.T, b *siteBackend, o mailOptions, opts ...harnessOption) *mailSite {
	t.Helper()
	s := &mailSite{metrics: metrics.New()}
	s.reg = cibatest.Registry(t, s.metrics.Collectors()...)
	b.backend.Outbox.Observe(s.metrics.Outbox)
	t.Cleanup(s.metrics.Watch(b.store))
	withEmail := func(c *Config) {
		names := make(map[string]string)
		for _, cl := range c.Clients {
			names[cl.ID] = cl.DisplayName()
		}
		timeout := o.smtpTimeout
		if timeout == 0 {
			timeout = 3 * time.Second
		}
		auth, err := email.New(context.Background(), email.Config{
			PublicURL: testPublic,
			SMTP: mail.Config{
				Addr: o.smtpAddr, TLS: mail.TLSNone, From: "Example Login <login@example.com>", Timeout: timeout,
			},
			SenderName:          o.senderName,
			Subject:             o.subject,
			TemplatesDir:        o.templates,
			MatchBindingMessage: o.match,
			Store:               c.Backend.Store,
			ClientName:          func(id string) string { return names[id] },
			ClientIP:            o.clientIP,
			Metrics:             s.metrics,
			Logger:              c.Logger,
			Now:                 c.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.email = auth
		entry := auth.Entry()
		if o.holdSender {
			entry.Authenticator = heldAuthenticator{auth}
			t.Cleanup(func() { _ = auth.Close() })
		}
		c.Authenticators = []*authn.Entry{entry}
		c.ClientIP = o.clientIP
		c.Metrics = s.metrics
	}
	s.harness = newHarnessOn(t, b, append([]harnessOption{withEmail}, opts...)...)
	return s
}

// registerSender registers the site's mail deliverer (holdSender): the
// mails queued so far go out.
func (s *mailSite) registerSender() {
	kind, sender := s.email.Route()
	s.t.Cleanup(s.backend.Outbox.Register(kind, sender, s.email))
}

// requestMail makes a backchannel request as cc and returns its id, the
// mail it caused and the approval link (the first URL of the text part).
func (s *mailSite) requestMail(sink *cibatest.SMTPSink, kv ...string) (string, *cibatest.ParsedMail, string) {
	s.t.Helper()
	n := len(sink.Received())
	id := s.authorize("cc", kv...)
	mails := sink.Wait(s.t, n+1, 10*time.Second)
	pm := cibatest.ParseMail(s.t, mails[n].Data)
	link := pm.ApprovalURL()
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

// mailCSRFCookie is the approval form's double-submit cookie.
const mailCSRFCookie = "ciba_csrf"

var mailCSRFField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]+)">`)

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
		if c.Name == mailCSRFCookie {
			cookie = c
		}
	}
	if cookie == nil {
		s.t.Fatal("the approval page set no CSRF cookie")
	}
	m := mailCSRFField.FindStringSubmatch(rec.Body.String())
	if m == nil {
		s.t.Fatalf("the approval page has no CSRF field:\n%s", rec.Body)
	}
	return &http.Cookie{Name: cookie.Name, Value: cookie.Value}, html.UnescapeString(m[1]), rec.Body.String()
}

// wantStatus checks the status of the stored request of id.
func (s *mailSite) wantStatus(id string, want store.Status) {
	s.t.Helper()
	if got := s.get(id).Status; got != want {
		s.t.Fatalf("request status = %v, want %v", got, want)
	}
}

// wantOutcome checks an answer of the approval page: its status, its
// outcome and its security headers.
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

// linkToken returns the token of an approval link, checking it is 256
// bits of unpadded base64url.
func linkToken(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(u.Path, email.ApprovePath)
	if raw, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(raw) != 32 {
		t.Fatalf("link token %q is not 256 bits of base64url", tok)
	}
	return tok
}
