package metrics

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The outbox kinds of the proxy, registered here as their packages
// (authn/email, ping, authn/httpchannel) register them: the metrics know
// them by name only.
var (
	mxKindMail    = store.RegisterKind('m', KindMail)
	mxKindPing    = store.RegisterKind('p', KindPing)
	mxKindChannel = store.RegisterKind('h', KindChannel)
)

// Family names.
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
	mxChannel   = "caddy_ciba_channel_requests_total"
	mxQueued    = "caddy_ciba_outbox_queued"
)

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

// mxFamily returns every series of a counter or gauge family as "k=v,k=v"
// (labels sorted, empty values left out) → value.
func mxFamily(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != "" {
					parts = append(parts, lp.GetName()+"="+lp.GetValue())
				}
			}
			sort.Strings(parts)
			v := m.GetCounter().GetValue()
			if mf.GetType() == dto.MetricType_GAUGE {
				v = m.GetGauge().GetValue()
			}
			out[strings.Join(parts, ",")] = v
		}
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
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "{%s}=%v ", k, m[k])
	}
	return b.String()
}

// TestMetricsOutboxEvents maps each outbox outcome to the counter of its
// kind.
func TestMetricsOutboxEvents(t *testing.T) {
	m := New()
	reg := mxRegistry(t, m)
	for _, o := range []string{"delivered", "delivered", "retry", "failed", "expired"} {
		m.Outbox(outbox.Event{Kind: mxKindMail, Outcome: o})
	}
	for _, o := range []string{"delivered", "retry", "retry"} {
		m.Outbox(outbox.Event{Kind: mxKindPing, Outcome: o})
	}
	for _, o := range []string{"delivered", "failed"} {
		m.Outbox(outbox.Event{Kind: mxKindChannel, Outcome: o})
	}
	m.Outbox(outbox.Event{Kind: store.KindOf('x'), Outcome: "delivered"}) // unknown kind: ignored
	mxWantFamily(t, reg, mxMails, map[string]float64{"result=sent": 2, "result=retry": 1, "result=failed": 1, "result=expired": 1})
	mxWantFamily(t, reg, mxPings, map[string]float64{"result=sent": 1, "result=retry": 2})
	mxWantFamily(t, reg, mxChannel, map[string]float64{"result=sent": 1, "result=failed": 1})
	// every kind has its queued series, a watched store or not
	mxWantFamily(t, reg, mxQueued, map[string]float64{"kind=mail": 0, "kind=ping": 0, "kind=channel": 0})
	mxWantFamily(t, reg, mxPending, map[string]float64{"": 0})
}

// TestMetricsNil: a nil *Metrics records nothing and does not panic.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.Request("token", "ok", "")
	m.Decision(true, "", time.Second)
	m.Exchange("ok", time.Second)
	m.SlowDown(SlowDownEarly)
	m.LimitRefusal("ip_rate")
	m.Outbox(outbox.Event{Kind: mxKindMail, Outcome: "delivered"})
	m.Watch(nil)()
}

// TestMetricsDescriptions: every family is named caddy_ciba_*, with help
// text, counters ending in _total and histograms in _seconds; the
// collectors go into any number of registries (one per Caddy config) but
// only once into each.
func TestMetricsDescriptions(t *testing.T) {
	m := New()
	reg := mxRegistry(t, m)
	// make every vector hold one series so that it is gathered
	m.Request("token", "ok", "")
	m.Decision(true, "", time.Second)
	m.Exchange("ok", time.Second)
	m.SlowDown(SlowDownEarly)
	m.LimitRefusal("ip_rate")
	m.Outbox(outbox.Event{Kind: mxKindMail, Outcome: "delivered"})
	m.Outbox(outbox.Event{Kind: mxKindPing, Outcome: "delivered"})
	m.Outbox(outbox.Event{Kind: mxKindChannel, Outcome: "delivered"})
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
	want := []string{mxDecSecs, mxDecisions, mxRefusals, mxMails, mxPings, mxChannel, mxQueued, mxPending,
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
