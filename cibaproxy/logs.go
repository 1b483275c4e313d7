package cibaproxy

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
)

// logOutcome counts an answer of endpoint and logs it: errors the client
// caused at info, normal polling at debug, upstream failures at warn,
// server errors at error.
func (s *Server) logOutcome(endpoint string, who answered, e *oauth.Error) {
	if s.cfg.Metrics != nil {
		outcome, client := "ok", ""
		if e != nil {
			outcome = e.Code
		}
		if who.client != nil {
			client = s.clientLabel(who.client.ID)
		}
		s.cfg.Metrics.Request(endpoint, outcome, client)
	}
	level := zapcore.InfoLevel
	switch {
	case e == nil:
	case e.Quiet():
		level = zapcore.DebugLevel
	case e.Status >= 500:
		level = zapcore.ErrorLevel
	case e.Unwrap() != nil:
		level = zapcore.WarnLevel // e.g. slow_down for an upstream failure
	}
	c := s.log.Check(level, "request answered")
	if c == nil {
		return
	}
	fields := make([]zap.Field, 0, 5)
	fields = append(fields, zap.String("endpoint", endpoint))
	if who.client != nil {
		fields = append(fields, zap.String("client_id", who.client.ID))
	}
	if who.key != nil {
		fields = append(fields, zap.String("request", who.key.Short()))
	}
	if e == nil {
		fields = append(fields, zap.String("outcome", "ok"))
	} else {
		fields = append(fields, zap.String("outcome", e.Code))
		if cause := e.Unwrap(); cause != nil {
			fields = append(fields, zap.Error(cause))
		}
	}
	c.Write(fields...)
}
