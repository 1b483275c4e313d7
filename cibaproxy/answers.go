package cibaproxy

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cibaproxy/cibaproxy/cibaproxy/clients"
	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
)

// answered is what the log says of an answered request: its client and
// request, when they are known.
type answered struct {
	client *clients.Client
	key    *store.RequestKey
}

// answers counts and logs the answers of a site's endpoints.
type answers struct {
	log     *zap.Logger
	metrics *metrics.Metrics
	// byClient fills the client label of the metrics with the client id.
	byClient bool
}

// clientLabel is the client label of metrics: the client id when the
// configuration turns it on, else empty.
func (a *answers) clientLabel(id string) string {
	if a.byClient {
		return id
	}
	return ""
}

// record counts an answer of endpoint and logs it: errors the client
// caused at info, normal polling at debug, upstream failures at warn,
// server errors at error.
func (a *answers) record(endpoint string, who answered, e *oauth.Error) {
	if a.metrics != nil {
		outcome, client := "ok", ""
		if e != nil {
			outcome = e.Code
		}
		if who.client != nil {
			client = a.clientLabel(who.client.ID)
		}
		a.metrics.Request(endpoint, outcome, client)
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
	c := a.log.Check(level, "request answered")
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
