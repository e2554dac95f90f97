package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/metrics"
	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc"
)

// Metrics are off unless the environment asks for an output (CRI-O starts
// gomon with its own environment, so setting these on CRI-O's service
// turns metrics on for every pod):
//
//   - GOMON_METRICS_TEXTFILE_DIR=DIR: write DIR/gomon-<pod UID, or a hash
//     of the run directory>.prom for node_exporter's textfile collector
//     every interval, removed at shutdown;
//   - OTLP to the tracing collector: see exporter.OTLPMetricsRequested;
//   - OTEL_METRIC_EXPORT_INTERVAL: the interval in milliseconds (default
//     60000).
const (
	envTextfileDir    = "GOMON_METRICS_TEXTFILE_DIR"
	envExportInterval = "OTEL_METRIC_EXPORT_INTERVAL"
)

// metricsConfig is what the environment asks of metrics.
type metricsConfig struct {
	textfileDir string
	otlp        bool
	interval    time.Duration // 0: metrics.DefaultInterval
}

// on reports whether any output is asked for.
func (c metricsConfig) on() bool { return c.textfileDir != "" || c.otlp }

// metricsFromEnv reads the metrics variables. A setting it cannot use is
// ignored, as the OTel SDKs do, and named in the returned problems for the
// daemon's log: a malformed interval (the default applies), or an unused
// GOMON_METRICS (see exporter.OTLPMetricsRequested).
func metricsFromEnv(tracing bool, lookup func(string) (string, bool)) (c metricsConfig, problems []string) {
	if v, ok := lookup(envTextfileDir); ok {
		c.textfileDir = strings.TrimSpace(v)
	}
	var ignored string
	if c.otlp, ignored = exporter.OTLPMetricsRequested(tracing, lookup); ignored != "" {
		problems = append(problems, ignored)
	}
	if v, ok := lookup(envExportInterval); ok {
		if ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && ms > 0 && ms <= int64(24*time.Hour/time.Millisecond) {
			c.interval = time.Duration(ms) * time.Millisecond
		} else {
			problems = append(problems, fmt.Sprintf("%s=%q is not a number of milliseconds from 1 to a day; the default applies", envExportInterval, v))
		}
	}
	return c, problems
}

// startMetrics starts the metrics reader with the outputs cfg asks for;
// nil when metrics are off.
func startMetrics(cfg metricsConfig, opts Options, mon *monitor.Monitor, srv *rpc.Server, afterExport func(), log *slog.Logger) (*metrics.Reader, error) {
	if !cfg.on() {
		return nil, nil
	}
	var outs []metrics.Exporter
	if cfg.otlp {
		e, err := exporter.NewMetricsExporter(exporter.MetricsConfig{
			Endpoint: opts.TracingEndpoint,
			Version:  opts.Version.Version,
		})
		if err != nil {
			return nil, err
		}
		url, proto := e.Endpoint()
		log.Info("exporting metrics over OTLP", "endpoint", url, "protocol", proto.String())
		outs = append(outs, e)
	}
	if cfg.textfileDir != "" {
		if st, err := os.Stat(cfg.textfileDir); err != nil || !st.IsDir() {
			// node_exporter creates it; a daemon started before it
			// would otherwise never write metrics: warn and try anyway.
			log.Warn("metrics textfile directory missing, writing to it anyway", "dir", cfg.textfileDir)
		}
		runDirID := runDirHash(opts.RunDir)
		interval := cfg.interval
		if interval <= 0 {
			interval = metrics.DefaultInterval
		}
		outs = append(outs, &metrics.Textfile{Dir: cfg.textfileDir, StaleAfter: staleIntervals * interval, ID: func() string {
			for _, l := range mon.PodLabels() {
				if l.Key == monitor.LabelPodUID {
					return l.Value
				}
			}
			return runDirID
		}})
		log.Info("writing metrics for node_exporter's textfile collector", "dir", cfg.textfileDir)
	}
	srv.EnableMetrics()
	pid := metrics.Label{Key: "process.pid", Value: strconv.Itoa(os.Getpid())}
	// Daemon-level series carry the pod's labels and the daemon's PID: in a
	// textfile directory shared by every pod's daemon, no two files may
	// hold the same series.
	// The collectors copy them into the batch (metrics.Batch.Labels), and
	// run one at a time on the reader's goroutine: one slice serves all.
	var podLabels []metrics.Label
	podLevel := func() []metrics.Label {
		podLabels = append(mon.AppendPodLabels(podLabels[:0]), pid)
		return podLabels
	}
	return metrics.StartReader(metrics.ReaderConfig{
		Collectors: []metrics.Collector{
			func(b *metrics.Batch) { mon.CollectMetrics(b, podLevel()...) },
			func(b *metrics.Batch) { srv.CollectMetrics(b, podLevel()...) },
			metrics.ProcessCollector(podLevel),
		},
		Exporters:   outs,
		Interval:    cfg.interval,
		Logger:      log,
		AfterExport: afterExport,
	}), nil
}

// staleIntervals: another daemon's textfile not replaced for this many
// intervals belongs to a daemon that was killed, and is removed (see
// metrics.Textfile).
const staleIntervals = 5

// metricsShutdownTimeout bounds the last export and the textfile's removal.
const metricsShutdownTimeout = 2 * time.Second

// stopMetrics exports a last time (the exited containers' final counts)
// and removes the textfile.
func stopMetrics(r *metrics.Reader, log *slog.Logger) {
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		log.Warn("stop metrics", "error", err)
	}
}

// runDirHash names a pod's textfile before its UID is known: the run
// directory is the pod's own.
func runDirHash(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return "rundir-" + hex.EncodeToString(sum[:8])
}
