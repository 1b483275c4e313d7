// Package authn is how the proxy reaches the user of a request, who then
// decides: the Authenticator interface (the e-mail link in package
// authn/email, the HTTP authentication channel in authn/httpchannel), the
// pages they serve, and how a request's acr_values choose among them.
package authn

import (
	"context"
	"errors"
	"net/http"

	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Authenticator reaches the user of a new request so that they can decide.
// Its page (or callback) later reports the decision with Requests.Decide.
type Authenticator interface {
	// Start is called for a validated request before it is stored, with the
	// request's key. What it returns is stored in the same transaction as
	// the request, so the user is reached if and only if the request exists.
	Start(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error)

// Start implements Authenticator.
func (f AuthenticatorFunc) Start(ctx context.Context, key store.RequestKey, req *store.AuthRequest) (*store.Outbound, error) {
	return f(ctx, key, req)
}

// PageServer is an Authenticator that also serves pages to the user (the
// approval page of the e-mail link) or to a device service (the HTTP
// channel's callbacks), under /ciba/.
type PageServer interface {
	// PagePath is the path prefix of the pages only this authenticator can
	// serve (the e-mail link's approval pages, signed with its settings);
	// two authenticators of a site cannot have the same. It is empty when
	// each page finds what it serves in the store, so that any
	// authenticator of its kind serves the pages of all (the HTTP
	// channels of several acr values share their callbacks).
	PagePath() string
	// ServePage serves r if it is one of its pages, and reports whether it
	// did.
	ServePage(w http.ResponseWriter, r *http.Request, reqs Requests) bool
}

// Deliverer is an Authenticator that delivers what it queues in the
// outbox: the site registers it with the store's outbox worker for the
// items of its Route, and unregisters it when the site is unloaded.
type Deliverer interface {
	// Route returns the kind and the sender name of the items it queues.
	Route() (store.Kind, string)
	// Deliver makes one attempt at delivering an item (see the outbox
	// package).
	Deliver(ctx context.Context, it *store.OutboxItem) error
}

// HealthReporter is an Authenticator whose deliveries the health report
// shows, under a name of its own ("smtp" for the e-mail link).
type HealthReporter interface {
	Deliverer
	HealthName() string
}

// Requests is what the pages need of the site: its requests, and the
// recording of a decision.
type Requests interface {
	Request(ctx context.Context, key store.RequestKey) (*store.AuthRequest, error)
	Decide(ctx context.Context, key store.RequestKey, d Decision) (*store.AuthRequest, error)
}

// Decision is the user's answer to a request.
type Decision bool

// The two decisions.
const (
	Deny    Decision = false
	Approve Decision = true
)

// Errors of Requests.Decide.
var (
	ErrDecided = errors.New("request already decided")
	ErrExpired = errors.New("request expired")
)

// Refusal names what a page answers when Requests.Decide (or a lookup of
// the request) failed: "decided", "expired" or "unknown" when nothing was
// changed, "error" when the store failed (which the page logs); "" when
// err is nil.
func Refusal(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrDecided):
		return "decided"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, store.ErrNotFound):
		return "unknown"
	}
	return "error"
}

// Recorder counts the answers of the pages (metrics.Metrics does).
type Recorder interface {
	Request(endpoint, outcome, client string)
}

// NoRecorder counts nothing.
type NoRecorder struct{}

// Request implements Recorder.
func (NoRecorder) Request(string, string, string) {}
