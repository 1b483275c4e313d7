package e2e

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsScrape is one scrape of the proxy's /metrics, parsed.
type metricsScrape struct {
	text string
	fams map[string]*dto.MetricFamily
}

func (p *proxy) scrapeMetrics(t *testing.T) metricsScrape {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.Base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := p.do(t, req)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", r.Status, r.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return metricsScrape{text: string(r.Body), fams: fams}
}

// value returns the value of the counter or gauge series of name with
// exactly these labels (empty values count as absent), and whether it is
// exposed.
func (s metricsScrape) value(name string, kv ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
	mf := s.fams[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			if lp.GetValue() != "" {
				got[lp.GetName()] = lp.GetValue()
			}
		}
		if !maps.Equal(got, want) {
			continue
		}
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue(), true
		}
		return m.GetGauge().GetValue(), true
	}
	return 0, false
}

func (s metricsScrape) want(t *testing.T, want float64, name string, kv ...string) {
	t.Helper()
	got, ok := s.value(name, kv...)
	if !ok || got != want {
		t.Errorf("%s%v = %v (exposed %v), want %v", name, kv, got, ok, want)
	}
}

// TestMetricsEndpoint: the real binary, with Caddy's metrics handler on
// /metrics, exposes the caddy_ciba_ series with the values a few requests
// give; after a restart the pending gauge reads the store before any
// request, and the health endpoint reports the store ok without its figures.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	p := newProxy(t)
	// The harness's Caddyfile turns the admin endpoint off: serve the
	// metrics on the site.
	p.Stop()
	cf, err := os.ReadFile(p.config)
	if err != nil {
		t.Fatal(err)
	}
	withMetrics := strings.Replace(string(cf), "\treverse_proxy ", "\tmetrics /metrics\n\treverse_proxy ", 1)
	if withMetrics == string(cf) {
		t.Fatal("could not add the metrics route to the harness's Caddyfile")
	}
	if err := os.WriteFile(p.config, []byte(withMetrics), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Start()

	a := wantStarted(t, p.backchannel(t, cc, aliceRequest()))
	wantStarted(t, p.backchannel(t, other, url.Values{"scope": {"openid"}, "login_hint": {"bob@example.com"}}))
	wantError(t, p.backchannel(t, cc, url.Values{"scope": {"openid"}, "login_hint": {"mallory"}}), http.StatusBadRequest, "unknown_user_id")
	wantError(t, p.backchannel(t, basic{ccID, wrongSecret}, aliceRequest()), http.StatusUnauthorized, "invalid_client")
	wantError(t, p.poll(t, cc, a.AuthReqID), http.StatusBadRequest, "authorization_pending")
	wantError(t, p.poll(t, cc, "no-such-request"), http.StatusBadRequest, "invalid_grant")

	s := p.scrapeMetrics(t)
	s.want(t, 2, "caddy_ciba_requests_total", "endpoint", "backchannel", "outcome", "ok")
	s.want(t, 1, "caddy_ciba_requests_total", "endpoint", "backchannel", "outcome", "unknown_user_id")
	s.want(t, 1, "caddy_ciba_requests_total", "endpoint", "backchannel", "outcome", "invalid_client")
	s.want(t, 1, "caddy_ciba_requests_total", "endpoint", "token", "outcome", "authorization_pending")
	s.want(t, 1, "caddy_ciba_requests_total", "endpoint", "token", "outcome", "invalid_grant")
	s.want(t, 2, "caddy_ciba_pending_requests")
	s.want(t, 0, "caddy_ciba_outbox_queued", "kind", "mail")
	for _, line := range []string{
		"# TYPE caddy_ciba_requests_total counter",
		"# TYPE caddy_ciba_pending_requests gauge",
		"# TYPE caddy_ciba_upstream_exchange_seconds histogram",
	} {
		if !strings.Contains(s.text, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	for name, mf := range s.fams {
		if !strings.HasPrefix(name, "caddy_ciba_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "client" && lp.GetValue() != "" {
					t.Errorf("%s has client=%q without metrics_client_label", name, lp.GetValue())
				}
				for _, f := range []string{"alice", "bob", "mallory", "@", "127.0.0.1", a.AuthReqID} {
					if strings.Contains(lp.GetValue(), f) {
						t.Errorf("%s has %s=%q, which holds %q", name, lp.GetName(), lp.GetValue(), f)
					}
				}
			}
		}
	}

	// A restart: a new process, the same store.
	p.Stop()
	p.Start()
	s = p.scrapeMetrics(t)
	s.want(t, 2, "caddy_ciba_pending_requests")
	if v, ok := s.value("caddy_ciba_requests_total", "endpoint", "backchannel", "outcome", "ok"); ok && v != 0 {
		t.Errorf("a new process counts %v backchannel requests before any", v)
	}
	req, err := http.NewRequest(http.MethodGet, p.Base+"/ciba/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	r := p.do(t, req)
	var health struct {
		Status string `json:"status"`
		Store  struct {
			OK bool `json:"ok"`
		} `json:"store"`
		Upstream struct {
			OK bool `json:"ok"`
		} `json:"upstream"`
	}
	if err := json.Unmarshal(r.Body, &health); err != nil || r.Status != http.StatusOK {
		t.Fatalf("health: %d %s (%v)", r.Status, r.Body, err)
	}
	if health.Status != "ok" || !health.Store.OK || !health.Upstream.OK {
		t.Errorf("health %s, want ok with the store and the upstream ok", r.Body)
	}
	// The report is public: no count (the pending requests, the queued
	// mails) or time that a request moves.
	if bytes.ContainsAny(r.Body, "0123456789") {
		t.Errorf("health %s holds a number", r.Body)
	}
	s = p.scrapeMetrics(t)
	s.want(t, 1, "caddy_ciba_requests_total", "endpoint", "health", "outcome", "ok")
}
