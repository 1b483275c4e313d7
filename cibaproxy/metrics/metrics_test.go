package metrics

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn/httpchannel"
	"github.com/cibaproxy/cibaproxy/cibaproxy/cibatest"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// The outbox kinds of the proxy: the metrics know them by name only. The
// HTTP channel's is registered by authn/httpchannel, which the test kit
// links in; the other two are registered here as their packages
// (authn/email, ping) register them.
var (
	mxKindMail    = store.RegisterKind('m', KindMail)
	mxKindPing    = store.RegisterKind('p', KindPing)
	mxKindChannel = httpchannel.Kind
)

// TestMetricsOutboxEvents maps each outbox outcome to the counter of its
// kind.
func TestMetricsOutboxEvents(t *testing.T) {
	m := New()
	reg := cibatest.Registry(t, m.Collectors()...)
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
	cibatest.WantFamily(t, reg, cibatest.FamilyMails, map[string]float64{"result=sent": 2, "result=retry": 1, "result=failed": 1, "result=expired": 1})
	cibatest.WantFamily(t, reg, cibatest.FamilyPings, map[string]float64{"result=sent": 1, "result=retry": 2})
	cibatest.WantFamily(t, reg, cibatest.FamilyChannel, map[string]float64{"result=sent": 1, "result=failed": 1})
	// every kind has its queued series, a watched store or not
	cibatest.WantFamily(t, reg, cibatest.FamilyQueued, map[string]float64{"kind=mail": 0, "kind=ping": 0, "kind=channel": 0})
	cibatest.WantFamily(t, reg, cibatest.FamilyPending, map[string]float64{"": 0})
}

// mxRecordEach records one observation of each kind into m (a mail
// delivered for the outbox), nil or not.
func mxRecordEach(m *Metrics) {
	m.Request("token", "ok", "")
	m.Decision(true, "", time.Second)
	m.Exchange("ok", time.Second)
	m.SlowDown(SlowDownEarly)
	m.LimitRefusal("ip_rate")
	m.Outbox(outbox.Event{Kind: mxKindMail, Outcome: "delivered"})
}

// TestMetricsNil: a nil *Metrics records nothing and does not panic.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	mxRecordEach(m)
	m.Watch(nil)()
}

// TestMetricsDescriptions: every family is named caddy_ciba_*, with help
// text, counters ending in _total and histograms in _seconds; the
// collectors go into any number of registries (one per Caddy config) but
// only once into each.
func TestMetricsDescriptions(t *testing.T) {
	m := New()
	reg := cibatest.Registry(t, m.Collectors()...)
	// make every vector hold one series so that it is gathered
	mxRecordEach(m)
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
	want := []string{cibatest.FamilyDecSecs, cibatest.FamilyDecisions, cibatest.FamilyRefusals, cibatest.FamilyMails, cibatest.FamilyPings, cibatest.FamilyChannel, cibatest.FamilyQueued, cibatest.FamilyPending,
		cibatest.FamilyRequests, cibatest.FamilySlowDowns, cibatest.FamilyExchSecs, cibatest.FamilyExchanges}
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Errorf("families %q, want %q", names, want)
	}

	// a second registry (the next config) takes them all
	cibatest.Registry(t, m.Collectors()...)
	// the same registry twice: AlreadyRegisteredError, which the Caddy
	// module tolerates
	for _, c := range m.Collectors() {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); !errors.As(err, &are) {
			t.Errorf("registering %T twice: %v, want AlreadyRegisteredError", c, err)
		}
	}
}
