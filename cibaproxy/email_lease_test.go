package cibaproxy

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// TestEmailSlowerThanItsLease: a mail server that holds a delivery past
// the mail's lease (here: its MAIL command answers only when the test lets
// it) gets the mail once. The attempt ends when its lease does (the
// connection is closed under the waiting command), so the worker that
// takes the mail over is the only one to send it; its link works.
func TestEmailSlowerThanItsLease(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	entered, hold := make(chan struct{}), make(chan struct{})
	var release sync.Once
	sink.SetMailErr(func(n int) error {
		if n == 1 {
			close(entered)
			<-hold
		}
		return nil
	})
	// The sender's own timeout is far beyond the lease: only the lease
	// may end the attempt.
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), smtpTimeout: time.Minute})
	var mu sync.Mutex
	var events []outbox.Event
	observe := func(ev outbox.Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}
	outcomes := func(outcome string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, ev := range events {
			if ev.Outcome == outcome {
				n++
			}
		}
		return n
	}
	// A second worker on the store, as another replica's.
	other := outbox.New(s.store, nil, s.clock.Now)
	t.Cleanup(other.Close)
	kind, sender := s.email.Route()
	t.Cleanup(other.Register(kind, sender, s.email))
	other.Observe(observe)
	s.backend.Outbox.Observe(observe)
	t.Cleanup(func() { release.Do(func() { close(hold) }) }) // before the workers stop

	id := s.authorize("cc")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery began")
	}
	// The lease runs out while the server holds the MAIL command: the
	// other worker may take the mail over.
	s.clock.Advance(outbox.ItemLease)
	s.backend.Outbox.Wake()
	other.Wake()
	sink.Wait(t, 1, 10*time.Second)
	// The held attempt ends (a retry, the mail being gone) once its lease
	// has: then the server answers its MAIL command.
	cut := false
	for deadline := time.Now().Add(10 * time.Second); !cut && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		cut = outcomes("retry") == 1
	}
	release.Do(func() { close(hold) })
	s.backend.Outbox.Close()
	other.Close() // waits for the deliveries in flight: the mails are final
	mails := sink.Received()
	if len(mails) != 1 {
		t.Fatalf("%d mails accepted for one request, want 1 (the held attempt ended with its lease: %v)", len(mails), cut)
	}
	if !cut {
		t.Error("the held attempt did not end with its lease")
	}
	link := cibatest.ParseMail(t, mails[0].Data).ApprovalURL()
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusOK, "approved")
	s.wantStatus(id, store.StatusApproved)
}

// TestEmailAttemptsSendOneLink: two attempts at one mail (an attempt the
// server accepted but whose answer was lost, then a retry) send the same
// approval link, so no second working link exists; it approves once.
func TestEmailAttemptsSendOneLink(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr(), holdSender: true})
	id := s.authorize("cc")
	items := outboxItems(t, s.store)
	if len(items) != 1 {
		t.Fatalf("%d items queued, want 1", len(items))
	}
	for range 2 {
		if err := s.email.Deliver(context.Background(), items[0]); err != nil {
			t.Fatal(err)
		}
	}
	mails := sink.Wait(t, 2, 10*time.Second)
	link := cibatest.ParseMail(t, mails[0].Data).ApprovalURL()
	if again := cibatest.ParseMail(t, mails[1].Data).ApprovalURL(); again != link {
		t.Fatalf("the second attempt sent another link:\n %s\n %s", link, again)
	}
	cookie, csrf, _ := s.openForm(link)
	wantOutcome(t, s.page(http.MethodPost, link, cookie, url.Values{"csrf": {csrf}, "decision": {"approve"}}), http.StatusOK, "approved")
	s.wantStatus(id, store.StatusApproved)
	wantOutcome(t, s.page(http.MethodGet, link, nil, nil), http.StatusConflict, "decided")
}
