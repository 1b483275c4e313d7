package authn

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/clientip"
	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/mask"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// AuditDecision writes the audit line of a decision: who asked, for whom,
// what the user saw, what they decided, from where, and how long it took.
// The address is masked; no token is written. clientIP tells the deciding
// party's address (Caddy's client_ip); nil means the peer's.
func AuditDecision(log *zap.Logger, r *http.Request, clientIP func(*http.Request) string, key store.RequestKey, req *store.AuthRequest, outcome string, extra ...zap.Field) {
	fields := append([]zap.Field{
		zap.String("audit", "decision"),
		zap.String("client_id", req.ClientID),
		zap.String("request", key.Short()),
		zap.String("user", mask.Email(req.User.Email)),
		zap.String("binding_message", req.BindingMessage),
		zap.String("decision", outcome),
		zap.String("remote_ip", clientip.Of(r, clientIP)),
		zap.String("user_agent", r.UserAgent()),
		zap.Duration("time_to_decision", req.Decided.Sub(req.Created)),
	}, extra...)
	log.Info("decision", fields...)
}
