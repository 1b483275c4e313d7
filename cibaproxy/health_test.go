package cibaproxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// hlReport is the health answer, strictly decoded: pointers tell absent
// fields apart, and a field of any other name fails the decoding.
type hlReport struct {
	Status string `json:"status"`
	Store  *struct {
		OK *bool `json:"ok"`
	} `json:"store"`
	Upstream *struct {
		OK *bool `json:"ok"`
	} `json:"upstream"`
	SMTP *struct {
		OK *bool `json:"ok"`
	} `json:"smtp"`
}

// hlGet asks for the health report, checks the answer's form, that it
// names no host, address or error, and holds no number (a count or a time
// would move with the requests), and decodes it.
func hlGet(t *testing.T, h *harness, status int, forbidden ...string) (*hlReport, *httptest.ResponseRecorder) {
	t.Helper()
	rec := h.serve(httptest.NewRequest(http.MethodGet, testPublic+HealthPath, nil))
	if rec.Code != status {
		t.Fatalf("health: %d %s, want %d", rec.Code, rec.Body, status)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	body := rec.Body.String()
	u, _ := url.Parse(h.upstream.URL())
	for _, f := range append([]string{"127.0.0.1", "localhost", u.Host, "idp.example.com", "example", "error", "refused", "dial", "tcp", "status 5"}, forbidden...) {
		if f != "" && strings.Contains(body, f) {
			t.Errorf("the health report names %q: %s", f, body)
		}
	}
	if strings.ContainsAny(body, "0123456789") {
		t.Errorf("the health report holds a number: %s", body)
	}
	var rep hlReport
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("health report %s: %v", body, err)
	}
	if rep.Store == nil || rep.Store.OK == nil || rep.Upstream == nil || rep.Upstream.OK == nil {
		t.Fatalf("health report %s lacks store.ok or upstream.ok", body)
	}
	if rep.SMTP != nil && rep.SMTP.OK == nil {
		t.Fatalf("health report %s has an smtp part without ok", body)
	}
	return &rep, rec
}

// TestHealth: 200 with the store's and the upstream's state; no smtp part
// without the e-mail authenticator; requests do not change the report;
// HEAD like GET without a body; other methods 405.
func TestHealth(t *testing.T) {
	h := newHarness(t)
	rep, rec := hlGet(t, h, http.StatusOK)
	if rep.Status != "ok" || !*rep.Store.OK || !*rep.Upstream.OK || rep.SMTP != nil {
		t.Errorf("report %s, want ok, store and upstream ok, no smtp", rec.Body)
	}
	before := rec.Body.String()
	h.authorize("cc")
	id := h.authorize("cc", "login_hint", "bob")
	h.authorize("other")
	h.approve(id)
	if _, rec := hlGet(t, h, http.StatusOK); rec.Body.String() != before {
		t.Errorf("the report changed with the requests: %s, then %s", before, rec.Body)
	}

	rec = h.serve(httptest.NewRequest(http.MethodHead, testPublic+HealthPath, nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") != strconv.Itoa(len(before)) {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q; want 200, no body, the GET's length %d",
			rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"), len(before))
	}
	rec = h.serve(httptest.NewRequest(http.MethodPost, testPublic+HealthPath, strings.NewReader("")))
	cibatest.WantOAuthError(t, rec, http.StatusMethodNotAllowed, oauth.CodeInvalidRequest)
	if a := rec.Header().Get("Allow"); !strings.Contains(a, "GET") {
		t.Errorf("Allow %q", a)
	}
}

// TestHealthUpstreamDown: the upstream's discovery failing is reported
// (upstream.ok false, status degraded) with 200 once the last check is
// older than upstreamCheckTTL; so is its recovery.
func TestHealthUpstreamDown(t *testing.T) {
	h := newHarness(t)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "ok" || !*rep.Upstream.OK {
		t.Fatalf("report %+v, want ok", rep)
	}
	h.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "ok" || !*rep.Upstream.OK {
		t.Errorf("within the check's lifetime: status %q upstream.ok %v; want the cached ok", rep.Status, *rep.Upstream.OK)
	}
	h.clock.Advance(upstreamCheckTTL)
	rep, _ := hlGet(t, h, http.StatusOK)
	if rep.Status != "degraded" || *rep.Upstream.OK || !*rep.Store.OK {
		t.Errorf("upstream down: status %q upstream.ok %v store.ok %v; want degraded, false, true",
			rep.Status, *rep.Upstream.OK, *rep.Store.OK)
	}
	h.upstream.SetDiscoveryStatus(0)
	h.clock.Advance(upstreamCheckTTL)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "ok" || !*rep.Upstream.OK {
		t.Errorf("upstream back: %+v, want ok", rep)
	}
	// the upstream gone altogether (connection refused)
	h.upstream.Close()
	h.clock.Advance(upstreamCheckTTL)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "degraded" || *rep.Upstream.OK {
		t.Errorf("upstream gone: status %q upstream.ok %v; want degraded, false", rep.Status, *rep.Upstream.OK)
	}
}

// TestHealthUpstreamCheckShared: many health requests at once, and more
// within upstreamCheckTTL, cost the upstream one discovery fetch; the
// first request after it fetches again, once.
func TestHealthUpstreamCheckShared(t *testing.T) {
	h := newHarness(t)
	fetches := h.upstream.DiscoveryFetches()
	burst := func() {
		var wg sync.WaitGroup
		codes := make(chan int, 40)
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 2 {
					codes <- h.serve(httptest.NewRequest(http.MethodGet, testPublic+HealthPath, nil)).Code
				}
			}()
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != http.StatusOK {
				t.Errorf("health: %d, want 200", c)
			}
		}
	}
	burst()
	if n := h.upstream.DiscoveryFetches() - fetches; n != 1 {
		t.Errorf("40 health requests, 20 at a time: %d discovery fetches, want 1", n)
	}
	h.clock.Advance(upstreamCheckTTL - time.Second)
	burst()
	if n := h.upstream.DiscoveryFetches() - fetches; n != 1 {
		t.Errorf("within the check's lifetime: %d discovery fetches in all, want 1", n)
	}
	h.clock.Advance(time.Second)
	burst()
	if n := h.upstream.DiscoveryFetches() - fetches; n != 2 {
		t.Errorf("after the check's lifetime: %d discovery fetches in all, want 2", n)
	}
}

// TestHealthStoreClosed: an unusable store is the one 503.
func TestHealthStoreClosed(t *testing.T) {
	h := newHarness(t)
	h.authorize("cc")
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	rep, _ := hlGet(t, h, http.StatusServiceUnavailable, "closed")
	if rep.Status != "failing" || *rep.Store.OK {
		t.Errorf("store closed: status %q store.ok %v; want failing, false", rep.Status, *rep.Store.OK)
	}
	if !*rep.Upstream.OK {
		t.Error("the upstream is reported down although only the store is")
	}
}

// TestHealthSMTP: with the e-mail authenticator the report has an smtp
// part: ok before any delivery; after a failed delivery ok false (status
// degraded, still 200); once the mails are delivered ok again.
func TestHealthSMTP(t *testing.T) {
	addr := cibatest.FreeAddr(t) // nothing listens yet: the SMTP server is down
	s := newMailSite(t, mailOptions{smtpAddr: addr})
	rep, _ := hlGet(t, s.harness, http.StatusOK, addr)
	if rep.SMTP == nil {
		t.Fatalf("no smtp part: %+v", rep)
	}
	if rep.Status != "ok" || !*rep.SMTP.OK {
		t.Errorf("before any delivery: %q smtp.ok %v; want ok, true", rep.Status, *rep.SMTP.OK)
	}

	s.authorize("cc")
	s.authorize("cc", "login_hint", "bob")
	cibatest.WaitFor(t, 10*time.Second, "a failed delivery", func() bool {
		return !s.backend.Outbox.Health(email.Kind).LastFailure.IsZero()
	})
	// Both mails must have failed once before the server comes up.
	cibatest.WaitFor(t, 10*time.Second, "both deliveries to fail", func() bool { return mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry") >= 2 })
	rep, _ = hlGet(t, s.harness, http.StatusOK, addr)
	if rep.Status != "degraded" || *rep.SMTP.OK || !*rep.Store.OK || !*rep.Upstream.OK {
		t.Errorf("SMTP down: %q smtp.ok %v store.ok %v upstream.ok %v; want degraded, false, true, true",
			rep.Status, *rep.SMTP.OK, *rep.Store.OK, *rep.Upstream.OK)
	}

	// the server comes up; the retries deliver
	sink := cibatest.StartSMTP(t, addr)
	sink.Wait(t, 2, 15*time.Second)
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	// The outcome is counted just after the item leaves the outbox.
	cibatest.WaitFor(t, 5*time.Second, "the deliveries to be counted", func() bool { return mxValue(t, s.reg, cibatest.FamilyMails, "result", "sent") == 2 })
	rep, _ = hlGet(t, s.harness, http.StatusOK, addr)
	if rep.Status != "ok" || !*rep.SMTP.OK {
		t.Fatalf("SMTP back: %q smtp.ok %v; want ok, true", rep.Status, *rep.SMTP.OK)
	}
	cibatest.WantFamily(t, s.reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2, "result=retry": mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry")})
	if n := mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry"); n < 2 {
		t.Errorf("mails_total{result=retry} = %v, want at least 2", n)
	}
}

// TestHealthHidesActivity: with hide_unknown_users, a request for a real
// user (its mail queued, then sent) and one for an unknown hint leave the
// health report byte for byte as it was: nothing in it moves with a
// request, so it cannot tell the hints apart.
func TestHealthHidesActivity(t *testing.T) {
	sink := cibatest.StartSMTP(t, "127.0.0.1:0")
	s := newMailSite(t, mailOptions{smtpAddr: sink.Addr()}, limitsOption(Limits{HideUnknownUsers: true}))
	rep, rec := hlGet(t, s.harness, http.StatusOK)
	if rep.SMTP == nil {
		t.Fatalf("no smtp part: %s", rec.Body)
	}
	want := rec.Body.String()
	same := func(after string) {
		t.Helper()
		if _, rec := hlGet(t, s.harness, http.StatusOK); rec.Body.String() != want {
			t.Errorf("after %s the report changed:\n before %s\n after  %s", after, want, rec.Body)
		}
	}

	s.authorize("cc", "login_hint", "mallory@example.org")
	same("a request for an unknown hint")
	s.authorize("cc", "login_hint", "alice")
	same("a request for a real user") // its mail queued, or being sent
	sink.Wait(t, 1, 10*time.Second)
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	cibatest.WaitFor(t, 5*time.Second, "the delivery to be counted", func() bool { return mxValue(t, s.reg, cibatest.FamilyMails, "result", "sent") == 1 })
	same("the real user's mail was sent")
	s.authorize("cc", "login_hint", "nobody")
	same("another request for an unknown hint")
}
