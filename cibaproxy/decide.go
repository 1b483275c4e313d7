package cibaproxy

import (
	"context"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/authn"
	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/ping"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// Decide records the user's decision on the request under key:
// store.ErrNotFound when there is none, authn.ErrDecided when it was
// decided before, authn.ErrExpired when it expired. Nothing changes in
// those cases. A ping client's notification is queued with the decision.
func (s *Server) Decide(ctx context.Context, key store.RequestKey, d authn.Decision) (*store.AuthRequest, error) {
	now := s.now()
	var items []*store.OutboxItem
	r, err := s.store.UpdateQueue(ctx, key, func(r *store.AuthRequest) ([]*store.OutboxItem, error) {
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
		items = s.pingItems(r, now)
		return items, nil
	})
	if err != nil {
		return nil, err
	}
	if len(items) > 0 {
		s.outbox.Wake()
	}
	s.cfg.Metrics.Decision(d == authn.Approve, s.clientLabel(r.ClientID), r.Decided.Sub(r.Created))
	return r, nil
}

// pingItems returns the notification of a decided request (CIBA Core
// §10.2: "after the OP has either successfully authenticated the end-user
// or failed to do so"): one item for a request of a ping client, none
// otherwise.
func (s *Server) pingItems(r *store.AuthRequest, now time.Time) []*store.OutboxItem {
	if len(r.Ping) == 0 {
		return nil
	}
	if cl := s.clients.Get(r.ClientID); cl == nil || cl.Mode != clients.ModePing {
		return nil // the configuration no longer makes it a ping client
	}
	return []*store.OutboxItem{ping.Item(r.Ping, s.cfg.PublicURL, r.Expires, now)}
}
