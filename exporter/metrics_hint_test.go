package exporter

import (
	"strings"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/metrics"
)

// metricsSizeHint, the size the encode buffer is made with, is never below
// what encodeMetrics writes (or the buffer would grow by appends, leaving
// garbage) nor far above it (memory held for nothing).
func TestMetricsSizeHint(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "OTEL_RESOURCE_ATTRIBUTES" {
			return "k8s.node.name=" + strings.Repeat("n", 300) + ",deployment.environment=prod", true
		}
		return "", false
	}
	res := buildResource(Config{ServiceName: "gomon", Version: "v1.2.3"}, lookup)
	big := metrics.NewBatch()
	h := metrics.NewHist(testHist)
	h.Observe(0.3)
	for i := range 200 {
		l := []metrics.Label{{Key: "k8s.pod.name", Value: strings.Repeat("p", i)}, {Key: "container.id", Value: strings.Repeat("c", 64)}}
		big.Counter(testCounter, uint64(i)<<40, time.Now(), l...)
		big.Gauge(testGauge, -float64(i), l...)
		big.Histogram(testHist, h, time.Now(), l...)
	}
	for name, b := range map[string]*metrics.Batch{"small": testBatch(time.Now()), "empty": metrics.NewBatch(), "big": big} {
		n := len(encodeMetrics(nil, res, b))
		hint := metricsSizeHint(res, b)
		if hint < n || hint > 2*n+1024 {
			t.Errorf("%s batch: hint %d for %d encoded bytes", name, hint, n)
		}
	}
}
