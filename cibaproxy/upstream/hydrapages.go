package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"
)

// hydraPageTimeout bounds the admin calls of one browser request.
const hydraPageTimeout = 10 * time.Second

// ServePage serves Hydra's urls.login and urls.consent (the proxy's
// LoginPath and ConsentPath) and reports whether r was one of them. The
// proxy's own mints never come here: they handle their challenges in
// process. So a challenge here is a browser's: one of the deployment's
// other logins goes to the fallback app, challenge unchanged, or without a
// fallback is rejected at Hydra and the browser sent where Hydra says; one
// whose state the proxy made (a replayed or stolen state) is rejected at
// Hydra and never accepted here.
func (m *HydraMinter) ServePage(w http.ResponseWriter, r *http.Request) bool {
	var kind, fallback string
	switch r.URL.Path {
	case m.cfg.LoginPath:
		kind, fallback = "login", m.cfg.FallbackLogin
	case m.cfg.ConsentPath:
		kind, fallback = "consent", m.cfg.FallbackConsent
	default:
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return true
	}
	challenge := r.URL.Query().Get(kind + "_challenge")
	if challenge == "" {
		http.Error(w, "invalid_request: the "+kind+"_challenge parameter is missing", http.StatusBadRequest)
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), hydraPageTimeout)
	defer cancel()
	var req hydraRequest
	if err := m.adminCall(ctx, http.MethodGet, kind, "", challenge, nil, &req); err != nil {
		m.pageError(w, kind, err)
		return true
	}
	switch route := m.route(kind, &req, fallback); route.action {
	case routeFallback:
		http.Redirect(w, r, route.to, http.StatusFound)
	case routeReject, routeRefuse:
		to, err := m.reject(ctx, kind, challenge, route.reason)
		if err != nil {
			m.pageError(w, kind, err)
			return true
		}
		if route.action == routeRefuse {
			m.log.Warn("a browser brought a "+kind+" challenge of the proxy's own mints; rejected at the upstream",
				zap.String("client", req.Client.ClientID))
			http.Error(w, "access_denied: this "+kind+" challenge is not a browser's", http.StatusForbidden)
			return true
		}
		http.Redirect(w, r, to, http.StatusFound)
	}
	return true
}

// Where a browser's challenge goes.
const (
	routeFallback = iota // to the fallback app
	routeReject          // rejected at Hydra, the browser sent on
	routeRefuse          // a proxy-made state: rejected, the browser stopped
)

type pageRoute struct {
	action int
	to     string // the fallback URL with the challenge
	reason string // the error description of a rejection
}

// route decides what happens to a browser's login or consent challenge.
func (m *HydraMinter) route(kind string, req *hydraRequest, fallback string) pageRoute {
	if m.IsProxyState(req.state()) {
		return pageRoute{action: routeRefuse, reason: "this " + kind + " belongs to the CIBA proxy and cannot be completed in a browser"}
	}
	if fallback == "" {
		return pageRoute{action: routeReject, reason: "no " + kind + " app is configured for browser logins"}
	}
	u, _ := url.Parse(fallback) // checked by Validate
	q := u.Query()
	q.Set(kind+"_challenge", req.Challenge)
	u.RawQuery = q.Encode()
	return pageRoute{action: routeFallback, to: u.String()}
}

// reject rejects a challenge at Hydra (access_denied) and returns where
// Hydra sends the browser.
func (m *HydraMinter) reject(ctx context.Context, kind, challenge, reason string) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := m.adminCall(ctx, http.MethodPut, kind, "reject", challenge, map[string]any{
		"error":             "access_denied",
		"error_description": reason,
		"status_code":       http.StatusForbidden,
	}, &out)
	if err == nil && out.RedirectTo == "" {
		err = &MintError{Refused: true, Err: errors.New("the upstream's reject gave no redirect_to")}
	}
	return out.RedirectTo, err
}

// pageError answers a browser whose challenge could not be looked up or
// rejected: 400 for a challenge Hydra refuses (unknown, expired, used),
// 503 when Hydra cannot be reached.
func (m *HydraMinter) pageError(w http.ResponseWriter, kind string, err error) {
	if isRefused(err) {
		http.Error(w, "invalid_request: the upstream does not know this "+kind+" challenge or refused it", http.StatusBadRequest)
		return
	}
	m.log.Warn("the upstream's admin API failed on a browser's "+kind+" challenge", zap.Error(err))
	w.Header().Set("Retry-After", "5")
	http.Error(w, "temporarily_unavailable: the upstream cannot be reached", http.StatusServiceUnavailable)
}
