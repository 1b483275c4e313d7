package cibaproxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// HealthPath is the health endpoint, under the public URL.
const HealthPath = IssuerPath + "/health"

// healthTimeout bounds the checks of one health request.
const healthTimeout = 3 * time.Second

type healthReport struct {
	Status   string         `json:"status"` // ok, degraded or failing
	Store    healthStore    `json:"store"`
	Upstream healthUpstream `json:"upstream"`
	SMTP     *healthSMTP    `json:"smtp,omitempty"`
}

// The report names no address, host or error text: the endpoint is on the
// public origin. The reasons are logged.
type healthStore struct {
	OK      bool  `json:"ok"`
	Pending int64 `json:"pending"`
}

type healthUpstream struct {
	OK bool `json:"ok"`
}

type healthSMTP struct {
	OK          bool       `json:"ok"`
	Queue       int        `json:"queue"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
}

// serveHealth answers GET /ciba/health: 200 with the state of the store,
// the upstream's discovery and the mail delivery; 503 only when the store
// is unusable (the proxy cannot answer anything then).
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		WriteError(w, newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "use GET"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	rep := healthReport{Status: "ok"}

	n, err := s.store.PendingCount(ctx)
	rep.Store = healthStore{OK: err == nil, Pending: n}
	if err != nil {
		s.log.Error("health: the store is unusable", zap.Error(err))
		rep.Status = "failing"
	}

	if err := s.checkUpstream(ctx); err != nil {
		if rep.Status == "ok" {
			rep.Status = "degraded"
		}
	} else {
		rep.Upstream.OK = true
	}

	if _, ok := s.cfg.Authenticator.(*EmailAuthenticator); ok && s.backend != nil {
		h := s.backend.Outbox.Health(KindMail)
		sm := &healthSMTP{OK: !h.Failing()}
		if !h.LastSuccess.IsZero() {
			sm.LastSuccess = &h.LastSuccess
		}
		if !h.LastFailure.IsZero() {
			sm.LastFailure = &h.LastFailure
		}
		if counts, err := s.store.OutboxCounts(ctx); err == nil {
			sm.Queue = counts[KindMail]
		}
		if !sm.OK && rep.Status == "ok" {
			rep.Status = "degraded"
		}
		rep.SMTP = sm
	}

	body, _ := json.Marshal(&rep)
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
	s.cfg.Metrics.Request("health", rep.Status, "")
}

// checkUpstream fetches the upstream's discovery document; a change from
// working to failing (or back) is logged once, not on every probe.
func (s *Server) checkUpstream(ctx context.Context) error {
	_, err := s.disc.Check(ctx)
	s.healthMu.Lock()
	failing, was := err != nil, s.healthFailing
	s.healthFailing = failing
	s.healthMu.Unlock()
	switch {
	case failing && !was:
		s.log.Warn("health: upstream discovery fails", zap.Error(err))
	case !failing && was:
		s.log.Info("health: upstream discovery works again")
	}
	return err
}
