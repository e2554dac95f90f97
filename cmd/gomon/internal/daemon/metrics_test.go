package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestMetricsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		tracing bool
		env     map[string]string
		want    metricsConfig
		// problem is a word the one expected problem contains; empty:
		// none expected.
		problem string
	}{
		{"off by default", true, nil, metricsConfig{}, ""},
		{"textfile", false, map[string]string{"GOMON_METRICS_TEXTFILE_DIR": " /var/lib/node_exporter/textfile "},
			metricsConfig{textfileDir: "/var/lib/node_exporter/textfile"}, ""},
		{"otlp with tracing", true, map[string]string{"GOMON_METRICS": "otlp"}, metricsConfig{otlp: true}, ""},
		{"GOMON_METRICS needs tracing", false, map[string]string{"GOMON_METRICS": "otlp"}, metricsConfig{}, "--enable-tracing"},
		{"GOMON_METRICS without tracing, OTLP asked otherwise", false,
			map[string]string{"GOMON_METRICS": "otlp", "OTEL_METRICS_EXPORTER": "otlp"}, metricsConfig{otlp: true}, ""},
		{"GOMON_METRICS with tracing, OTLP turned off", true,
			map[string]string{"GOMON_METRICS": "otlp", "OTEL_METRICS_EXPORTER": "none"}, metricsConfig{}, ""},
		{"GOMON_METRICS unknown", true, map[string]string{"GOMON_METRICS": "prometheus"}, metricsConfig{}, "prometheus"},
		{"interval", false, map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "15000"},
			metricsConfig{otlp: true, interval: 15 * time.Second}, ""},
		{"bad interval ignored", false, map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "soon"},
			metricsConfig{otlp: true}, "soon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := metricsFromEnv(tc.tracing, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.on() != (tc.want.textfileDir != "" || tc.want.otlp) {
				t.Errorf("on() = %v", got.on())
			}
			switch {
			case tc.problem == "" && len(problems) != 0:
				t.Errorf("problems %q, want none", problems)
			case tc.problem != "" && (len(problems) != 1 || !strings.Contains(problems[0], tc.problem)):
				t.Errorf("problems %q, want one naming %q", problems, tc.problem)
			}
		})
	}
	if a, b := runDirHash("/run/crio/pod-a"), runDirHash("/run/crio/pod-b"); a == b || len(a) != len("rundir-")+16 {
		t.Errorf("run dir hashes %q %q", a, b)
	}
}
