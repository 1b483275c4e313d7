package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMonitoringAssetsNameRealMetrics: the Grafana dashboard and the alert
// rules in scripts/monitoring use only metrics cibaproxy exports, so they
// cannot drift silently from the code.
func TestMonitoringAssetsNameRealMetrics(t *testing.T) {
	known := map[string]bool{}
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range New().Collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			known[m[1]+suffix] = true
		}
	}
	used := regexp.MustCompile(`caddy_ciba_[a-z_]+`)
	for _, f := range []string{"../../scripts/monitoring/grafana-dashboard.json", "../../scripts/monitoring/alerts.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names := used.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Errorf("%s names no caddy_ciba_ metric", f)
		}
		for _, n := range names {
			n = strings.TrimSuffix(n, "_")
			if !known[n] {
				t.Errorf("%s uses %s, which cibaproxy does not export", f, n)
			}
		}
	}
}
