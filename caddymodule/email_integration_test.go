package caddymodule

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpRecorder is a real SMTP server on loopback recording what it receives.
type smtpRecorder struct {
	srv     *smtp.Server
	mu      sync.Mutex
	mails   [][]byte
	logouts int // sessions ended (QUIT or the connection closed)
}

func (r *smtpRecorder) NewSession(*smtp.Conn) (smtp.Session, error) { return &recSession{r: r}, nil }

type recSession struct{ r *smtpRecorder }

func (s *recSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *recSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *recSession) Reset()                               {}
func (s *recSession) Logout() error {
	s.r.mu.Lock()
	s.r.logouts++
	s.r.mu.Unlock()
	return nil
}
func (s *recSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.mails = append(s.r.mails, b)
	s.r.mu.Unlock()
	return nil
}

// startSMTP starts the recorder on addr (an address nothing listened on:
// until then, the mail server is down).
func startSMTP(t *testing.T, addr string) *smtpRecorder {
	t.Helper()
	rec := &smtpRecorder{}
	rec.srv = smtp.NewServer(rec)
	rec.srv.Domain = "localhost"
	rec.srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rec.srv.Serve(ln) }()
	t.Cleanup(func() { _ = rec.srv.Close() })
	return rec
}

// count returns how many received mails contain s.
func (r *smtpRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.mails {
		if bytes.Contains(m, []byte(s)) {
			n++
		}
	}
	return n
}

func (r *smtpRecorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.mails)
}

func unusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// emailSite is a test site with an email block sending to smtpAddr.
func (e *itEnv) emailSite(interval, smtpAddr string) string {
	block := strings.Replace(e.cibaBlock(interval), "client cc {", fmt.Sprintf(`email {
			smtp %s
			tls none
			from "Login <login@example.com>"
		}
		client cc {`, smtpAddr), 1)
	return itGlobalOptions + "\n" + itSite + " {\n\t" + block + "\n\treverse_proxy " + e.upstream.addr() + "\n}\n"
}

// TestIntegrationReloadWithQueuedMails: mails queued while the mail server
// is down survive a configuration reload and are each delivered exactly
// once when it comes back: the outbox belongs to the store, not to a
// configuration.
func TestIntegrationReloadWithQueuedMails(t *testing.T) {
	e := newITEnv(t)
	smtpAddr := unusedAddr(t)
	e.load(e.emailSite("5s", smtpAddr))
	const n = 5
	for i := range n {
		resp, body := e.postForm("/bc-authorize", url.Values{
			"scope": {"openid"}, "login_hint": {"alice"}, "binding_message": {fmt.Sprintf("CODE-%d", i)},
		}, "cc", "s3cret")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
	}
	// A reload (a different interval, so Caddy does not skip it) while the
	// mails wait.
	e.load(e.emailSite("6s", smtpAddr))
	rec := startSMTP(t, smtpAddr)
	deadline := time.Now().Add(20 * time.Second)
	for rec.total() < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	// Give a duplicate the time to show up: a retry would come within 2 s.
	time.Sleep(2500 * time.Millisecond)
	for i := range n {
		if c := rec.count(fmt.Sprintf("CODE-%d", i)); c != 1 {
			t.Errorf("the mail of request %d was delivered %d times, want once", i, c)
		}
	}
	if rec.total() != n {
		t.Errorf("%d mails delivered, want %d", rec.total(), n)
	}
}

// TestIntegrationReloadClosesKeptSMTPConnections: the sender keeps its
// connection to the mail server for the next mails; a reload that unloads
// its configuration ends it (QUIT) rather than leaving it to the idle
// timeout.
func TestIntegrationReloadClosesKeptSMTPConnections(t *testing.T) {
	e := newITEnv(t)
	smtpAddr := unusedAddr(t)
	rec := startSMTP(t, smtpAddr)
	e.load(e.emailSite("5s", smtpAddr))
	resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "cc", "s3cret")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backchannel: %d %s", resp.StatusCode, body)
	}
	logouts := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.logouts
	}
	deadline := time.Now().Add(10 * time.Second)
	for rec.total() < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rec.total() != 1 {
		t.Fatalf("%d mails delivered, want 1", rec.total())
	}
	if n := logouts(); n != 0 {
		t.Fatalf("the connection was ended after the mail (%d sessions ended); it is kept for the next", n)
	}
	e.load(e.emailSite("6s", smtpAddr))
	// Well within the 15 s the connection would otherwise stay idle.
	deadline = time.Now().Add(5 * time.Second)
	for logouts() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := logouts(); n != 1 {
		t.Fatalf("%d sessions ended after the reload, want the kept one", n)
	}
}

// TestIntegrationReloadPicksUpUsers: users.json is read when the
// configuration loads, so a reload picks up a new user.
func TestIntegrationReloadPicksUpUsers(t *testing.T) {
	e := newITEnv(t)
	e.load(e.plainSite("5s"))
	ask := func() (int, []byte) {
		resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"carol@example.com"}}, "cc", "s3cret")
		return resp.StatusCode, body
	}
	if status, body := ask(); status != http.StatusBadRequest || !bytes.Contains(body, []byte("unknown_user_id")) {
		t.Fatalf("carol before she is added: %d %s", status, body)
	}
	old, err := os.ReadFile(e.users)
	if err != nil {
		t.Fatal(err)
	}
	added := bytes.Replace(old, []byte(`"users":[`), []byte(`"users":[{"username":"carol","email":"carol@example.com"},`), 1)
	if bytes.Equal(added, old) {
		t.Fatalf("could not add a user to %s", old)
	}
	if err := os.WriteFile(e.users, added, 0o600); err != nil {
		t.Fatal(err)
	}
	e.load(e.plainSite("6s"))
	if status, body := ask(); status != http.StatusOK {
		t.Fatalf("carol after the reload: %d %s", status, body)
	}
}
