package cibaproxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// ---- reading metrics back ----

// mxRegistry is a fresh pedantic registry (it checks that what a collector
// collects matches what it describes) holding m's collectors.
func mxRegistry(t *testing.T, m *Metrics) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range m.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatalf("registering %T: %v", c, err)
		}
	}
	return reg
}

// mxSeries is one gathered series: its labels (empty values left out, as
// the exposition format treats them as absent), its value for a counter or
// gauge, its count and sum for a histogram.
type mxSeries struct {
	labels map[string]string
	value  float64
	count  uint64
	sum    float64
}

// mxGather returns the series of every family by name.
func mxGather(t *testing.T, g prometheus.Gatherer) map[string][]mxSeries {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := make(map[string][]mxSeries, len(mfs))
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := mxSeries{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != "" {
					s.labels[lp.GetName()] = lp.GetValue()
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s.count = m.GetHistogram().GetSampleCount()
				s.sum = m.GetHistogram().GetSampleSum()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
			out[mf.GetName()] = append(out[mf.GetName()], s)
		}
	}
	return out
}

// mxKey writes a label set as "k=v,k=v", sorted by name.
func mxKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

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
func mxFind(t *testing.T, g prometheus.Gatherer, name string, kv ...string) (mxSeries, bool) {
	t.Helper()
	want := mxKey(mxLabels(kv...))
	for _, s := range mxGather(t, g)[name] {
		if mxKey(s.labels) == want {
			return s, true
		}
	}
	return mxSeries{}, false
}

// mxValue returns the value of a counter or gauge series; an absent
// series counts 0.
func mxValue(t *testing.T, g prometheus.Gatherer, name string, kv ...string) float64 {
	t.Helper()
	s, _ := mxFind(t, g, name, kv...)
	return s.value
}

// mxWant checks the value of a counter or gauge series.
func mxWant(t *testing.T, g prometheus.Gatherer, want float64, name string, kv ...string) {
	t.Helper()
	if got := mxValue(t, g, name, kv...); got != want {
		t.Errorf("%s{%s} = %v, want %v", name, mxKey(mxLabels(kv...)), got, want)
	}
}

// mxWantGauge checks a gauge series, which must be present.
func mxWantGauge(t *testing.T, g prometheus.Gatherer, want float64, name string, kv ...string) {
	t.Helper()
	s, ok := mxFind(t, g, name, kv...)
	if !ok {
		t.Errorf("%s{%s} is not exposed", name, mxKey(mxLabels(kv...)))
		return
	}
	if s.value != want {
		t.Errorf("%s{%s} = %v, want %v", name, mxKey(mxLabels(kv...)), s.value, want)
	}
}

// mxFamily returns every series of a counter or gauge family as
// "labels" → value.
func mxFamily(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range mxGather(t, g)[name] {
		out[mxKey(s.labels)] = s.value
	}
	return out
}

// mxWantFamily checks every series of a family: none missing, none extra.
func mxWantFamily(t *testing.T, g prometheus.Gatherer, name string, want map[string]float64) {
	t.Helper()
	got := mxFamily(t, g, name)
	if !maps.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", name, mxFormat(got), mxFormat(want))
	}
}

func mxFormat(m map[string]float64) string {
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "{%s}=%v ", k, m[k])
	}
	return b.String()
}

// mxWantHist checks the count and sum of a histogram series.
func mxWantHist(t *testing.T, g prometheus.Gatherer, count uint64, sum float64, name string, kv ...string) {
	t.Helper()
	s, _ := mxFind(t, g, name, kv...)
	if s.count != count || (sum >= 0 && s.sum != sum) {
		t.Errorf("%s{%s}: count %d sum %v, want count %d sum %v", name, mxKey(mxLabels(kv...)), s.count, s.sum, count, sum)
	}
}

// Page outcomes of the approval page's requests_total series.
var mxPageOutcomes = []string{"shown", "approved", "denied", "mismatch", "decided", "expired", "unknown", "forbidden", "invalid", "method", "error"}

// mxAllowed are the label values each label may take: small fixed sets.
func mxAllowed(clients ...string) map[string][]string {
	outcomes := []string{"ok", CodeInvalidRequest, CodeInvalidClient, CodeInvalidGrant, CodeUnauthorizedClient,
		CodeUnsupportedGrantType, CodeInvalidScope, CodeAccessDenied, CodeServerError, CodeTemporarilyUnavailable,
		CodeAuthorizationPending, CodeSlowDown, CodeExpiredToken, CodeExpiredLoginHintToken, CodeUnknownUserID,
		CodeMissingUserCode, CodeInvalidUserCode, CodeInvalidBindingMessage}
	return map[string][]string{
		"endpoint": {"backchannel", "token", "approval", "health"},
		"outcome":  append(outcomes, mxPageOutcomes...),
		"client":   clients,
		"decision": {"approved", "denied"},
		"result":   {"ok", "refused", "failed", "sent", "retry", "expired"},
		"reason":   {SlowDownEarly, SlowDownOverlap, SlowDownUpstream},
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
	for name, series := range mxGather(t, g) {
		if !strings.HasPrefix(name, "caddy_ciba_") {
			t.Errorf("metric %s lacks the caddy_ciba_ prefix", name)
		}
		for _, s := range series {
			for k, v := range s.labels {
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
// with the harness's backend watched.
type mxRig struct {
	*harness
	m   *Metrics
	reg *prometheus.Registry
}

func newMXRig(t *testing.T, opts ...harnessOption) *mxRig {
	t.Helper()
	m := NewMetrics()
	opts = append([]harnessOption{func(c *Config) { c.Metrics = m }}, opts...)
	h := newHarness(t, opts...)
	reg := mxRegistry(t, m)
	t.Cleanup(m.Watch(h.backend))
	return &mxRig{harness: h, m: m, reg: reg}
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
	return mxRequest(testTokenURL, "cc", "cc-secret", url.Values{"grant_type": {GrantTypeCIBA}, "auth_req_id": {id}})
}

const (
	mxPending   = "caddy_ciba_pending_requests"
	mxRequests  = "caddy_ciba_requests_total"
	mxDecisions = "caddy_ciba_decisions_total"
	mxDecSecs   = "caddy_ciba_decision_seconds"
	mxExchanges = "caddy_ciba_upstream_exchanges_total"
	mxExchSecs  = "caddy_ciba_upstream_exchange_seconds"
	mxSlowDowns = "caddy_ciba_slow_down_total"
	mxRefusals  = "caddy_ciba_limit_refusals_total"
	mxMails     = "caddy_ciba_mails_total"
	mxPings     = "caddy_ciba_notifications_total"
	mxQueued    = "caddy_ciba_outbox_queued"
)

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

	mxWantGauge(t, r.reg, 0, mxPending)
	id1 := authorize()
	mxWantGauge(t, r.reg, 1, mxPending)
	wantOAuthError(t, r.poll("cc", id1), 400, CodeAuthorizationPending)
	wantOAuthError(t, r.poll("cc", id1), 400, CodeSlowDown) // early
	wantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory")), 400, CodeUnknownUserID)
	wantOAuthError(t, r.poll("cc", "no-such-request"), 400, CodeInvalidGrant)
	wantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, CodeInvalidClient)
	mxWantGauge(t, r.reg, 1, mxPending)

	// approved after 42 s (fake clock), then redeemed
	r.clock.Advance(42 * time.Second)
	if _, err := r.srv.Decide(ctx, KeyOf(id1), Approve); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, mxPending)
	if rec := r.poll("cc", id1); rec.Code != http.StatusOK {
		t.Fatalf("redeeming: %d %s", rec.Code, rec.Body)
	}

	// denied after 7 s
	id2 := authorize("login_hint", "bob")
	mxWantGauge(t, r.reg, 1, mxPending)
	r.clock.Advance(7 * time.Second)
	if _, err := r.srv.Decide(ctx, KeyOf(id2), Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, mxPending)
	wantOAuthError(t, r.poll("cc", id2), 400, CodeAccessDenied)

	// expires undecided: counted until swept
	id3 := authorize()
	mxWantGauge(t, r.reg, 1, mxPending)
	r.clock.Advance(DefaultRequestTTL + time.Second)
	if _, err := r.backend.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, mxPending)
	wantOAuthError(t, r.poll("cc", id3), 400, CodeExpiredToken)

	// approved after 3 s; the upstream fails, refuses, then mints
	id4 := authorize()
	r.clock.Advance(3 * time.Second)
	r.approve(id4)
	r.minter.set(&MintError{Err: errors.New("connection refused")})
	wantOAuthError(t, r.poll("cc", id4), 400, CodeSlowDown)
	r.minter.set(&MintError{Refused: true, UpstreamError: "invalid_client", Err: errors.New("401")})
	r.clock.Advance(15 * time.Second)
	wantOAuthError(t, r.poll("cc", id4), 500, CodeServerError)
	r.minter.set(nil)
	r.clock.Advance(20 * time.Second)
	if rec := r.poll("cc", id4); rec.Code != http.StatusOK {
		t.Fatalf("redeeming after the upstream recovered: %d %s", rec.Code, rec.Body)
	}
	mxWantGauge(t, r.reg, 0, mxPending)

	mxWantFamily(t, r.reg, mxRequests, map[string]float64{
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
	mxWantFamily(t, r.reg, mxDecisions, map[string]float64{"decision=approved": 2, "decision=denied": 1})
	mxWantHist(t, r.reg, 2, 42+3, mxDecSecs, "decision", "approved")
	mxWantHist(t, r.reg, 1, 7, mxDecSecs, "decision", "denied")
	mxWantFamily(t, r.reg, mxSlowDowns, map[string]float64{"reason=early": 1, "reason=upstream": 1})
	mxWantFamily(t, r.reg, mxExchanges, map[string]float64{"result=ok": 2, "result=refused": 1, "result=failed": 1})
	mxWantHist(t, r.reg, 4, -1, mxExchSecs)
	mxWantFamily(t, r.reg, mxRefusals, map[string]float64{})

	forbidden := append([]string{"alice", "bob", "mallory", "example", "@", "192.0.2", "link-"}, ids...)
	for _, id := range ids {
		forbidden = append(forbidden, shortKey(KeyOf(id)))
	}
	mxCheckLabels(t, r.reg, forbidden)
}

// TestMetricsClientLabel: with MetricsClientLabel the requests and
// decisions carry the client id; an unauthenticated request none.
func TestMetricsClientLabel(t *testing.T) {
	r := newMXRig(t, func(c *Config) { c.MetricsClientLabel = true })
	id := r.authorize("cc")
	r.authorize("other")
	wantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, CodeInvalidClient)
	r.clock.Advance(2 * time.Second)
	r.approve(id)
	mxWantFamily(t, r.reg, mxRequests, map[string]float64{
		"client=cc,endpoint=backchannel,outcome=ok":    1,
		"client=other,endpoint=backchannel,outcome=ok": 1,
		"endpoint=backchannel,outcome=invalid_client":  1,
	})
	mxWantFamily(t, r.reg, mxDecisions, map[string]float64{"client=cc,decision=approved": 1})
	// the histogram has no client label even so
	mxWantHist(t, r.reg, 1, 2, mxDecSecs, "decision", "approved")
	mxCheckLabels(t, r.reg, []string{"alice", "@", "192.0.2"}, "", "cc", "other")
}

// TestMetricsSlowDownOverlap: a poll overlapping another poll of the same
// request (one server: the poll tracker; two servers on one store: the
// claim in the store) is counted as slow_down reason overlap.
func TestMetricsSlowDownOverlap(t *testing.T) {
	r := newMXRig(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.minter.mu.Lock()
	r.minter.hook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	r.minter.mu.Unlock()

	// a second server on the same store with its own poll tracker, as two
	// sites (or a reload overlap) would have
	cfg2 := r.cfg
	b2 := NewBackend(r.store, nil, r.clock.Now)
	t.Cleanup(b2.Outbox.Close)
	cfg2.Backend = b2
	srv2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}

	id := r.authorize("cc")
	r.approve(id)
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		r.srv.Handle(rec, mxPollRequest(id))
		done <- rec.Code
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first poll never reached the minter")
	}
	// overlapping on the same server: the tracker sees the poll in flight
	wantOAuthError(t, r.poll("cc", id), 400, CodeSlowDown)
	mxWant(t, r.reg, 1, mxSlowDowns, "reason", SlowDownOverlap)
	// overlapping through the other server: the claim in the store
	rec := httptest.NewRecorder()
	srv2.Handle(rec, mxPollRequest(id))
	wantOAuthError(t, rec, 400, CodeSlowDown)
	mxWant(t, r.reg, 2, mxSlowDowns, "reason", SlowDownOverlap)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	mxWantFamily(t, r.reg, mxSlowDowns, map[string]float64{"reason=overlap": 2})
	mxWantFamily(t, r.reg, mxExchanges, map[string]float64{"result=ok": 1})
	mxWant(t, r.reg, 2, mxRequests, "endpoint", "token", "outcome", CodeSlowDown)
	mxWant(t, r.reg, 1, mxRequests, "endpoint", "token", "outcome", "ok")
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

	st, err := OpenBadger(dir, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, nil, h.clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	m := NewMetrics()
	reg := mxRegistry(t, m)
	unwatch := m.Watch(b)
	mxWantGauge(t, reg, 3, mxPending)
	mxWantGauge(t, reg, 0, mxQueued, "kind", "mail")

	// a3 expires: swept, it is no longer pending
	h.clock.Advance(11 * time.Second)
	if _, err := b.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, reg, 2, mxPending)

	// a server on the reopened store decides a2
	cfg := h.cfg
	cfg.Backend, cfg.Metrics = b, m
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Decide(context.Background(), KeyOf(a2), Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, reg, 1, mxPending)
	if _, err := srv.Decide(context.Background(), KeyOf(a3), Approve); !errors.Is(err, ErrExpired) {
		t.Errorf("deciding the expired a3: %v, want ErrExpired", err)
	}
	mxWantGauge(t, reg, 1, mxPending)

	// unwatched, the backend no longer adds to the gauge
	unwatch()
	mxWantGauge(t, reg, 0, mxPending)
}

// TestMetricsPendingTwoBackends: the gauge sums the watched backends.
func TestMetricsPendingTwoBackends(t *testing.T) {
	r := newMXRig(t)
	h2 := newHarness(t)
	t.Cleanup(r.m.Watch(h2.backend))
	r.authorize("cc")
	h2.authorize("cc")
	h2.authorize("cc", "login_hint", "bob")
	mxWantGauge(t, r.reg, 3, mxPending)
}

// TestMetricsOutbox: a real outbox on the harness's store, observed by the
// metrics: mails sent, retried, failed for good and expired; pings sent;
// the queued gauge by kind before and after.
func TestMetricsOutbox(t *testing.T) {
	h := newHarness(t)
	m := NewMetrics()
	reg := mxRegistry(t, m)
	h.backend.Outbox.Observe(m.Outbox)
	t.Cleanup(m.Watch(h.backend))
	ctx := context.Background()
	now := h.clock.Now()
	enqueue := func(kind byte, sender, name string, next, notAfter time.Time) {
		t.Helper()
		err := h.store.Enqueue(ctx, &OutboxItem{
			ID: ItemID{Kind: kind, Request: KeyOf(name)}, Sender: sender,
			Payload: []byte(name), Next: next, NotAfter: notAfter,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	enqueue(KindMail, "mx", "ok", now, now.Add(5*time.Minute))
	enqueue(KindMail, "mx", "retry", now, now.Add(5*time.Minute))
	enqueue(KindMail, "mx", "permanent", now, now.Add(5*time.Minute))
	enqueue(KindMail, "mx", "late", now.Add(time.Hour), now.Add(time.Second))
	enqueue(KindPing, "mxping", "ping", now, now.Add(5*time.Minute))
	mxWantGauge(t, reg, 4, mxQueued, "kind", "mail")
	mxWantGauge(t, reg, 1, mxQueued, "kind", "ping")

	var mu sync.Mutex
	attempts := map[string]int{}
	h.backend.Outbox.Register(KindMail, "mx", DelivererFunc(func(_ context.Context, it *OutboxItem) error {
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
			return &PermanentError{Err: errors.New("550 no such mailbox")}
		}
		return nil
	}))
	value := func(name string, kv ...string) func() bool {
		want := 1.0
		return func() bool { return mxValue(t, reg, name, kv...) >= want }
	}
	waitFor(t, 10*time.Second, "the first attempts", func() bool {
		return value(mxMails, "result", "sent")() && value(mxMails, "result", "retry")() && value(mxMails, "result", "failed")()
	})
	mxWantFamily(t, reg, mxMails, map[string]float64{"result=sent": 1, "result=retry": 1, "result=failed": 1})
	mxWantGauge(t, reg, 2, mxQueued, "kind", "mail") // retry (waiting) and late

	// the retry is due after 1 s, the late mail's request expired
	h.clock.Advance(2 * time.Second)
	h.backend.Outbox.Wake()
	waitFor(t, 10*time.Second, "the retry and the expiry", func() bool {
		return mxValue(t, reg, mxMails, "result", "sent") >= 2 && value(mxMails, "result", "expired")()
	})
	mxWantFamily(t, reg, mxMails, map[string]float64{"result=sent": 2, "result=retry": 1, "result=failed": 1, "result=expired": 1})
	mxWantGauge(t, reg, 0, mxQueued, "kind", "mail")

	h.backend.Outbox.Register(KindPing, "mxping", DelivererFunc(func(context.Context, *OutboxItem) error { return nil }))
	waitFor(t, 10*time.Second, "the ping", value(mxPings, "result", "sent"))
	mxWantFamily(t, reg, mxPings, map[string]float64{"result=sent": 1})
	mxWantGauge(t, reg, 0, mxQueued, "kind", "ping")
	mxCheckLabels(t, reg, []string{"mx", "@"})
}

// TestMetricsOutboxEvents maps each outbox outcome to its counter.
func TestMetricsOutboxEvents(t *testing.T) {
	m := NewMetrics()
	reg := mxRegistry(t, m)
	for _, o := range []string{"delivered", "delivered", "retry", "failed", "expired"} {
		m.Outbox(OutboxEvent{Kind: KindMail, Outcome: o})
	}
	for _, o := range []string{"delivered", "retry", "retry"} {
		m.Outbox(OutboxEvent{Kind: KindPing, Outcome: o})
	}
	m.Outbox(OutboxEvent{Kind: 'x', Outcome: "delivered"}) // unknown kind: ignored
	mxWantFamily(t, reg, mxMails, map[string]float64{"result=sent": 2, "result=retry": 1, "result=failed": 1, "result=expired": 1})
	mxWantFamily(t, reg, mxPings, map[string]float64{"result=sent": 1, "result=retry": 2})
}

// TestMetricsNil: a nil *Metrics records nothing and does not panic, and a
// server without metrics works.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.Request("token", "ok", "")
	m.Decision(true, "", time.Second)
	m.Exchange("ok", time.Second)
	m.SlowDown(SlowDownEarly)
	m.LimitRefusal("ip_rate")
	m.Outbox(OutboxEvent{Kind: KindMail, Outcome: "delivered"})
	m.Watch(nil)()

	h := newHarness(t, func(c *Config) { c.Limits = Limits{ClientRate: 1} })
	id := h.authorize("cc")
	wantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm()), 429, CodeAccessDenied)
	h.approve(id)
	if rec := h.poll("cc", id); rec.Code != http.StatusOK {
		t.Fatalf("poll without metrics: %d %s", rec.Code, rec.Body)
	}
}

// TestMetricsDescriptions: every family is named caddy_ciba_*, with help
// text, counters ending in _total and histograms in _seconds; the
// collectors go into any number of registries (one per Caddy config) but
// only once into each.
func TestMetricsDescriptions(t *testing.T) {
	m := NewMetrics()
	reg := mxRegistry(t, m)
	// make every vector hold one series so that it is gathered
	m.Request("token", "ok", "")
	m.Decision(true, "", time.Second)
	m.Exchange("ok", time.Second)
	m.SlowDown(SlowDownEarly)
	m.LimitRefusal("ip_rate")
	m.Outbox(OutboxEvent{Kind: KindMail, Outcome: "delivered"})
	m.Outbox(OutboxEvent{Kind: KindPing, Outcome: "delivered"})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		name := mf.GetName()
		names = append(names, name)
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s does not end in _total", name)
			}
		case dto.MetricType_HISTOGRAM:
			if !strings.HasSuffix(name, "_seconds") {
				t.Errorf("histogram %s does not end in _seconds", name)
			}
		}
	}
	sort.Strings(names)
	want := []string{mxDecSecs, mxDecisions, mxRefusals, mxMails, mxPings, mxQueued, mxPending,
		mxRequests, mxSlowDowns, mxExchSecs, mxExchanges}
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Errorf("families %q, want %q", names, want)
	}

	// a second registry (the next config) takes them all
	mxRegistry(t, m)
	// the same registry twice: AlreadyRegisteredError, which the Caddy
	// module tolerates
	for _, c := range m.Collectors() {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); !errors.As(err, &are) {
			t.Errorf("registering %T twice: %v, want AlreadyRegisteredError", c, err)
		}
	}
}

// ---- a mail site with metrics, limits and a logger of the test's choice ----

// opsOptions configure an opsSite.
type opsOptions struct {
	smtpAddr    string      // the SMTP server (a mailSink's addr, or freeAddr for one that is down)
	logger      *zap.Logger // nil: none
	limits      Limits
	clientIP    func(*http.Request) string // for the server and the approval page
	clientLabel bool
	match       bool // match_binding_message
	holdSender  bool // do not register the mail deliverer yet (opsSite.registerSender)
}

// opsSite is a mailSite (a Server with a real EmailAuthenticator on a
// Badger backend with a live clock) recording into its own Metrics.
type opsSite struct {
	*mailSite
	metrics *Metrics
	reg     *prometheus.Registry
}

func newOpsSite(t *testing.T, o opsOptions) *opsSite {
	t.Helper()
	ctx := context.Background()
	clock := &liveClock{}
	logger := o.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	st, err := OpenBadger(t.TempDir(), logger, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, logger, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	m := NewMetrics()
	reg := mxRegistry(t, m)
	b.Outbox.Observe(m.Outbox)
	t.Cleanup(m.Watch(b))

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
		MatchBindingMessage: o.match,
		Store:               st,
		ClientName:          func(id string) string { return names[id] },
		ClientIP:            o.clientIP,
		Metrics:             m,
		Logger:              logger,
		Now:                 clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	unregister := func() {}
	if !o.holdSender {
		unregister = b.Outbox.Register(KindMail, auth.SenderName(), auth)
		t.Cleanup(unregister)
	}

	upstream := newFakeUpstream(t, testIssuer)
	disc, err := NewDiscovery(testIssuer, upstream.srv.URL, nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	users, err := ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, minter: &testMinter{}, upstream: upstream, store: st, backend: b}
	h.cfg = Config{
		Issuer:             testIssuer,
		PublicURL:          testPublic,
		TokenPath:          testTokenURL,
		Clients:            clients,
		Users:              users,
		Backend:            b,
		Discovery:          disc,
		Authenticator:      auth,
		Minter:             h.minter,
		Limits:             o.limits,
		ClientIP:           o.clientIP,
		Metrics:            m,
		MetricsClientLabel: o.clientLabel,
		Logger:             logger,
		Now:                clock.Now,
	}
	if h.srv, err = New(h.cfg); err != nil {
		t.Fatal(err)
	}
	mb := &mailBackend{Backend: b, store: st, clock: clock, log: logger}
	return &opsSite{
		mailSite: &mailSite{harness: h, mb: mb, clock: clock, auth: auth, unregister: unregister},
		metrics:  m,
		reg:      reg,
	}
}

// registerSender registers the site's mail deliverer (holdSender).
func (s *opsSite) registerSender() {
	s.t.Cleanup(s.mb.Outbox.Register(KindMail, s.auth.SenderName(), s.auth))
}

// mxRetryingStore runs every Update's fn once more before the real update,
// on a copy, as the Store contract allows (fn is retried on conflicting
// writes): a metric counted inside fn would count twice.
type mxRetryingStore struct{ Store }

func (s mxRetryingStore) Update(ctx context.Context, key RequestKey, fn func(*AuthRequest) error) (*AuthRequest, error) {
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
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.minter.mu.Lock()
	r.minter.hook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	r.minter.mu.Unlock()
	cfg2 := r.cfg
	b2 := NewBackend(mxRetryingStore{r.store}, nil, r.clock.Now)
	t.Cleanup(b2.Outbox.Close)
	cfg2.Backend = b2
	srv2, err := New(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	id := r.authorize("cc")
	r.approve(id)
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		r.srv.Handle(rec, mxPollRequest(id))
		done <- rec.Code
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first poll never reached the minter")
	}
	rec := httptest.NewRecorder()
	srv2.Handle(rec, mxPollRequest(id))
	wantOAuthError(t, rec, 400, CodeSlowDown)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	mxWantFamily(t, r.reg, mxSlowDowns, map[string]float64{"reason=overlap": 1})
	mxWant(t, r.reg, 1, mxRequests, "endpoint", "token", "outcome", CodeSlowDown)
}
