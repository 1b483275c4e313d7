package cibaproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/issuer"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// HealthPath is the health endpoint, under the public URL.
const HealthPath = issuer.Path + "/health"

// healthTimeout bounds the checks of one health request.
const healthTimeout = 3 * time.Second

// upstreamCheckTTL is how long one check of the upstream's discovery
// answers the health requests that follow. The endpoint is public: without
// it, each request would be a fetch at the upstream.
const upstreamCheckTTL = 5 * time.Second

// healthReport is the body of the health endpoint. It is on the public
// origin, so it holds a status and one ok per part, nothing else: no
// address, host or error text, and no count or time, which would move
// with each request for a real user (a queued mail, a pending request) and
// so tell real users from unknown ones despite hide_unknown_users. The
// reasons and the figures are in the logs and the metrics.
type healthReport struct {
	Status   string     `json:"status"` // ok, degraded or failing
	Store    healthPart `json:"store"`
	Upstream healthPart `json:"upstream"`
	// deliveries are the parts of the authenticators that report their
	// deliveries ("smtp"), after the others.
	deliveries []namedPart
}

type healthPart struct {
	OK bool `json:"ok"`
}

type namedPart struct {
	name string
	part healthPart
}

// MarshalJSON writes the fixed parts, then the deliveries' by name.
func (r *healthReport) MarshalJSON() ([]byte, error) {
	type fixed healthReport
	b, err := json.Marshal((*fixed)(r))
	if err != nil {
		return nil, err
	}
	b = b[:len(b)-1]
	for _, np := range r.deliveries {
		v, err := json.Marshal(np.part)
		if err != nil {
			return nil, err
		}
		b = append(b, ',')
		b = strconv.AppendQuote(b, np.name)
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
	now     func() time.Time

	// The last check of the upstream, shared by the requests of the next
	// upstreamCheckTTL; group makes concurrent requests share one check.
	group   singleflight.Group
	mu      sync.Mutex
	checked bool
	at      time.Time
	// failing is the last check's result; a change is logged once, not
	// on every check.
	failing bool
}

// serve answers GET /ciba/health: 200 with whether the store, the
// upstream's discovery and the deliveries of the authenticators that
// report them work; 503 only when the store is unusable (the proxy cannot
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

	// The pending count is one counter (a few keys in Badger, one GET in
	// Redis): a cheap read that fails when the store does. Its value is
	// not reported.
	_, err := hl.store.PendingCount(ctx)
	rep.Store.OK = err == nil
	if err != nil {
		hl.log.Error("health: the store is unusable", zap.Error(err))
		rep.Status = "failing"
	}
	if rep.Upstream.OK = hl.upstreamOK(ctx); !rep.Upstream.OK {
		rep.degrade()
	}
	hl.reportDeliveries(rep)

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

// reportDeliveries adds the parts of the authenticators that report their
// deliveries: whether the last attempt, in this process, succeeded. What
// waits in the outbox is not reported (caddy_ciba_outbox_queued has it).
func (hl *health) reportDeliveries(rep *healthReport) {
	for _, e := range hl.auth.entries {
		hr, ok := e.Authenticator.(authn.HealthReporter)
		if !ok {
			continue
		}
		kind, _ := hr.Route()
		p := healthPart{OK: !hl.outbox.Health(kind).Failing()}
		if !p.OK {
			rep.degrade()
		}
		rep.deliveries = append(rep.deliveries, namedPart{hr.HealthName(), p})
	}
}

// upstreamOK reports whether the upstream's discovery document could be
// fetched at the last check, checking again when that check is older than
// upstreamCheckTTL. Concurrent requests share one check, which a request
// giving up does not cancel.
func (hl *health) upstreamOK(ctx context.Context) bool {
	hl.mu.Lock()
	age := hl.now().Sub(hl.at)
	if hl.checked && age >= 0 && age < upstreamCheckTTL {
		ok := !hl.failing
		hl.mu.Unlock()
		return ok
	}
	hl.mu.Unlock()
	ch := hl.group.DoChan("upstream", func() (any, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthTimeout)
		defer cancel()
		_, err := hl.disc.Check(cctx)
		hl.record(err)
		return nil, err
	})
	select {
	case res := <-ch:
		return res.Err == nil
	case <-ctx.Done():
		return false
	}
}

// record keeps the result of a check of the upstream; a change from
// working to failing (or back) is logged once, not on every check.
func (hl *health) record(err error) {
	hl.mu.Lock()
	failing, was := err != nil, hl.failing && hl.checked
	hl.checked, hl.at, hl.failing = true, hl.now(), failing
	hl.mu.Unlock()
	switch {
	case failing && !was:
		hl.log.Warn("health: upstream discovery fails", zap.Error(err))
	case !failing && was:
		hl.log.Info("health: upstream discovery works again")
	}
}
