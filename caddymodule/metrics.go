package caddymodule

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cibaproxy/cibaproxy/cibaproxy/metrics"
)

// The collectors are built once per process and registered into every
// configuration's registry (Caddy makes a fresh one per load), so a reload
// neither panics nor loses the series.
var (
	metricsOnce sync.Once
	collectors  *metrics.Metrics
)

func processMetrics() *metrics.Metrics {
	metricsOnce.Do(func() { collectors = metrics.New() })
	return collectors
}

// registerMetrics registers the collectors into reg, tolerating the ones
// already there (two ciba handlers in one configuration).
func registerMetrics(reg prometheus.Registerer) error {
	for _, c := range processMetrics().Collectors() {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
