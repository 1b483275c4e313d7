package cibaproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The delivery of the mails through the store's outbox: the endpoint never
// waits for the mail server, failures are retried or dropped, and queued
// mails outlive a crash and a reload.

// TestEmailSMTPDown: the endpoint answers while the mail server is down;
// the mail goes out once the server is up, before expiry, through the
// retry backoff.
func TestEmailSMTPDown(t *testing.T) {
	t.Parallel()
	addr := cibatest.FreeAddr(t) // nothing listens yet
	clock := cibatest.NewClock(time.Time{})
	mb := newObservedBackend(t, t.TempDir(), clock)
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: addr})

	start := time.Now()
	rec := s.post(DefaultEndpoint, "cc", hForm("binding_message", "DOWN-1"))
	t.Logf("the endpoint answered in %v with SMTP down", time.Since(start))
	id := cibatest.AuthReqID(t, rec)
	// Wait for the first attempt to fail, so the delivery is a retry.
	cibatest.WaitFor(t, 5*time.Second, "a failed attempt", func() bool {
		items := outboxItems(t, s.store)
		return len(items) == 1 && items[0].LastError != "" && items[0].LeaseUntil.IsZero()
	})
	items := outboxItems(t, s.store)
	if strings.Contains(strings.ToLower(items[0].LastError), "alice@example.com") {
		t.Errorf("the stored error shows the address: %q", items[0].LastError)
	}
	up := clock.Now()
	sink := cibatest.StartSMTP(t, addr)
	// The retry is due within the backoff cap of the server coming up; the
	// clock is moved to it.
	retryIn := items[0].Next.Sub(up)
	if retryIn > outbox.MaxRetryDelay {
		t.Errorf("the retry is due %v after SMTP came up, more than the backoff cap", retryIn)
	}
	t.Logf("the retry is due %v after SMTP came up (attempts before: %d)", retryIn, items[0].Attempts)
	clock.Advance(retryIn)
	mb.backend.Outbox.Wake()
	mails := sink.Wait(t, 1, 5*time.Second)
	if !clock.Now().Before(s.get(id).Expires) {
		t.Error("delivered after the request expired")
	}
	pm := cibatest.ParseMail(t, mails[0].Data)
	if !strings.Contains(pm.Text, "Code on your device: DOWN-1\n") {
		t.Error("wrong mail")
	}
	mb.settle(t)
	if n := len(sink.Received()); n != 1 {
		t.Errorf("%d mails delivered, want exactly 1", n)
	}
	// The link of the retried mail works.
	if rec := s.page(http.MethodGet, cibatest.FirstURL(pm.Text), nil, nil); rec.Code != http.StatusOK {
		t.Errorf("GET of the retried mail's link: %d", rec.Code)
	}
}

// TestEmailEndpointDoesNotWaitForSMTP: with a mail server that accepts
// connections and never answers, the endpoint still answers while no
// delivery attempt has ended (each waits for the greeting until the
// outbox's deadline, DeliveryTimeout), and the attempts are then in
// flight.
func TestEmailEndpointDoesNotWaitForSMTP(t *testing.T) {
	t.Parallel()
	ln := cibatest.ListenLoopback(t)
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
	mb := newObservedBackend(t, t.TempDir(), cibatest.NewLiveClock())
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: ln.Addr().String(), smtpTimeout: time.Minute})
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
		t.Logf("the endpoint answered in %v while the mail server hangs", time.Since(start))
		for _, it := range outboxItems(t, s.store) {
			if it.LastError != "" {
				t.Fatalf("an attempt ended (%s) before the endpoint answered: it waited for SMTP", it.LastError)
			}
		}
	}
	cibatest.WaitFor(t, 10*time.Second, "the attempts to be in flight", func() bool {
		now := mb.clock.Now()
		items := outboxItems(t, s.store)
		for _, it := range items {
			if !it.LeaseUntil.After(now) || it.LastError != "" {
				return false
			}
		}
		return len(items) == 3
	})
}

// TestEmailSMTPTempFailure: a 421 answer is retried after the first
// backoff step, and the mail is delivered once.
func TestEmailSMTPTempFailure(t *testing.T) {
	t.Parallel()
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sink.SetMailErr(func(n int) error {
		if n == 1 {
			return cibatest.SMTPReply(421, "Service not available, try again later")
		}
		return nil
	})
	clock := cibatest.NewClock(time.Time{})
	mb := newObservedBackend(t, t.TempDir(), clock)
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: sink.Addr()})
	failedAt := clock.Now()
	s.authorize("cc")
	cibatest.WaitFor(t, 5*time.Second, "the refused attempt", func() bool {
		items := outboxItems(t, s.store)
		return len(items) == 1 && items[0].LastError != "" && items[0].LeaseUntil.IsZero()
	})
	it := outboxItems(t, s.store)[0]
	if it.Attempts != 1 || !strings.Contains(it.LastError, "421") || !it.Next.Equal(failedAt.Add(time.Second)) {
		t.Errorf("after the 421: attempts %d, last error %q, next attempt %v after the request, want 1 s (the first backoff)",
			it.Attempts, it.LastError, it.Next.Sub(failedAt))
	}
	if n := len(sink.Received()); n != 0 {
		t.Fatalf("%d mails delivered before the retry", n)
	}
	clock.Advance(time.Second)
	mb.backend.Outbox.Wake()
	sink.Wait(t, 1, 5*time.Second)
	mb.settle(t)
	if n := len(sink.Received()); n != 1 {
		t.Errorf("%d mails delivered, want 1", n)
	}
	if mc, _ := sink.Commands(); mc != 2 {
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
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	sink.SetRcptErr(cibatest.SMTPReply(550, "<Alice@Example.com>: mailbox unavailable"))
	mb := newObservedBackend(t, t.TempDir(), cibatest.NewLiveClock())
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: sink.Addr()})
	id := s.authorize("cc")
	cibatest.WaitFor(t, 5*time.Second, "the mail to be dropped", func() bool { return len(outboxItems(t, s.store)) == 0 })
	cibatest.WaitFor(t, 5*time.Second, "the abandonment to be logged", func() bool {
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
	mb.settle(t) // no retry comes
	if _, rc := sink.Commands(); rc != 1 {
		t.Errorf("%d RCPT commands, want 1 (no retry)", rc)
	}
	if n := len(sink.Received()); n != 0 {
		t.Errorf("%d mails delivered", n)
	}
	s.wantStatus(id, store.StatusPending)
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
	mb := newObservedBackend(t, dir, cibatest.NewLiveClock())
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: os.Getenv("CIBAPROXY_MAILKILL_SMTP")})
	// Observed after the site is built, which has its metrics observe the
	// outbox; nothing is queued yet.
	failed := make(chan struct{}, 1)
	mb.backend.Outbox.Observe(func(ev outbox.Event) {
		if ev.Outcome == "retry" {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	})
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
	addr := cibatest.FreeAddr(t)
	var id string
	runKilled(t, "TestEmailKillHelper", []string{"CIBAPROXY_MAILKILL_DIR=" + dir, "CIBAPROXY_MAILKILL_SMTP=" + addr}, func(f []string) bool {
		if len(f) == 2 && f[0] == "queued" {
			id = f[1]
			return true
		}
		return false
	})
	if id == "" {
		t.Fatal("the helper did not queue its request")
	}

	sink := cibatest.StartSMTP(t, addr)
	mb := newObservedBackend(t, dir, cibatest.NewLiveClock())
	if n := len(outboxItems(t, mb.store)); n != 1 {
		t.Fatalf("%d items queued after the kill, want 1", n)
	}
	s := newMailSiteOn(t, mb, mailOptions{smtpAddr: addr})
	mails := sink.Wait(t, 1, outbox.ItemLease+5*time.Second)
	mb.settle(t)
	if n := len(sink.Received()); n != 1 {
		t.Fatalf("%d mails delivered after the restart, want exactly 1", n)
	}
	pm := cibatest.ParseMail(t, mails[0].Data)
	if !strings.Contains(pm.Text, "Code on your device: KILL-9\n") || !strings.EqualFold(mails[0].To[0], "alice@example.com") {
		t.Errorf("wrong mail: %q\n%s", mails[0].To, pm.Text)
	}
	// Its link leads to the request the dead process answered.
	link := cibatest.FirstURL(pm.Text)
	lk, err := s.store.Link(context.Background(), store.LinkKeyOf(linkToken(t, link)))
	if err != nil || lk != store.KeyOf(id) {
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
// closed, as Caddy reloads), through the new SMTP settings.
func TestEmailReloadWhileQueued(t *testing.T) {
	t.Parallel()
	oldAddr, newAddr := cibatest.FreeAddr(t), cibatest.FreeAddr(t)
	clock := cibatest.NewClock(time.Time{})
	mb := newObservedBackend(t, t.TempDir(), clock)
	old := newMailSiteOn(t, mb, mailOptions{smtpAddr: oldAddr, senderName: "idp"})
	ids := make(map[string]string) // binding message → auth_req_id
	for i := 1; i <= 5; i++ {
		bm := fmt.Sprintf("R-%d", i)
		ids[bm] = old.authorize("cc", "binding_message", bm)
	}
	cibatest.WaitFor(t, 5*time.Second, "every mail to fail once", func() bool {
		items := outboxItems(t, mb.store)
		for _, it := range items {
			if it.Attempts < 1 || it.LastError == "" {
				return false
			}
		}
		return len(items) == 5
	})

	// The reload: the new configuration is provisioned, then the old one
	// closed (its deliverer unregistered).
	next := newMailSiteOn(t, mb, mailOptions{smtpAddr: newAddr, senderName: "idp"})
	old.srv.Close()
	// No attempt of the old configuration may still be in flight.
	cibatest.WaitFor(t, 5*time.Second, "no attempt in flight", func() bool {
		now := mb.clock.Now()
		for _, it := range outboxItems(t, mb.store) {
			if it.LeaseUntil.After(now) {
				return false
			}
		}
		return true
	})
	oldSink := cibatest.StartSMTP(t, oldAddr)
	newSink := cibatest.StartSMTP(t, newAddr)
	// Every retry is due within the backoff cap.
	clock.Advance(outbox.MaxRetryDelay)
	mb.backend.Outbox.Wake()
	mails := newSink.Wait(t, 5, 10*time.Second)
	mb.settle(t)
	if n := len(newSink.Received()); n != 5 {
		t.Errorf("%d mails delivered, want exactly 5", n)
	}
	if n := len(oldSink.Received()); n != 0 {
		t.Errorf("%d mails went through the old configuration's server", n)
	}
	seen := make(map[string]int)
	for _, m := range mails {
		pm := cibatest.ParseMail(t, m.Data)
		link := cibatest.FirstURL(pm.Text)
		lk, err := mb.store.Link(context.Background(), store.LinkKeyOf(linkToken(t, link)))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for bm, id := range ids {
			if store.KeyOf(id) == lk {
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
