package suite

import (
	"strings"
	"testing"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// TestMetricsSection renders section 6 with issue 19's targets: log MB/s
// on/off at least 0.97, idle VmRSS on − off at most 0.3 MiB.
func TestMetricsSection(t *testing.T) {
	r := &Results{Metrics: &TracingResult{Latency: map[string][]float64{}, Exec: map[string][]float64{},
		Memory:   map[string]procfs.Memory{lTrace: {RSS: 9400}, lMetrics: {RSS: 9400 + 400}},
		LogBytes: 1 << 20, LogMBps: map[string][]float64{lTrace: {400}, lMetrics: {392}},
		LogCPUPerGB: map[string][]float64{lTrace: {1}, lMetrics: {1}}, Requests: 12}}
	md := string(r.Doc(false).Markdown())
	for _, want := range []string{
		"6. gomon metrics off / on (tracing on in both)",
		"| log lines100, 1 MiB: MB/s, median | 400.0 | 392.0 | 0.98× | on/off ≥ 0.97 | met |",
		"on − off ≤ 0.3 MiB | missed |",
		"received 12 export requests",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
