package cibaproxy

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/email"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/mail"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store/badgerstore"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

// ---- reading metrics back ----

// mxRegistry is a fresh pedantic registry (it checks that what a collector
// collects matches what it describes) holding m's collectors.
func mxRegistry(t *testing.T, m *metrics.Metrics) *prometheus.Registry {
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
	reg := mxRegistry(t, m)
	t.Cleanup(m.Watch(h.store))
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
	return mxRequest(testTokenURL, "cc", "cc-secret", url.Values{"grant_type": {oauth.GrantTypeCIBA}, "auth_req_id": {id}})
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
	wantOAuthError(t, r.poll("cc", id1), 400, oauth.CodeAuthorizationPending)
	wantOAuthError(t, r.poll("cc", id1), 400, oauth.CodeSlowDown) // early
	wantOAuthError(t, r.post(DefaultEndpoint, "cc", hForm("login_hint", "mallory")), 400, oauth.CodeUnknownUserID)
	wantOAuthError(t, r.poll("cc", "no-such-request"), 400, oauth.CodeInvalidGrant)
	wantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, oauth.CodeInvalidClient)
	mxWantGauge(t, r.reg, 1, mxPending)

	// approved after 42 s (fake clock), then redeemed
	r.clock.Advance(42 * time.Second)
	if _, err := r.srv.Decide(ctx, store.KeyOf(id1), authn.Approve); err != nil {
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
	if _, err := r.srv.Decide(ctx, store.KeyOf(id2), authn.Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, mxPending)
	wantOAuthError(t, r.poll("cc", id2), 400, oauth.CodeAccessDenied)

	// expires undecided: counted until swept
	id3 := authorize()
	mxWantGauge(t, r.reg, 1, mxPending)
	r.clock.Advance(DefaultRequestTTL + time.Second)
	if _, err := r.backend.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, r.reg, 0, mxPending)
	wantOAuthError(t, r.poll("cc", id3), 400, oauth.CodeExpiredToken)

	// approved after 3 s; the upstream fails, refuses, then mints
	id4 := authorize()
	r.clock.Advance(3 * time.Second)
	r.approve(id4)
	r.minter.set(&upstream.MintError{Err: errors.New("connection refused")})
	wantOAuthError(t, r.poll("cc", id4), 400, oauth.CodeSlowDown)
	r.minter.set(&upstream.MintError{Refused: true, UpstreamError: "invalid_client", Err: errors.New("401")})
	r.clock.Advance(15 * time.Second)
	wantOAuthError(t, r.poll("cc", id4), 500, oauth.CodeServerError)
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
	wantOAuthError(t, r.serve(mxRequest(DefaultEndpoint, "cc", "wrong-secret", hForm())), 401, oauth.CodeInvalidClient)
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
	t.Cleanup(srv2.Close)

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
	wantOAuthError(t, r.poll("cc", id), 400, oauth.CodeSlowDown)
	mxWant(t, r.reg, 1, mxSlowDowns, "reason", metrics.SlowDownOverlap)
	// overlapping through the other server: the claim in the store
	rec := httptest.NewRecorder()
	srv2.Handle(rec, mxPollRequest(id))
	wantOAuthError(t, rec, 400, oauth.CodeSlowDown)
	mxWant(t, r.reg, 2, mxSlowDowns, "reason", metrics.SlowDownOverlap)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	mxWantFamily(t, r.reg, mxSlowDowns, map[string]float64{"reason=overlap": 2})
	mxWantFamily(t, r.reg, mxExchanges, map[string]float64{"result=ok": 1})
	mxWant(t, r.reg, 2, mxRequests, "endpoint", "token", "outcome", oauth.CodeSlowDown)
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

	st, err := badgerstore.Open(dir, nil, h.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, nil, h.clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	m := metrics.New()
	reg := mxRegistry(t, m)
	unwatch := m.Watch(b.Store)
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
	t.Cleanup(srv.Close)
	if _, err := srv.Decide(context.Background(), store.KeyOf(a2), authn.Deny); err != nil {
		t.Fatal(err)
	}
	mxWantGauge(t, reg, 1, mxPending)
	if _, err := srv.Decide(context.Background(), store.KeyOf(a3), authn.Approve); !errors.Is(err, authn.ErrExpired) {
		t.Errorf("deciding the expired a3: %v, want authn.ErrExpired", err)
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
	t.Cleanup(r.m.Watch(h2.store))
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
	m := metrics.New()
	reg := mxRegistry(t, m)
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
	mxWantGauge(t, reg, 4, mxQueued, "kind", "mail")
	mxWantGauge(t, reg, 1, mxQueued, "kind", "ping")

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

	h.backend.Outbox.Register(ping.Kind, "mxping", outbox.DelivererFunc(func(context.Context, *store.OutboxItem) error { return nil }))
	waitFor(t, 10*time.Second, "the ping", value(mxPings, "result", "sent"))
	mxWantFamily(t, reg, mxPings, map[string]float64{"result=sent": 1})
	mxWantGauge(t, reg, 0, mxQueued, "kind", "ping")
	mxCheckLabels(t, reg, []string{"mx", "@"})
}

// TestMetricsNil: a server without metrics (nil *metrics.Metrics, which
// records nothing) works; the nil collectors themselves are checked in
// package metrics.
func TestMetricsNil(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Limits = Limits{ClientRate: 1} })
	id := h.authorize("cc")
	wantOAuthError(t, h.post(DefaultEndpoint, "cc", hForm()), 429, oauth.CodeAccessDenied)
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
	t.Cleanup(srv2.Close)
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
	wantOAuthError(t, rec, 400, oauth.CodeSlowDown)
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the claimant's poll: %d", code)
	}
	mxWantFamily(t, r.reg, mxSlowDowns, map[string]float64{"reason=overlap": 1})
	mxWant(t, r.reg, 1, mxRequests, "endpoint", "token", "outcome", oauth.CodeSlowDown)
}

// ---- a mail site with metrics, limits and a logger of the test's choice ----

// opsOptions configure an opsSite.
type opsOptions struct {
	smtpAddr    string      // the SMTP server (a cibatest.SMTPSink's Addr, or cibatest.FreeAddr for one that is down)
	logger      *zap.Logger // nil: none
	limits      Limits
	clientIP    func(*http.Request) string // for the server and the approval page
	clientLabel bool
	match       bool // match_binding_message
	holdSender  bool // the mails wait in the outbox until opsSite.registerSender
}

// opsSite is a Server whose one authenticator is the real e-mail link
// authenticator, on a Badger backend with a live clock (the outbox's real
// timers and backoff work as in production, and a request can still be
// made to expire at once), recording into its own Metrics.
type opsSite struct {
	*harness
	clock   *cibatest.LiveClock
	auth    *email.Authenticator
	metrics *metrics.Metrics
	reg     *prometheus.Registry
}

// opsClients are the harness's clients.
func opsClients() []*clients.Client {
	return []*clients.Client{
		{ID: "cc", Name: "Call Centre", SecretHashes: [][32]byte{clients.HashSecret("cc-secret"), clients.HashSecret("cc-new")}},
		{ID: "other", SecretHashes: [][32]byte{clients.HashSecret("other-secret")}},
		{ID: "off", SecretHashes: [][32]byte{clients.HashSecret("off-secret")}, Disabled: true},
		{ID: "pinger", Mode: clients.ModePing, NotificationEndpoint: "https://cd.example.com/cb", SecretHashes: [][32]byte{clients.HashSecret("pinger-secret")}},
		{ID: "narrow", Scopes: []string{"openid"}, SecretHashes: [][32]byte{clients.HashSecret("narrow-secret")}},
	}
}

func newOpsSite(t *testing.T, o opsOptions) *opsSite {
	t.Helper()
	ctx := context.Background()
	clock := cibatest.NewLiveClock()
	logger := o.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	st, err := badgerstore.Open(t.TempDir(), logger, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBackend(st, logger, clock.Now)
	t.Cleanup(func() { _ = b.Close() })
	m := metrics.New()
	reg := mxRegistry(t, m)
	b.Outbox.Observe(m.Outbox)
	t.Cleanup(m.Watch(st))

	cls := opsClients()
	names := make(map[string]string)
	for _, c := range cls {
		names[c.ID] = c.DisplayName()
	}
	auth, err := email.New(ctx, email.Config{
		PublicURL: testPublic,
		SMTP: mail.Config{
			Addr: o.smtpAddr, TLS: mail.TLSNone, From: "Example Login <login@example.com>", Timeout: 3 * time.Second,
		},
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
	entry := auth.Entry()
	if o.holdSender {
		entry.Authenticator = heldAuthenticator{auth}
		t.Cleanup(func() { _ = auth.Close() })
	}

	op := cibatest.StartOP(t, testIssuer)
	disc, err := upstream.NewDiscovery(testIssuer, op.URL(), nil, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := users.ParseUsers([]byte(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, minter: &testMinter{}, upstream: op, store: st, backend: b}
	h.cfg = Config{
		Issuer:             testIssuer,
		PublicURL:          testPublic,
		TokenPath:          testTokenURL,
		Clients:            cls,
		Users:              dir,
		Backend:            b,
		Discovery:          disc,
		Authenticators:     []*authn.Entry{entry},
		Minter:             h.minter,
		SealKey:            testSealKey,
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
	t.Cleanup(h.srv.Close)
	return &opsSite{harness: h, clock: clock, auth: auth, metrics: m, reg: reg}
}

// registerSender registers the site's mail deliverer (holdSender): the
// mails queued so far go out.
func (s *opsSite) registerSender() {
	kind, sender := s.auth.Route()
	s.t.Cleanup(s.backend.Outbox.Register(kind, sender, s.auth))
}

// requestMail makes a backchannel request as cc and returns its id, the
// mail it caused and the approval link (the first URL of the text part).
func (s *opsSite) requestMail(sink *cibatest.SMTPSink, kv ...string) (string, *cibatest.ParsedMail, string) {
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
func (s *opsSite) page(method, link string, cookie *http.Cookie, form url.Values) *httptest.ResponseRecorder {
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

// opsCSRFCookie is the approval form's double-submit cookie.
const opsCSRFCookie = "ciba_csrf"

var opsCSRFField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]+)">`)

// openForm GETs the approval page and returns its CSRF cookie, the CSRF
// form field and the page.
func (s *opsSite) openForm(link string) (*http.Cookie, string, string) {
	s.t.Helper()
	rec := s.page(http.MethodGet, link, nil, nil)
	if rec.Code != http.StatusOK {
		s.t.Fatalf("GET %s: %d\n%s", link, rec.Code, rec.Body)
	}
	var cookie *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == opsCSRFCookie {
			cookie = c
		}
	}
	if cookie == nil {
		s.t.Fatal("the approval page set no CSRF cookie")
	}
	m := opsCSRFField.FindStringSubmatch(rec.Body.String())
	if m == nil {
		s.t.Fatalf("the approval page has no CSRF field:\n%s", rec.Body)
	}
	return &http.Cookie{Name: cookie.Name, Value: cookie.Value}, html.UnescapeString(m[1]), rec.Body.String()
}

// opsWantOutcome checks an answer of the approval page: its status, its
// outcome and its security headers.
func opsWantOutcome(t *testing.T, rec *httptest.ResponseRecorder, status int, outcome string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d\n%s", rec.Code, status, rec.Body)
	}
	if want := `data-outcome="` + outcome + `"`; !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("page lacks %s:\n%s", want, rec.Body)
	}
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

// opsOutboxItems returns the queued items.
func opsOutboxItems(t *testing.T, st store.Queue) []*store.OutboxItem {
	t.Helper()
	var items []*store.OutboxItem
	if err := st.ScanOutbox(context.Background(), func(it *store.OutboxItem) bool {
		items = append(items, it)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return items
}

// opsLinkToken returns the token of an approval link, checking it is 256
// bits of unpadded base64url.
func opsLinkToken(t *testing.T, link string) string {
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
