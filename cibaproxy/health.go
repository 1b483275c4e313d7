package cibaproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// HealthPath is the health endpoint, under the public URL.
const HealthPath = issuer.Path + "/health"

// healthTimeout bounds the checks of one health request.
const healthTimeout = 3 * time.Second

// healthReport is the body of the health endpoint. It names no address,
// host or error text: the endpoint is on the public origin. The reasons
// are logged.
type healthReport struct {
	Status   string         `json:"status"` // ok, degraded or failing
	Store    healthStore    `json:"store"`
	Upstream healthUpstream `json:"upstream"`
	// deliveries are the sections of the authenticators that report their
	// deliveries ("smtp"), after the others.
	deliveries []namedDeliveries
}

type healthStore struct {
	OK      bool  `json:"ok"`
	Pending int64 `json:"pending"`
}

type healthUpstream struct {
	OK bool `json:"ok"`
}

type namedDeliveries struct {
	name string
	d    *healthDeliveries
}

type healthDeliveries struct {
	OK          bool       `json:"ok"`
	Queue       int        `json:"queue"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
}

// MarshalJSON writes the fixed sections, then the deliveries' by name.
func (r *healthReport) MarshalJSON() ([]byte, error) {
	type fixed healthReport
	b, err := json.Marshal((*fixed)(r))
	if err != nil {
		return nil, err
	}
	b = b[:len(b)-1]
	for _, nd := range r.deliveries {
		v, err := json.Marshal(nd.d)
		if err != nil {
			return nil, err
		}
		b = append(b, ',')
		b = strconv.AppendQuote(b, nd.name)
		b = append(b, ':')
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

// health answers the health endpoint of a site.
type health struct {
	store   Store
	disc    *upstream.Discovery
	outbox  *outbox.Worker
	auth    *authenticators
	metrics *metrics.Metrics
	log     *zap.Logger

	// failing remembers whether the upstream was failing at the last
	// check, so a change is logged once, not on every probe.
	mu      sync.Mutex
	failing bool
}

// serve answers GET /ciba/health: 200 with the state of the store,
// the upstream's discovery and the deliveries of the authenticators that
// report them; 503 only when the store is unusable (the proxy cannot
// answer anything then).
func (hl *health) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		oauth.WriteError(w, oauth.New(http.StatusMethodNotAllowed, oauth.CodeInvalidRequest, "use GET"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	rep := &healthReport{Status: "ok"}

	n, err := hl.store.PendingCount(ctx)
	rep.Store = healthStore{OK: err == nil, Pending: n}
	if err != nil {
		hl.log.Error("health: the store is unusable", zap.Error(err))
		rep.Status = "failing"
	}
	if err := hl.checkUpstream(ctx); err != nil {
		rep.degrade()
	} else {
		rep.Upstream.OK = true
	}
	hl.reportDeliveries(ctx, rep)

	body, _ := json.Marshal(rep)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	status := http.StatusOK
	if !rep.Store.OK {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	hl.metrics.Request("health", rep.Status, "")
}

// degrade marks the report degraded, unless it is failing.
func (r *healthReport) degrade() {
	if r.Status == "ok" {
		r.Status = "degraded"
	}
}

// reportDeliveries adds the sections of the authenticators that report
// their deliveries: how the last attempts went, in this process, and how
// many items wait.
func (hl *health) reportDeliveries(ctx context.Context, rep *healthReport) {
	var counts map[store.Kind]int
	for _, e := range hl.auth.entries {
		hr, ok := e.Authenticator.(authn.HealthReporter)
		if !ok {
			continue
		}
		kind, _ := hr.Route()
		h := hl.outbox.Health(kind)
		d := &healthDeliveries{OK: !h.Failing()}
		if !h.LastSuccess.IsZero() {
			d.LastSuccess = &h.LastSuccess
		}
		if !h.LastFailure.IsZero() {
			d.LastFailure = &h.LastFailure
		}
		if counts == nil {
			counts, _ = hl.store.OutboxCounts(ctx)
		}
		d.Queue = counts[kind]
		if !d.OK {
			rep.degrade()
		}
		rep.deliveries = append(rep.deliveries, namedDeliveries{hr.HealthName(), d})
	}
}

// checkUpstream fetches the upstream's discovery document; a change from
// working to failing (or back) is logged once, not on every probe.
func (hl *health) checkUpstream(ctx context.Context) error {
	_, err := hl.disc.Check(ctx)
	hl.mu.Lock()
	failing, was := err != nil, hl.failing
	hl.failing = failing
	hl.mu.Unlock()
	switch {
	case failing && !was:
		hl.log.Warn("health: upstream discovery fails", zap.Error(err))
	case !failing && was:
		hl.log.Info("health: upstream discovery works again")
	}
	return err
}
