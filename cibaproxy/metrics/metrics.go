// Package metrics holds cibaproxy's Prometheus collectors, named
// caddy_ciba_*.
package metrics

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are cibaproxy's Prometheus collectors, named caddy_ciba_*. Build
// them once per process (NewMetrics) and register Collectors into every
// configuration's registry, so a reload neither loses nor duplicates a
// series. Labels come from small fixed sets; the client label stays empty
// unless a configuration turns it on. A nil *Metrics records nothing.
type Metrics struct {
	requests        *prometheus.CounterVec
	decisions       *prometheus.CounterVec
	decisionSeconds *prometheus.HistogramVec
	mails           *prometheus.CounterVec
	notifications   *prometheus.CounterVec
	channel         *prometheus.CounterVec
	exchanges       *prometheus.CounterVec
	exchangeSeconds prometheus.Histogram
	slowDowns       *prometheus.CounterVec
	limitRefusals   *prometheus.CounterVec
	state           *stateCollector
}

// Label values of caddy_ciba_slow_down_total's reason.
const (
	SlowDownEarly    = store.SlowDownEarly   // polled before the interval passed
	SlowDownOverlap  = store.SlowDownOverlap // overlapped another poll of the request
	SlowDownUpstream = "upstream"            // the upstream failed transiently
	SlowDownStore    = "store"               // the store was unreachable
)

// New builds the collectors.
func New() *Metrics {
	const ns, sub = "caddy", "ciba"
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests answered by cibaproxy, by endpoint and outcome (ok or the error code; the page outcome for the approval page).",
		}, []string{"endpoint", "outcome", "client"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "decisions_total",
			Help: "Users' decisions on requests: approved or denied.",
		}, []string{"decision", "client"}),
		decisionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "decision_seconds",
			Help:    "Time from a backchannel request to the user's decision.",
			Buckets: []float64{2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800},
		}, []string{"decision"}),
		mails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "mails_total",
			Help: "Approval mails by result of each attempt: sent, retry (will be tried again), failed (refused for good), expired (its request expired first).",
		}, []string{"result"}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "notifications_total",
			Help: "Ping notifications by result of each attempt: sent, retry, failed, expired.",
		}, []string{"result"}),
		channel: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "channel_requests_total",
			Help: "Requests posted to the HTTP authentication channel, by result of each attempt: sent, retry, failed, expired.",
		}, []string{"result"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_exchanges_total",
			Help: "Token mints at the upstream by result: ok, refused (the upstream answered 4xx), failed (down, 5xx, timeout).",
		}, []string{"result"}),
		exchangeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_exchange_seconds",
			Help:    "Time to mint tokens at the upstream (one or two RFC 8693 exchanges and the ID token's verification).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20},
		}),
		slowDowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "slow_down_total",
			Help: "Polls answered slow_down, by reason: early, overlap, upstream, store.",
		}, []string{"reason"}),
		limitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "limit_refusals_total",
			Help: "Requests refused by a limit: client_rate, ip_rate, user_pending, user_mail (backchannel endpoint), auth_failures (backchannel and token endpoints).",
		}, []string{"limit"}),
		state: &stateCollector{
			sources: make(map[Source]struct{}),
			pending: prometheus.NewDesc("caddy_ciba_pending_requests",
				"Requests created and not yet decided or expired (kept exact in the store, across restarts).", nil, nil),
			queued: prometheus.NewDesc("caddy_ciba_outbox_queued",
				"Mails, notifications and channel requests waiting in the outbox, by kind: mail, ping, channel.", []string{"kind"}, nil),
		},
	}
	return m
}

// Collectors returns the collectors to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.decisions, m.decisionSeconds, m.mails, m.notifications, m.channel,
		m.exchanges, m.exchangeSeconds, m.slowDowns, m.limitRefusals, m.state}
}

// Request counts an answer of endpoint.
func (m *Metrics) Request(endpoint, outcome, client string) {
	if m != nil {
		m.requests.WithLabelValues(endpoint, outcome, client).Inc()
	}
}

// Decision counts a user's decision and the time it took.
func (m *Metrics) Decision(approved bool, client string, took time.Duration) {
	if m == nil {
		return
	}
	d := "denied"
	if approved {
		d = "approved"
	}
	m.decisions.WithLabelValues(d, client).Inc()
	m.decisionSeconds.WithLabelValues(d).Observe(took.Seconds())
}

// Exchange counts a mint at the upstream.
func (m *Metrics) Exchange(result string, took time.Duration) {
	if m == nil {
		return
	}
	m.exchanges.WithLabelValues(result).Inc()
	m.exchangeSeconds.Observe(took.Seconds())
}

// SlowDown counts a slow_down answer.
func (m *Metrics) SlowDown(reason string) {
	if m != nil {
		m.slowDowns.WithLabelValues(reason).Inc()
	}
}

// LimitRefusal counts a request refused by a limit.
func (m *Metrics) LimitRefusal(limit string) {
	if m != nil {
		m.limitRefusals.WithLabelValues(limit).Inc()
	}
}

// Outbox counts a delivery outcome of the outbox, in the counter of its
// kind: mails_total, notifications_total or channel_requests_total.
func (m *Metrics) Outbox(ev outbox.Event) {
	if m == nil {
		return
	}
	result := ev.Outcome
	if result == "delivered" {
		result = "sent"
	}
	switch ev.Kind.Name() {
	case KindMail:
		m.mails.WithLabelValues(result).Inc()
	case KindPing:
		m.notifications.WithLabelValues(result).Inc()
	case KindChannel:
		m.channel.WithLabelValues(result).Inc()
	}
}

// The names of the outbox kinds the metrics count: the kind label of
// caddy_ciba_outbox_queued, always present, and their counters.
const (
	KindMail    = "mail"
	KindPing    = "ping"
	KindChannel = "channel"
)

// Source is a store the gauges read at scrape time.
type Source interface {
	PendingCount(ctx context.Context) (int64, error)
	OutboxCounts(ctx context.Context) (map[store.Kind]int, error)
}

// Watch adds a store's pending count and outbox to the gauges until the
// returned function is called.
func (m *Metrics) Watch(src Source) (unwatch func()) {
	if m == nil {
		return func() {}
	}
	m.state.mu.Lock()
	m.state.sources[src] = struct{}{}
	m.state.mu.Unlock()
	return func() {
		m.state.mu.Lock()
		delete(m.state.sources, src)
		m.state.mu.Unlock()
	}
}

// stateCollector reads the gauges from the open stores at scrape time.
type stateCollector struct {
	mu      sync.Mutex
	sources map[Source]struct{}
	pending *prometheus.Desc
	queued  *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.queued
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := make([]Source, 0, len(c.sources))
	for src := range c.sources {
		sources = append(sources, src)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var pending int64
	queued := map[string]int{KindMail: 0, KindPing: 0, KindChannel: 0}
	for _, k := range store.Kinds() {
		queued[k.Name()] += 0
	}
	for _, src := range sources {
		if n, err := src.PendingCount(ctx); err == nil {
			pending += n
		}
		if counts, err := src.OutboxCounts(ctx); err == nil {
			for k, n := range counts {
				queued[k.Name()] += n
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending))
	for _, name := range slices.Sorted(maps.Keys(queued)) {
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(queued[name]), name)
	}
}
