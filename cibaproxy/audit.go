package cibaproxy

import (
	"net"
	"net/http"

	"go.uber.org/zap"
)

// auditDecision writes the audit line of a decision: who asked, for whom,
// what the user saw, what they decided, from where, and how long it took.
// The address is masked; no token is written.
func auditDecision(log *zap.Logger, r *http.Request, clientIP func(*http.Request) string, key RequestKey, req *AuthRequest, outcome string, extra ...zap.Field) {
	fields := append([]zap.Field{
		zap.String("audit", "decision"),
		zap.String("client_id", req.ClientID),
		zap.String("request", shortKey(key)),
		zap.String("user", MaskEmail(req.User.Email)),
		zap.String("binding_message", req.BindingMessage),
		zap.String("decision", outcome),
		zap.String("remote_ip", requestIP(r, clientIP)),
		zap.String("user_agent", r.UserAgent()),
		zap.Duration("time_to_decision", req.Decided.Sub(req.Created)),
	}, extra...)
	log.Info("decision", fields...)
}

// requestIP returns the client's address as clientIP (Caddy's client_ip,
// which honours trusted_proxies) says, else the peer's.
func requestIP(r *http.Request, clientIP func(*http.Request) string) string {
	if clientIP != nil {
		if ip := clientIP(r); ip != "" {
			return ip
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
