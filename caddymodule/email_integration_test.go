package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
)

// emailSite is a test site with an email block sending to smtpAddr.
func (e *itEnv) emailSite(interval, smtpAddr string) string {
	return itGlobalOptions + "\n" + itSite + " {\n\t" + e.emailCibaBlock(interval, smtpAddr) + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n"
}

// emailCibaBlock is the ciba block of the test sites with an email block
// sending to smtpAddr.
func (e *itEnv) emailCibaBlock(interval, smtpAddr string) string {
	return strings.Replace(e.cibaBlock(interval), "client cc {", fmt.Sprintf(`email {
			smtp %s
			tls none
			from "Login <login@example.com>"
		}
		client cc {`, smtpAddr), 1)
}

// TestIntegrationReloadWithQueuedMails: mails queued while the mail server
// is down survive a configuration reload and are each delivered exactly
// once when it comes back: the outbox belongs to the store, not to a
// configuration.
func TestIntegrationReloadWithQueuedMails(t *testing.T) {
	e := newITEnv(t)
	smtpAddr := cibatest.FreeAddr(t)
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
	rec := cibatest.StartSMTP(t, smtpAddr)
	rec.Wait(t, n, 20*time.Second)
	// Give a duplicate the time to show up: a retry would come within 2 s.
	time.Sleep(2500 * time.Millisecond)
	for i := range n {
		if c := rec.Count(fmt.Sprintf("CODE-%d", i)); c != 1 {
			t.Errorf("the mail of request %d was delivered %d times, want once", i, c)
		}
	}
	if len(rec.Received()) != n {
		t.Errorf("%d mails delivered, want %d", len(rec.Received()), n)
	}
}

// TestIntegrationReloadClosesKeptSMTPConnections: the sender keeps its
// connection to the mail server for the next mails; a reload that unloads
// its configuration ends it (QUIT) rather than leaving it to the idle
// timeout.
func TestIntegrationReloadClosesKeptSMTPConnections(t *testing.T) {
	e := newITEnv(t)
	smtpAddr := cibatest.FreeAddr(t)
	rec := cibatest.StartSMTP(t, smtpAddr)
	e.load(e.emailSite("5s", smtpAddr))
	resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "cc", "s3cret")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backchannel: %d %s", resp.StatusCode, body)
	}
	logouts := rec.Logouts
	if len(rec.Wait(t, 1, 10*time.Second)) != 1 {
		t.Fatalf("%d mails delivered, want 1", len(rec.Received()))
	}
	if n := logouts(); n != 0 {
		t.Fatalf("the connection was ended after the mail (%d sessions ended); it is kept for the next", n)
	}
	e.load(e.emailSite("6s", smtpAddr))
	// Well within the 15 s the connection would otherwise stay idle.
	deadline := time.Now().Add(5 * time.Second)
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
