package caddymodule

import (
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cibaproxy/cibaproxy/cibaproxy"
)

// The metrics are process-wide (built once, registered into each
// configuration's registry), and other tests of this package count into
// them too: the tests read a baseline first and check differences, except
// for the pending gauge, which reads the stores of the loaded
// configurations only.

// mtGlobalOptions are the integration tests' global options with Caddy's
// HTTP metrics turned on; the metrics are read from the admin endpoint's
// /metrics, which serves the loaded configuration's registry.
const mtGlobalOptions = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	skip_install_trust
	grace_period 1ns
	persist_config off
	metrics
}
`

// mtScrape is a scrape of the admin endpoint's /metrics.
type mtScrape map[string]*dto.MetricFamily

func (e *itEnv) scrape() mtScrape {
	e.t.Helper()
	resp, err := http.Get("http://localhost:2999/metrics")
	if err != nil {
		e.t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("scraping /metrics: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		e.t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// series returns the series of name with exactly these labels (empty
// values count as absent).
func (s mtScrape) series(name string, kv ...string) (*dto.Metric, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			want[kv[i]] = kv[i+1]
		}
	}
	mf := s[name]
	if mf == nil {
		return nil, false
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			if lp.GetValue() != "" {
				got[lp.GetName()] = lp.GetValue()
			}
		}
		if maps.Equal(got, want) {
			return m, true
		}
	}
	return nil, false
}

// value returns a counter's or gauge's value, 0 when absent.
func (s mtScrape) value(name string, kv ...string) float64 {
	m, ok := s.series(name, kv...)
	if !ok {
		return 0
	}
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// mtDelta checks that a series grew by want between two scrapes.
func mtDelta(t *testing.T, before, after mtScrape, want float64, name string, kv ...string) {
	t.Helper()
	if d := after.value(name, kv...) - before.value(name, kv...); d != want {
		t.Errorf("%s%v grew by %v, want %v (from %v to %v)", name, kv, d, want, before.value(name, kv...), after.value(name, kv...))
	}
}

// mtSame checks that every caddy_ciba_ counter and histogram of before has
// the same value in after: nothing was reset or lost.
func mtSame(t *testing.T, before, after mtScrape) {
	t.Helper()
	n := 0
	for name, mf := range before {
		if !strings.HasPrefix(name, "caddy_ciba_") || mf.GetType() == dto.MetricType_GAUGE {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kv []string
			for _, lp := range m.GetLabel() {
				kv = append(kv, lp.GetName(), lp.GetValue())
			}
			got, ok := after.series(name, kv...)
			switch {
			case !ok:
				t.Errorf("%s%v is gone", name, kv)
			case m.GetCounter() != nil && got.GetCounter().GetValue() != m.GetCounter().GetValue():
				t.Errorf("%s%v = %v, was %v", name, kv, got.GetCounter().GetValue(), m.GetCounter().GetValue())
			case m.GetHistogram() != nil && got.GetHistogram().GetSampleCount() != m.GetHistogram().GetSampleCount():
				t.Errorf("%s%v count %d, was %d", name, kv, got.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleCount())
			}
			n++
		}
	}
	if n == 0 {
		t.Error("no caddy_ciba_ series to compare")
	}
}

// mtPending checks the pending gauge, which must be exposed.
func mtPending(t *testing.T, s mtScrape, want float64) {
	t.Helper()
	m, ok := s.series("caddy_ciba_pending_requests")
	if !ok {
		t.Errorf("caddy_ciba_pending_requests is not exposed")
		return
	}
	if got := m.GetGauge().GetValue(); got != want {
		t.Errorf("caddy_ciba_pending_requests = %v, want %v", got, want)
	}
}

// mtCheckLabels: no caddy_ciba_ label value names a user, an address, an
// IP or a request. (Whether the client label is filled is checked in
// package cibaproxy: here the series of earlier tests in the process stay.)
func mtCheckLabels(t *testing.T, s mtScrape, forbidden []string) {
	t.Helper()
	for name, mf := range s {
		if !strings.HasPrefix(name, "caddy_ciba_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				v := lp.GetValue()
				for _, f := range forbidden {
					if strings.Contains(v, f) {
						t.Errorf("%s has %s=%q, which holds %q", name, lp.GetName(), v, f)
					}
				}
			}
		}
	}
}

const (
	mtRequests = "caddy_ciba_requests_total"
	mtRefusals = "caddy_ciba_limit_refusals_total"
)

// TestIntegrationMetricsReload: the caddy_ciba_ series are served by the
// configuration's registry; a reload (the same store, plus a second ciba
// handler registering the same collectors) neither panics nor resets or
// loses a series, and the pending gauge stays right; after the
// configuration is unloaded (the store closed) and loaded again, the
// pending gauge reads the store.
func TestIntegrationMetricsReload(t *testing.T) {
	e := newITEnv(t)
	e.load(mtGlobalOptions + "\n" + itSite + " {\n\t" + e.cibaBlock("5s") + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n")
	base := e.scrape()
	mtPending(t, base, 0)
	if base["caddy_ciba_outbox_queued"] == nil {
		t.Error("caddy_ciba_outbox_queued is not exposed after the first load")
	}

	a := e.backchannel()
	e.backchannel()
	if _, code := e.poll(a.AuthReqID, "cc", "s3cret"); code != "authorization_pending" {
		t.Fatalf("poll: %s", code)
	}
	resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"mallory"}}, "cc", "s3cret")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown user: %d %s", resp.StatusCode, body)
	}
	first := e.scrape()
	mtDelta(t, base, first, 2, mtRequests, "endpoint", "backchannel", "outcome", "ok")
	mtDelta(t, base, first, 1, mtRequests, "endpoint", "backchannel", "outcome", "unknown_user_id")
	mtDelta(t, base, first, 1, mtRequests, "endpoint", "token", "outcome", "authorization_pending")
	mtPending(t, first, 2)
	mtCheckLabels(t, first, []string{"alice", "mallory", "@", "127.0.0.1", a.AuthReqID})

	// reload: the same storage, another interval, and a second ciba
	// handler on the same store (its collectors are already registered)
	e.load(mtGlobalOptions + "\n" + itSite + " {\n\t" + e.cibaBlock("6s") +
		"\n\thandle /second/* {\n\t\t" + e.cibaBlock("7s") + "\n\t}" +
		"\n\treverse_proxy " + e.upstream.Addr() + "\n}\n")
	second := e.scrape()
	mtSame(t, first, second)
	mtPending(t, second, 2)
	if b := e.backchannel(); b.Interval != 6 {
		t.Errorf("interval %d after the reload, want 6", b.Interval)
	}
	third := e.scrape()
	mtDelta(t, first, third, 3-2, mtRequests, "endpoint", "backchannel", "outcome", "ok")
	mtPending(t, third, 3)

	// unloaded: the store is closed, and no ciba series is left
	e.unload()
	if s := e.scrape(); s["caddy_ciba_pending_requests"] != nil {
		t.Error("caddy_ciba_pending_requests is still exposed with no ciba handler loaded")
	}
	// loaded again: the pending gauge reads the reopened store before any
	// request, the counters go on where they were (one process)
	e.load(mtGlobalOptions + "\n" + itSite + " {\n\t" + e.cibaBlock("5s") + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n")
	fourth := e.scrape()
	mtPending(t, fourth, 3)
	mtSame(t, third, fourth)
}

// TestIntegrationMetricsClientLabel: metrics_client_label fills the client
// label with the client id.
func TestIntegrationMetricsClientLabel(t *testing.T) {
	e := newITEnv(t)
	block := strings.Replace(e.cibaBlock("5s"), "\t\tclient cc {", "\t\tmetrics_client_label\n\t\tclient cc {", 1)
	e.load(mtGlobalOptions + "\n" + itSite + " {\n\t" + block + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n")
	before := e.scrape()
	e.backchannel()
	after := e.scrape()
	mtDelta(t, before, after, 1, mtRequests, "endpoint", "backchannel", "outcome", "ok", "client", "cc")
	mtCheckLabels(t, after, []string{"alice", "@", "127.0.0.1"})
}

// mtSite is a site whose ciba block carries extra lines (limits) and whose
// global options may add server options.
func (e *itEnv) mtSite(extraGlobal, extraCIBA string) string {
	global := strings.Replace(mtGlobalOptions, "\tmetrics\n", "\tmetrics\n"+extraGlobal, 1)
	block := strings.Replace(e.cibaBlock("5s"), "\t\tclient cc {", extraCIBA+"\n\t\tclient cc {", 1)
	return global + "\n" + itSite + " {\n\t" + block + "\n\treverse_proxy " + e.upstream.Addr() + "\n}\n"
}

// bcFrom sends a backchannel request for alice as cc, with an
// X-Forwarded-For header when xff is set.
func (e *itEnv) bcFrom(xff string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, itSite+"/bc-authorize",
		strings.NewReader(url.Values{"scope": {"openid"}, "login_hint": {"alice"}}.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cc", "s3cret")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := e.tester.Client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestIntegrationLimits: the limits block in Caddy: client_rate refuses
// with 429 and Retry-After; ip_rate is keyed on Caddy's client_ip, which
// honours trusted_proxies; refusals are counted.
func TestIntegrationLimits(t *testing.T) {
	t.Run("client_rate", func(t *testing.T) {
		e := newITEnv(t)
		e.load(e.mtSite("", "\t\tlimits {\n\t\t\tclient_rate 2/m\n\t\t\tip_rate 0\n\t\t}"))
		before := e.scrape()
		for i := 0; i < 2; i++ {
			if resp := e.bcFrom(""); resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %d", i+1, resp.StatusCode)
			}
		}
		resp := e.bcFrom("")
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || err != nil || ra < 1 || ra > 60 {
			t.Errorf("third request: %d, Retry-After %q; want 429 with 1..60", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		mtDelta(t, before, e.scrape(), 1, mtRefusals, "limit", "client_rate")
	})
	t.Run("ip_rate behind a trusted proxy", func(t *testing.T) {
		e := newITEnv(t)
		e.load(e.mtSite("\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}\n",
			"\t\tlimits {\n\t\t\tip_rate 2/m\n\t\t\tclient_rate 0\n\t\t}"))
		before := e.scrape()
		for i := 0; i < 2; i++ {
			if resp := e.bcFrom("198.51.100.1"); resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d from .1: %d", i+1, resp.StatusCode)
			}
		}
		if resp := e.bcFrom("198.51.100.1"); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("third request from .1: %d, want 429", resp.StatusCode)
		}
		if resp := e.bcFrom("198.51.100.2"); resp.StatusCode != http.StatusOK {
			t.Errorf("request from .2: %d, want 200 (its own count)", resp.StatusCode)
		}
		after := e.scrape()
		mtDelta(t, before, after, 1, mtRefusals, "limit", "ip_rate")
		mtCheckLabels(t, after, []string{"198.51.100", "127.0.0.1"})
	})
	t.Run("ip_rate without trusted proxies", func(t *testing.T) {
		e := newITEnv(t)
		e.load(e.mtSite("", "\t\tlimits {\n\t\t\tip_rate 2/m\n\t\t\tclient_rate 0\n\t\t}"))
		// X-Forwarded-For from an untrusted peer is ignored: one key
		for i, xff := range []string{"198.51.100.1", "198.51.100.2"} {
			if resp := e.bcFrom(xff); resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %d", i+1, resp.StatusCode)
			}
		}
		if resp := e.bcFrom("198.51.100.3"); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("third request from the same peer: %d, want 429", resp.StatusCode)
		}
	})
}

// TestIntegrationLimitsDefaults: without a limits block the defaults hold:
// user_mail 10/h refuses the 11th request for a user in an hour with 403;
// with user_mail off, user_pending 20 refuses the 21st undecided request.
func TestIntegrationLimitsDefaults(t *testing.T) {
	for _, tc := range []struct {
		name, limits, limit string
		n                   int
	}{
		{"user_mail", "", "user_mail", cibaproxy.DefaultUserMail},
		{"user_pending", "\t\tlimits {\n\t\t\tuser_mail 0\n\t\t}", "user_pending", cibaproxy.DefaultUserPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newITEnv(t)
			e.load(e.mtSite("", tc.limits))
			before := e.scrape()
			for i := 0; i < tc.n; i++ {
				if resp := e.bcFrom(""); resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %d", i+1, resp.StatusCode)
				}
			}
			resp, body := e.postForm("/bc-authorize", url.Values{"scope": {"openid"}, "login_hint": {"alice"}}, "cc", "s3cret")
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"access_denied"`) {
				t.Errorf("request %d: %d %s, want 403 access_denied", tc.n+1, resp.StatusCode, body)
			}
			after := e.scrape()
			mtDelta(t, before, after, 1, mtRefusals, "limit", tc.limit)
			mtPending(t, after, float64(tc.n))
		})
	}
}

// TestIntegrationAuthFailures: auth_failures in Caddy: failed client
// authentications from one client IP are refused with 429 and Retry-After
// beyond the limit, at the token endpoint too, the right secret included;
// by default 20 a minute.
func TestIntegrationAuthFailures(t *testing.T) {
	for _, tc := range []struct {
		name, limits string
		n            int
	}{
		{"set", "\t\tlimits {\n\t\t\tauth_failures 2/m\n\t\t}", 2},
		{"default", "", cibaproxy.DefaultAuthFailures},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newITEnv(t)
			e.load(e.mtSite("", tc.limits))
			before := e.scrape()
			form := url.Values{"scope": {"openid"}, "login_hint": {"alice"}}
			poll := url.Values{"grant_type": {"urn:openid:params:grant-type:ciba"}, "auth_req_id": {"x"}}
			for i := 0; i < tc.n; i++ {
				path, f := "/bc-authorize", form
				if i%2 == 1 {
					path, f = itTokenPath, poll
				}
				if resp, body := e.postForm(path, f, "cc", "wrong"); resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("failure %d at %s: %d %s, want 401", i+1, path, resp.StatusCode, body)
				}
			}
			for _, p := range []struct {
				path string
				form url.Values
			}{{"/bc-authorize", form}, {itTokenPath, poll}} {
				resp, body := e.postForm(p.path, p.form, "cc", "s3cret")
				if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || err != nil || ra < 1 || ra > 60 {
					t.Errorf("%s after %d failures: %d %s, Retry-After %q; want 429 with 1..60", p.path, tc.n, resp.StatusCode, body, resp.Header.Get("Retry-After"))
				}
			}
			mtDelta(t, before, e.scrape(), 2, mtRefusals, "limit", "auth_failures")
		})
	}
}

// TestLimitsResolve: absent limits take their defaults, 0 turns one off.
func TestLimitsResolve(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *Limits
		want cibaproxy.Limits
	}{
		{"no limits block", nil, cibaproxy.Limits{ClientRate: 600, IPRate: 300, AuthFailures: 20, UserPending: 20, UserMail: 10}},
		{"empty limits block", &Limits{}, cibaproxy.Limits{ClientRate: 600, IPRate: 300, AuthFailures: 20, UserPending: 20, UserMail: 10}},
		{"all off", &Limits{ClientRate: intPtr(0), IPRate: intPtr(0), AuthFailures: intPtr(0), UserPending: intPtr(0), UserMail: intPtr(0)}, cibaproxy.Limits{}},
		{"client_rate off", &Limits{ClientRate: intPtr(0)}, cibaproxy.Limits{IPRate: 300, AuthFailures: 20, UserPending: 20, UserMail: 10}},
		{"auth_failures and user_mail off", &Limits{AuthFailures: intPtr(0), UserMail: intPtr(0)}, cibaproxy.Limits{ClientRate: 600, IPRate: 300, UserPending: 20}},
		{"set", &Limits{ClientRate: intPtr(5), IPRate: intPtr(7), AuthFailures: intPtr(4), UserPending: intPtr(3), UserPendingReplace: true, UserMail: intPtr(2), HideUnknownUsers: true},
			cibaproxy.Limits{ClientRate: 5, IPRate: 7, AuthFailures: 4, UserPending: 3, UserPendingReplace: true, UserMail: 2, HideUnknownUsers: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.resolve(); got != tc.want {
				t.Errorf("resolve = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRegisterMetrics: the process-wide collectors go into any number of
// fresh registries, and into one registry twice without an error.
func TestRegisterMetrics(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: t.Context()})
	defer cancel()
	for i := 0; i < 3; i++ {
		reg := prometheus.NewRegistry()
		if err := registerMetrics(reg); err != nil {
			t.Fatalf("registry %d: %v", i, err)
		}
		if err := registerMetrics(reg); err != nil {
			t.Fatalf("registry %d, twice: %v", i, err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		for _, n := range []string{"caddy_ciba_pending_requests", "caddy_ciba_outbox_queued"} {
			if !names[n] {
				t.Errorf("registry %d lacks %s", i, n)
			}
		}
	}
	if reg := ctx.GetMetricsRegistry(); reg == nil {
		t.Fatal("no metrics registry in a caddy context")
	} else if err := registerMetrics(reg); err != nil {
		t.Errorf("registering into a caddy context's registry: %v", err)
	}
	if processMetrics() != processMetrics() {
		t.Error("processMetrics builds the collectors more than once")
	}
}
