package cibaproxy

import (
	"context"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// decisions records the users' decisions, with the notifications of ping
// clients.
type decisions struct {
	store     Store
	clients   *clients.Registry
	outbox    *outbox.Worker
	answers   *answers
	metrics   *metrics.Metrics
	publicURL string
	now       func() time.Time
}

// decide records a decision (Server.Decide).
func (dc *decisions) decide(ctx context.Context, key store.RequestKey, d authn.Decision) (*store.AuthRequest, error) {
	now := dc.now()
	var items []*store.OutboxItem
	r, err := dc.store.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) {
		if r.Status != store.StatusPending {
			return nil, authn.ErrDecided
		}
		if r.Expired(now) {
			return nil, authn.ErrExpired
		}
		r.Status = store.StatusDenied
		if d == authn.Approve {
			r.Status = store.StatusApproved
		}
		r.Decided = now
		items = dc.pingItems(r, now)
		return items, nil
	})
	if err != nil {
		return nil, err
	}
	if len(items) > 0 {
		dc.outbox.Wake()
	}
	dc.metrics.Decision(d == authn.Approve, dc.answers.clientLabel(r.ClientID), r.Decided.Sub(r.Created))
	return r, nil
}

// pingItems returns the notification of a decided request (CIBA Core
// §10.2: "after the OP has either successfully authenticated the end-user
// or failed to do so"): one item for a request of a ping client, none
// otherwise.
func (dc *decisions) pingItems(r *store.AuthRequest, now time.Time) []*store.OutboxItem {
	if len(r.Ping) == 0 {
		return nil
	}
	if cl := dc.clients.Get(r.ClientID); cl == nil || cl.Mode != clients.ModePing {
		return nil // the configuration no longer makes it a ping client
	}
	return []*store.OutboxItem{ping.Item(r.Ping, dc.publicURL, r.Expires, now)}
}
