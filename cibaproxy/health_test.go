package cibaproxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// hlReport is the health answer, strictly decoded: pointers tell absent
// fields apart.
type hlReport struct {
	Status string `json:"status"`
	Store  *struct {
		OK      *bool  `json:"ok"`
		Pending *int64 `json:"pending"`
	} `json:"store"`
	Upstream *struct {
		OK *bool `json:"ok"`
	} `json:"upstream"`
	SMTP *struct {
		OK          *bool      `json:"ok"`
		Queue       *int       `json:"queue"`
		LastSuccess *time.Time `json:"last_success"`
		LastFailure *time.Time `json:"last_failure"`
	} `json:"smtp"`
}

// hlGet asks for the health report, checks the answer's form and that it
// names no host, address or error, and decodes it.
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
	var rep hlReport
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("health report %s: %v", body, err)
	}
	if rep.Store == nil || rep.Store.OK == nil || rep.Store.Pending == nil || rep.Upstream == nil || rep.Upstream.OK == nil {
		t.Fatalf("health report %s lacks store.ok, store.pending or upstream.ok", body)
	}
	return &rep, rec
}

// TestHealth: 200 with the store's pending count and the upstream's state;
// no smtp block without the e-mail authenticator; HEAD like GET without a
// body; other methods 405.
func TestHealth(t *testing.T) {
	h := newHarness(t)
	rep, _ := hlGet(t, h, http.StatusOK)
	if rep.Status != "ok" || !*rep.Store.OK || *rep.Store.Pending != 0 || !*rep.Upstream.OK || rep.SMTP != nil {
		t.Errorf("report %+v, want ok with 0 pending, upstream ok, no smtp", rep)
	}
	h.authorize("cc")
	id := h.authorize("cc", "login_hint", "bob")
	h.authorize("other")
	h.approve(id)
	if rep, _ := hlGet(t, h, http.StatusOK); *rep.Store.Pending != 2 {
		t.Errorf("pending %d, want 2", *rep.Store.Pending)
	}

	rec := h.serve(httptest.NewRequest(http.MethodHead, testPublic+HealthPath, nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q; want 200, no body, the GET's length",
			rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"))
	}
	rec = h.serve(httptest.NewRequest(http.MethodPost, testPublic+HealthPath, strings.NewReader("")))
	cibatest.WantOAuthError(t, rec, http.StatusMethodNotAllowed, oauth.CodeInvalidRequest)
	if a := rec.Header().Get("Allow"); !strings.Contains(a, "GET") {
		t.Errorf("Allow %q", a)
	}
}

// TestHealthUpstreamDown: the upstream's discovery failing is reported
// (upstream.ok false, status degraded) with 200; it is checked afresh on
// each request, so recovery shows at once.
func TestHealthUpstreamDown(t *testing.T) {
	h := newHarness(t)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "ok" || !*rep.Upstream.OK {
		t.Fatalf("report %+v, want ok", rep)
	}
	h.upstream.SetDiscoveryStatus(http.StatusServiceUnavailable)
	rep, _ := hlGet(t, h, http.StatusOK)
	if rep.Status != "degraded" || *rep.Upstream.OK || !*rep.Store.OK {
		t.Errorf("upstream down: status %q upstream.ok %v store.ok %v; want degraded, false, true",
			rep.Status, *rep.Upstream.OK, *rep.Store.OK)
	}
	h.upstream.SetDiscoveryStatus(0)
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "ok" || !*rep.Upstream.OK {
		t.Errorf("upstream back: %+v, want ok", rep)
	}
	// the upstream gone altogether (connection refused)
	h.upstream.Close()
	if rep, _ := hlGet(t, h, http.StatusOK); rep.Status != "degraded" || *rep.Upstream.OK {
		t.Errorf("upstream gone: status %q upstream.ok %v; want degraded, false", rep.Status, *rep.Upstream.OK)
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
// block: ok before any delivery; after a failed delivery ok false (status
// degraded, still 200) with the queue length and the failure's time; once
// a mail is delivered ok again, the queue empty, the success's time set.
func TestHealthSMTP(t *testing.T) {
	addr := cibatest.FreeAddr(t) // nothing listens yet: the SMTP server is down
	s := newMailSite(t, mailOptions{smtpAddr: addr})
	rep, _ := hlGet(t, s.harness, http.StatusOK, addr)
	if rep.SMTP == nil || rep.SMTP.OK == nil || rep.SMTP.Queue == nil {
		t.Fatalf("no smtp block with ok and queue: %+v", rep)
	}
	if rep.Status != "ok" || !*rep.SMTP.OK || *rep.SMTP.Queue != 0 || rep.SMTP.LastSuccess != nil || rep.SMTP.LastFailure != nil {
		t.Errorf("before any delivery: %q smtp %+v; want ok, queue 0, no times", rep.Status, *rep.SMTP)
	}

	before := s.clock.Now()
	s.authorize("cc")
	s.authorize("cc", "login_hint", "bob")
	cibatest.WaitFor(t, 10*time.Second, "a failed delivery", func() bool {
		return !s.backend.Outbox.Health(email.Kind).LastFailure.IsZero()
	})
	// Both mails must have failed once before the server comes up.
	cibatest.WaitFor(t, 10*time.Second, "both deliveries to fail", func() bool { return mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry") >= 2 })
	rep, _ = hlGet(t, s.harness, http.StatusOK, addr)
	if rep.Status != "degraded" || *rep.SMTP.OK || *rep.SMTP.Queue != 2 || rep.SMTP.LastFailure == nil || rep.SMTP.LastSuccess != nil {
		t.Errorf("SMTP down: %q smtp %+v; want degraded, ok false, queue 2, a last_failure only", rep.Status, *rep.SMTP)
	} else if rep.SMTP.LastFailure.Before(before.Add(-time.Second)) {
		t.Errorf("last_failure %v is before the request (%v)", rep.SMTP.LastFailure, before)
	}
	if *rep.Store.Pending != 2 || !*rep.Upstream.OK {
		t.Errorf("store pending %d upstream ok %v, want 2 and true", *rep.Store.Pending, *rep.Upstream.OK)
	}

	// the server comes up; the retries deliver
	sink := cibatest.StartSMTP(t, addr)
	sink.Wait(t, 2, 15*time.Second)
	cibatest.WaitFor(t, 10*time.Second, "the outbox to empty", func() bool { return len(outboxItems(t, s.store)) == 0 })
	// The outcome is counted just after the item leaves the outbox.
	cibatest.WaitFor(t, 5*time.Second, "the deliveries to be counted", func() bool { return mxValue(t, s.reg, cibatest.FamilyMails, "result", "sent") == 2 })
	rep, _ = hlGet(t, s.harness, http.StatusOK, addr)
	if rep.Status != "ok" || !*rep.SMTP.OK || *rep.SMTP.Queue != 0 || rep.SMTP.LastSuccess == nil || rep.SMTP.LastFailure == nil {
		t.Fatalf("SMTP back: %q smtp %+v; want ok, queue 0, both times", rep.Status, *rep.SMTP)
	}
	if !rep.SMTP.LastSuccess.After(*rep.SMTP.LastFailure) {
		t.Errorf("last_success %v not after last_failure %v", rep.SMTP.LastSuccess, rep.SMTP.LastFailure)
	}
	cibatest.WantFamily(t, s.reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2, "result=retry": mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry")})
	if n := mxValue(t, s.reg, cibatest.FamilyMails, "result", "retry"); n < 2 {
		t.Errorf("mails_total{result=retry} = %v, want at least 2", n)
	}
}
