package cibatest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Reading back what the proxy's Prometheus collectors hold.

// The metric families of the proxy, by name.
const (
	FamilyPending   = "caddy_ciba_pending_requests"
	FamilyRequests  = "caddy_ciba_requests_total"
	FamilyDecisions = "caddy_ciba_decisions_total"
	FamilyDecSecs   = "caddy_ciba_decision_seconds"
	FamilyExchanges = "caddy_ciba_upstream_exchanges_total"
	FamilyExchSecs  = "caddy_ciba_upstream_exchange_seconds"
	FamilySlowDowns = "caddy_ciba_slow_down_total"
	FamilyRefusals  = "caddy_ciba_limit_refusals_total"
	FamilyMails     = "caddy_ciba_mails_total"
	FamilyPings     = "caddy_ciba_notifications_total"
	FamilyChannel   = "caddy_ciba_channel_requests_total"
	FamilyQueued    = "caddy_ciba_outbox_queued"
)

// Registry returns a fresh pedantic registry (it checks that what a
// collector collects matches what it describes) holding the collectors.
func Registry(t testing.TB, cs ...prometheus.Collector) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatalf("registering %T: %v", c, err)
		}
	}
	return reg
}

// Series is one gathered series: its labels (empty values left out, as
// the exposition format treats them as absent), its value for a counter or
// gauge, its count and sum for a histogram.
type Series struct {
	Labels map[string]string
	Value  float64
	Count  uint64
	Sum    float64
}

// Gather returns the series of every family by name.
func Gather(t testing.TB, g prometheus.Gatherer) map[string][]Series {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := make(map[string][]Series, len(mfs))
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			s := Series{Labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				if lp.GetValue() != "" {
					s.Labels[lp.GetName()] = lp.GetValue()
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.Value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.Value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s.Count = m.GetHistogram().GetSampleCount()
				s.Sum = m.GetHistogram().GetSampleSum()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
			out[mf.GetName()] = append(out[mf.GetName()], s)
		}
	}
	return out
}

// LabelKey writes a label set as "k=v,k=v", sorted by name.
func LabelKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// Family returns every series of a counter or gauge family as its
// LabelKey → value.
func Family(t testing.TB, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range Gather(t, g)[name] {
		out[LabelKey(s.Labels)] = s.Value
	}
	return out
}

// WantFamily checks every series of a counter or gauge family: none
// missing, none extra.
func WantFamily(t testing.TB, g prometheus.Gatherer, name string, want map[string]float64) {
	t.Helper()
	if got := Family(t, g, name); !maps.Equal(got, want) {
		t.Errorf("%s:\n got  %s\n want %s", name, formatFamily(got), formatFamily(want))
	}
}

func formatFamily(m map[string]float64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "{%s}=%v ", k, m[k])
	}
	return b.String()
}
