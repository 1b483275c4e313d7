package cibaproxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// ---- reading metrics back ----

// mxLabels turns "k", "v", ... into a label map, leaving out empty values.
func mxLabels(kv ...string) map[string]string {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

// mxFind returns the series of name with exactly these labels.
func mxFind(t *testing.T, g prometheus.Gatherer, name string, kv ...string) (cibatest.Series, bool) {
	t.Helper()
	want := cibatest.LabelKey(mxLabels(kv...))
	for _, s := range cibatest.Gather(t, g)[name] {
		if cibatest.LabelKey(s.Labels) == want {
			return s, true
		}
	}
	return cibatest.Series{}, false
}

// mxValue returns the value of a counter or gauge series; an absent
// series counts 0.
func mxValue(t *testing.T, g prometheus.Gatherer, name string, kv ...string) float64 {
	t.Helper()
	s, _ := mxFind(t, g, name, kv...)
	return s.Value
}

// mxWant checks the value of a counter or gauge series.
func mxWant(t *testing.T, g prometheus.Gatherer, want float64, name string, kv ...string) {
	t.Helper()
	if got := mxValue(t, g, name, kv...); got != want {
		t.Errorf("%s{%s} = %v, want %v", name, cibatest.LabelKey(mxLabels(kv...)), got, want)
	}
}

// mxWantGauge checks a gauge series, which must be present.
func mxWantGauge(t *testing.T, g prometheus.Gatherer, want float64, name string, kv ...string) {
	t.Helper()
	s, ok := mxFind(t, g, name, kv...)
	if !ok {
		t.Errorf("%s{%s} is not exposed", name, cibatest.LabelKey(mxLabels(kv...)))
		return
	}
	if s.Value != want {
		t.Errorf("%s{%s} = %v, want %v", name, cibatest.LabelKey(mxLabels(kv...)), s.Value, want)
	}
}

// mxWantHist checks the count and sum of a histogram series.
func mxWantHist(t *testing.T, g prometheus.Gatherer, count uint64, sum float64, name string, kv ...string) {
	t.Helper()
	s, _ := mxFind(t, g, name, kv...)
	if s.Count != count || (sum >= 0 && s.Sum != sum) {
		t.Errorf("%s{%s}: count %d sum %v, want count %d sum %v", name, cibatest.LabelKey(mxLabels(kv...)), s.Count, s.Sum, count, sum)
	}
}

// Page outcomes of the approval page's requests_total series.
var mxPageOutcomes = []string{"shown", "approved", "denied", "mismatch", "decided", "expired", "unknown", "forbidden", "invalid", "method", "error"}

// mxAllowed are the label values each label may take: small fixed sets.
func mxAllowed(clients ...string) map[string][]string {
	outcomes := []string{"ok", oauth.CodeInvalidRequest, oauth.CodeInvalidClient, oauth.CodeInvalidGrant, oauth.CodeUnauthorizedClient,
		oauth.CodeUnsupportedGrantType, oauth.CodeInvalidScope, oauth.CodeAccessDenied, oauth.CodeServerError, oauth.CodeTemporarilyUnavailable,
		oauth.CodeAuthorizationPending, oauth.CodeSlowDown, oauth.CodeExpiredToken, oauth.CodeExpiredLoginHintToken, oauth.CodeUnknownUserID,
		oauth.CodeMissingUserCode, oauth.CodeInvalidUserCode, oauth.CodeInvalidBindingMessage}
	return map[string][]string{
		"endpoint": {"backchannel", "token", "approval", "health"},
		"outcome":  append(outcomes, mxPageOutcomes...),
		"client":   clients,
		"decision": {"approved", "denied"},
		"result":   {"ok", "refused", "failed", "sent", "retry", "expired"},
		"reason":   {metrics.SlowDownEarly, metrics.SlowDownOverlap, metrics.SlowDownUpstream},
		"limit":    {"client_rate", "ip_rate", "user_pending"},
		"kind":     {"mail", "ping", "channel"},
	}
}

// mxCheckLabels scans every label value of every series: each must come
// from its label's fixed set (clients: the client ids allowed, none unless
// the client label is on), and none may hold a forbidden string (a user,
// an address, an IP, a request id).
func mxCheckLabels(t *testing.T, g prometheus.Gatherer, forbidden []string, clients ...string) {
	t.Helper()
	allowed := mxAllowed(clients...)
	n := 0
	for name, series := range cibatest.Gather(t, g) {
		if !strings.HasPrefix(name, "caddy_ciba_") {
			t.Errorf("metric %s lacks the caddy_ciba_ prefix", name)
		}
		for _, s := range series {
			for k, v := range s.Labels {
				n++
				set, ok := allowed[k]
				if !ok {
					t.Errorf("%s has label %s=%q outside the fixed label names", name, k, v)
					continue
				}
				if !slices.Contains(set, v) {
					t.Errorf("%s has %s=%q, not one of %q", name, k, v, set)
				}
				for _, f := range forbidden {
					if f != "" && strings.Contains(strings.ToLower(v), strings.ToLower(f)) {
						t.Errorf("%s has %s=%q, which holds %q", name, k, v, f)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("no labelled series were gathered")
	}
}

// ---- a harness with metrics ----

// mxRig is a harness (fake clock, test minter and authenticator) whose
// server records into its own Metrics, registered into a fresh registry,
// with the harness's store watched.
type mxRig struct {
	*harness
	m   *metrics.Metrics
	reg *prometheus.Registry
}

func newMXRig(t *testing.T, opts ...harnessOption) *mxRig {
	t.Helper()
	m := metrics.New()
	opts = append([]harnessOption{func(c *Config) { c.Metrics = m }}, opts...)
	h := newHarness(t, opts...)
	reg := cibatest.Registry(t, m.Collectors()...)
	t.Cleanup(m.Watch(h.store))
	return &mxRig{harness: h, m: m, reg: reg}
}

// serverOn builds another Server of the rig's site, on a backend of its
// own over st (the rig's store, or a wrapper of it), as a second site on
// the same store (or a reload overlap) would have.
func (r *mxRig) serverOn(st store.Store) *Server {
	r.t.Helper()
	cfg := r.cfg
	b := NewBackend(st, nil, r.clock.Now)
	r.t.Cleanup(b.Outbox.Close)
	cfg.Backend = b
	srv, err := New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(srv.Close)
	return srv
}

// pollHeld polls id as cc through the rig's server in the background and
// waits until the poll reached the minter, held (testMinter.holdFirst)
// until entered is closed; done then gives the poll's status.
func (r *mxRig) pollHeld(id string, entered <-chan struct{}) (done <-chan int) {
	r.t.Helper()
	ch := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		r.srv.Handle(rec, mxPollRequest(id))
		ch <- rec.Code
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		r.t.Fatal("the first poll never reached the minter")
	}
	return ch
}

// mxRequest builds a form POST to path with Basic credentials id:secret.
func mxRequest(path, id, secret string, form url.Values) *http.Request {
	req := httptest.NewRequest(http.MethodPost, testPublic+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	return req
}

// mxPollRequest builds a CIBA poll of id as client cc.
func mxPollRequest(id string) *http.Request {
	return mxRequest(testTokenURL, "cc", "cc-secret", url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
}

// TestMetricsScriptedFlow runs requests, polls, decisions, an expiry and
// upstream failures through the server with a fake clock, and checks every
// series that results, exactly: requests by endpoint and outcome, the
// pending gauge up and down, decisions and their times, exchanges by
// result, slow_down by reason. No label holds a client, user, address or id.
func TestMetricsScriptedFlow(t *testing.T) {
	r := newMXRig(t)
	ctx := context.Background()
	var ids []string
	authorize := func(kv ...string) string {
		id := r.authorize("cc", kv...)
		ids = append(ids, id)
		return id
	}

	mxWantGauge(t, r.reg, 0, cibatest.FamilyPending)
	id1 := authorize()
	mxWantGauge(t, r.reg, 1, cibatest.FamilyPending)
	cibatest.WantOAuthError(t, r.poll("cc", id1), 400, oauth.CodeAuthorizationPending)
	cibatest.WantOAuthError(t, r.poll("cc", id1), 400, oauth.CodeSlowDown) // early
	cibatest.WantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory")), 400, oauth.CodeUnknownUserID)
	cibatest.WantOAuthError(t, r.poll("cc", "no-such-request"), 400, oauth.CodeInvalidGrant)
	cibatest.WantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, oauth.CodeInvalidClient)
	mxWantGauge(t, r.reg, 1, cibatest.FamilyPending)

	// approved after 42 s (fake clock), then redeemed
	r.clock.Advance(42 * time.Second)
	if _, err := r.srv.Decide(ctx, store.KeyOf(id1), authn.Approve); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, cibatest.FamilyPending)
	if rec := r.poll("cc", id1); rec.Code != http.StatusOK {
		t.Fatalf("redeeming: %d %s", rec.Code, rec.Body)
	}

	// denied after 7 s
	id2 := authorize("login_hint", "bob")
	mxWantGauge(t, r.reg, 1, cibatest.FamilyPending)
	r.clock.Advance(7 * time.Second)
	if _, err := r.srv.Decide(ctx, store.KeyOf(id2), authn.Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, cibatest.FamilyPending)
	cibatest.WantOAuthError(t, r.poll("cc", id2), 400, oauth.CodeAccessDenied)

	// expires undecided: counted until swept
	id3 := authorize()
	mxWantGauge(t, r.reg, 1, cibatest.FamilyPending)
	r.clock.Advance(DefaultRequestTTL + time.Second)
	if _, err := r.backend.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, cibatest.FamilyPending)
	cibatest.WantOAuthError(t, r.poll("cc", id3), 400, oauth.CodeExpiredToken)

	// approved after 3 s; the upstream fails, refuses, then mints
	id4 := authorize()
	r.clock.Advance(3 * time.Second)
	r.approve(id4)
	r.minter.set(&upstream.MintError{Err: errors.New("connection refused")})
	cibatest.WantOAuthError(t, r.poll("cc", id4), 400, oauth.CodeSlowDown)
	r.minter.set(&upstream.MintError{Refused: true, UpstreamError: "invalid_client", Err: errors.New("401")})
	r.clock.Advance(15 * time.Second)
	cibatest.WantOAuthError(t, r.poll("cc", id4), 500, oauth.CodeServerError)
	r.minter.set(nil)
	r.clock.Advance(20 * time.Second)
	if rec := r.poll("cc", id4); rec.Code != http.StatusOK {
		t.Fatalf("redeeming after the upstream recovered: %d %s", rec.Code, rec.Body)
	}
	mxWantGauge(t, r.reg, 0, cibatest.FamilyPending)

	cibatest.WantFamily(t, r.reg, cibatest.FamilyRequests, map[string]float64{
		"endpoint=backchannel,outcome=ok":              4,
		"endpoint=backchannel,outcome=unknown_user_id": 1,
		"endpoint=backchannel,outcome=invalid_client":  1,
		"endpoint=token,outcome=authorization_pending": 1,
		"endpoint=token,outcome=slow_down":             2,
		"endpoint=token,outcome=invalid_grant":         1,
		"endpoint=token,outcome=ok":                    2,
		"endpoint=token,outcome=access_denied":         1,
		"endpoint=token,outcome=expired_token":         1,
		"endpoint=token,outcome=server_error":          1,
	})
	cibatest.WantFamily(t, r.reg, cibatest.FamilyDecisions, map[string]float64{"decision=approved": 2, "decision=denied": 1})
	mxWantHist(t, r.reg, 2, 42+3, cibatest.FamilyDecSecs, "decision", "approved")
	mxWantHist(t, r.reg, 1, 7, cibatest.FamilyDecSecs, "decision", "denied")
	cibatest.WantFamily(t, r.reg, cibatest.FamilySlowDowns, map[string]float64{"reason=early": 1, "reason=upstream": 1})
	cibatest.WantFamily(t, r.reg, cibatest.FamilyExchanges, map[string]float64{"result=ok": 2, "result=refused": 1, "result=failed": 1})
	mxWantHist(t, r.reg, 4, -1, cibatest.FamilyExchSecs)
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRefusals, map[string]float64{})

	forbidden := append([]string{"alice", "bob", "mallory", "example", "@", "192.0.2", "link-"}, ids...)
	for _, id := range ids {
		forbidden = append(forbidden, store.KeyOf(id).Short())
	}
	mxCheckLabels(t, r.reg, forbidden)
}

// TestMetricsClientLabel: with MetricsClientLabel the requests and
// decisions carry the client id; an unauthenticated request none.
func TestMetricsClientLabel(t *testing.T) {
	r := newMXRig(t, func(c *Config) { c.MetricsClientLabel = true })
	id := r.authorize("cc")
	r.authorize("other")
	cibatest.WantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, oauth.CodeInvalidClient)
	r.clock.Advance(2 * time.Second)
	r.approve(id)
	cibatest.WantFamily(t, r.reg, cibatest.FamilyRequests, map[string]float64{
		"client=cc,endpoint=backchannel,outcome=ok":    1,
		"client=other,endpoint=backchannel,outcome=ok": 1,
		"endpoint=backchannel,outcome=invalid_client":  1,
	})
	cibatest.WantFamily(t, r.reg, cibatest.FamilyDecisions, map[string]float64{"client=cc,decision=approved": 1})
	// the histogram has no client label even so
	mxWantHist(t, r.reg, 1, 2, cibatest.FamilyDecSecs, "decision", "approved")
	mxCheckLabels(t, r.reg, []string{"alice", "@", "192.0.2"}, "", "cc", "other")
}

// TestMetricsSlowDownOverlap: a poll overlapping another poll of the same
// request (one server: the poll tracker; two servers on one store: the
// claim in the store) is counted as slow_down reason overlap.
func TestMetricsSlowDownOverlap(t *testing.T) {
	r := newMXRig(t)
	entered, release := r.minter.holdFirst()

	// a second server on the same store with its own poll tracker, as two
	// sites (or a reload overlap) would have
	srv2 := r.serverOn(r.store)

	id := r.authorize("cc")
	r.approve(id)
	done := r.pollHeld(id, entered)
	// overlapping on the same server: the tracker sees the poll in flight
	cibatest.WantOAuthError(t, r.poll("cc", id), 400, oauth.CodeSlowDown)
	mxWant(t, r.reg, 1, cibatest.FamilySlowDowns, "reason", metrics.SlowDownOverlap)
	// overlapping through the other server: the claim in the store
	rec := httptest.NewRecorder()
	srv2.Handle(rec, mxPollRequest(id))
	cibatest.WantOAuthError(t, rec, 400, oauth.CodeSlowDown)
	mxWant(t, r.reg, 2, cibatest.FamilySlowDowns, "reason", metrics.SlowDownOverlap)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	cibatest.WantFamily(t, r.reg, cibatest.FamilySlowDowns, map[string]float64{"reason=overlap": 2})
	cibatest.WantFamily(t, r.reg, cibatest.FamilyExchanges, map[string]float64{"result=ok": 1})
	mxWant(t, r.reg, 2, cibatest.FamilyRequests, "endpoint", "token", "outcome", oauth.CodeSlowDown)
	mxWant(t, r.reg, 1, cibatest.FamilyRequests, "endpoint", "token", "outcome", "ok")
}

// TestMetricsPendingAfterRestart: the pending gauge reads the count kept in
// the store, so a fresh process (new backend, new metrics) on the same
// directory exposes the right value before any request, and the count
// stays right through later expiries and decisions.
func TestMetricsPendingAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h := newHarnessIn(t, dir)
	a1 := h.authorize("cc")
	a2 := h.authorize("cc", "login_hint", "bob")
	a3 := h.authorize("cc", "requested_expiry", "10")
	h.authorize("other")
	h.approve(a1)
	if err := h.backend.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := badgerstore.Open(dir, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, nil, h.clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	m := metrics.New()
	reg := cibatest.Registry(t, m.Collectors()...)
	unwatch := m.Watch(b.Store)
	mxWantGauge(t, reg, 3, cibatest.FamilyPending)
	mxWantGauge(t, reg, 0, cibatest.FamilyQueued, "kind", "mail")

	// a3 expires: swept, it is no longer pending
	h.clock.Advance(11 * time.Second)
	if _, err := b.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, reg, 2, cibatest.FamilyPending)

	// a server on the reopened store decides a2
	cfg := h.cfg
	cfg.Backend, cfg.Metrics = b, m
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if _, err := srv.Decide(context.Background(), store.KeyOf(a2), authn.Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, reg, 1, cibatest.FamilyPending)
	if _, err := srv.Decide(context.Background(), store.KeyOf(a3), authn.Approve); !errors.Is(err, authn.ErrExpired) {
		t.Errorf("deciding the expired a3: %v, want authn.ErrExpired", err)
	}
	mxWantGauge(t, reg, 1, cibatest.FamilyPending)

	// unwatched, the backend no longer adds to the gauge
	unwatch()
	mxWantGauge(t, reg, 0, cibatest.FamilyPending)
}

// TestMetricsPendingTwoBackends: the gauge sums the watched backends.
func TestMetricsPendingTwoBackends(t *testing.T) {
	r := newMXRig(t)
	h2 := newHarness(t)
	t.Cleanup(r.m.Watch(h2.store))
	r.authorize("cc")
	h2.authorize("cc")
	h2.authorize("cc", "login_hint", "bob")
	mxWantGauge(t, r.reg, 3, cibatest.FamilyPending)
}

// TestMetricsOutbox: a real outbox on the harness's store, observed by the
// metrics: mails sent, retried, failed for good and expired; pings sent;
// the queued gauge by kind before and after.
func TestMetricsOutbox(t *testing.T) {
	h := newHarness(t)
	m := metrics.New()
	reg := cibatest.Registry(t, m.Collectors()...)
	h.backend.Outbox.Observe(m.Outbox)
	t.Cleanup(m.Watch(h.store))
	ctx := context.Background()
	now := h.clock.Now()
	enqueue := func(kind store.Kind, sender, name string, next, notAfter time.Time) {
		t.Helper()
		err := h.store.Enqueue(ctx, &store.OutboxItem{
			ID: store.ItemID{Kind: kind, Request: store.KeyOf(name)}, Sender: sender,
			Payload: []byte(name), Next: next, NotAfter: notAfter,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	enqueue(email.Kind, "mx", "ok", now, now.Add(5*time.Minute))
	enqueue(email.Kind, "mx", "retry", now, now.Add(5*time.Minute))
	enqueue(email.Kind, "mx", "permanent", now, now.Add(5*time.Minute))
	enqueue(email.Kind, "mx", "late", now.Add(time.Hour), now.Add(time.Second))
	enqueue(ping.Kind, "mxping", "ping", now, now.Add(5*time.Minute))
	mxWantGauge(t, reg, 4, cibatest.FamilyQueued, "kind", "mail")
	mxWantGauge(t, reg, 1, cibatest.FamilyQueued, "kind", "ping")

	var mu sync.Mutex
	attempts := map[string]int{}
	h.backend.Outbox.Register(email.Kind, "mx", outbox.DelivererFunc(func(_ context.Context, it *store.OutboxItem) error {
		mu.Lock()
		attempts[string(it.Payload)]++
		n := attempts[string(it.Payload)]
		mu.Unlock()
		switch string(it.Payload) {
		case "retry":
			if n == 1 {
				return errors.New("421 try again later")
			}
		case "permanent":
			return &outbox.PermanentError{Err: errors.New("550 no such mailbox")}
		}
		return nil
	}))
	value := func(name string, kv ...string) func() bool {
		want := 1.0
		return func() bool { return mxValue(t, reg, name, kv...) >= want }
	}
	cibatest.WaitFor(t, 10*time.Second, "the first attempts", func() bool {
		return value(cibatest.FamilyMails, "result", "sent")() && value(cibatest.FamilyMails, "result", "retry")() && value(cibatest.FamilyMails, "result", "failed")()
	})
	cibatest.WantFamily(t, reg, cibatest.FamilyMails, map[string]float64{"result=sent": 1, "result=retry": 1, "result=failed": 1})
	mxWantGauge(t, reg, 2, cibatest.FamilyQueued, "kind", "mail") // retry (waiting) and late

	// the retry is due after 1 s, the late mail's request expired
	h.clock.Advance(2 * time.Second)
	h.backend.Outbox.Wake()
	cibatest.WaitFor(t, 10*time.Second, "the retry and the expiry", func() bool {
		return mxValue(t, reg, cibatest.FamilyMails, "result", "sent") >= 2 && value(cibatest.FamilyMails, "result", "expired")()
	})
	cibatest.WantFamily(t, reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2, "result=retry": 1, "result=failed": 1, "result=expired": 1})
	mxWantGauge(t, reg, 0, cibatest.FamilyQueued, "kind", "mail")

	h.backend.Outbox.Register(ping.Kind, "mxping", outbox.DelivererFunc(func(context.Context, *store.OutboxItem) error { return nil }))
	cibatest.WaitFor(t, 10*time.Second, "the ping", value(cibatest.FamilyPings, "result", "sent"))
	cibatest.WantFamily(t, reg, cibatest.FamilyPings, map[string]float64{"result=sent": 1})
	mxWantGauge(t, reg, 0, cibatest.FamilyQueued, "kind", "ping")
	mxCheckLabels(t, reg, []string{"mx", "@"})
}

// TestMetricsNil: a server without metrics (nil *metrics.Metrics, which
// records nothing) works; the nil collectors themselves are checked in
// package metrics.
func TestMetricsNil(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits = Limits{ClientRate: 1} })
	id := h.authorize("cc")
	cibatest.WantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm()), 429, oauth.CodeAccessDenied)
	h.approve(id)
	if rec := h.poll("cc", id); rec.Code != http.StatusOK {
		t.Fatalf("poll without metrics: %d %s", rec.Code, rec.Body)
	}
}

// mxRetryingStore runs every Update's fn once more before the real update,
// on a copy, as the Store contract allows (fn is retried on conflicting
// writes): a metric counted inside fn would count twice.
type mxRetryingStore struct{ store.Store }

func (s mxRetryingStore) Update(ctx context.Context, key store.RequestKey, fn func(*store.AuthRequest) error) (*store.AuthRequest, error) {
	if r, err := s.Store.Get(ctx, key); err == nil {
		_ = fn(r) // the attempt that lost to a conflicting write
	}
	return s.Store.Update(ctx, key, fn)
}

// TestMetricsOverlapCountedOnceWhenUpdateRetries: a poll that finds the
// grant claimed by another poll is one slow_down, however often the store
// runs the update function.
func TestMetricsOverlapCountedOnceWhenUpdateRetries(t *testing.T) {
	r := newMXRig(t)
	entered, release := r.minter.holdFirst()
	srv2 := r.serverOn(mxRetryingStore{r.store})
	id := r.authorize("cc")
	r.approve(id)
	done := r.pollHeld(id, entered)
	rec := httptest.NewRecorder()
	srv2.Handle(rec, mxPollRequest(id))
	cibatest.WantOAuthError(t, rec, 400, oauth.CodeSlowDown)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	cibatest.WantFamily(t, r.reg, cibatest.FamilySlowDowns, map[string]float64{"reason=overlap": 1})
	mxWant(t, r.reg, 1, cibatest.FamilyRequests, "endpoint", "token", "outcome", oauth.CodeSlowDown)
}
