package suite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/otlpsink"
	"github.com/gomon-dev/gomon/bench/internal/report"
)

// lMetrics labels gomon with tracing and both metric outputs on.
const lMetrics = "gomon+tracing+metrics"

// metricsInterval is the export interval of the metrics contender: one
// second, so the idle memory (read after Params.Idle) includes exports,
// the worst case of the default 60 s. It is worse than that since the
// daemon releases its code pages once quiet (docs/reliability.md, "Code
// pages"): an export every second keeps the exporter's code mapped, which
// a daemon exporting every minute releases 5 to 10 s after each export.
const metricsInterval = "1000"

// metrics compares gomon with tracing on, without and with both metric
// outputs (README.md, "Metrics": OTLP to the same sink, and the
// node_exporter textfile): create-to-running, exec sync, log throughput
// of 100-byte lines and the idle memory of a pod with one container,
// interleaved. Issue 19's budget: idle VmRSS at most +0.3 MiB, log MB/s
// within 3 %.
func (h *harness) metrics(ctx context.Context, res *Results) error {
	sink, err := otlpsink.Start()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sink.Close(cctx) // nothing to report: the counts are read before
	}()
	textDir := filepath.Join(h.env.WorkDir, "textfile")
	if err := os.MkdirAll(textDir, 0o755); err != nil {
		return fmt.Errorf("make textfile dir: %w", err)
	}
	off := &driver.Gomon{Env: h.env, Label: lTrace, TracingEndpoint: sink.Endpoint()}
	on := &driver.Gomon{Env: h.env, Label: lMetrics, TracingEndpoint: sink.Endpoint(), ExtraEnv: []string{
		"GOMON_METRICS=otlp", "GOMON_METRICS_TEXTFILE_DIR=" + textDir, "OTEL_METRIC_EXPORT_INTERVAL=" + metricsInterval,
	}}
	mr, err := h.compare(ctx, []driver.Driver{off, on}, sink)
	res.Metrics = mr
	return err
}

func (r *Results) metricsSection() report.Section {
	t := r.Metrics
	row := func(name string, off, on float64, tg *target, tv float64) []string {
		rs, _ := ratio(on, off)
		return []string{name, num(off), num(on), rs, tg.label(), tg.verdict(tv)}
	}
	logRow := func(what string, v map[string][]float64, tg *target) []string {
		off, on := med(v[lTrace]), med(v[lMetrics])
		_, rv := ratio(on, off)
		r := row(fmt.Sprintf("log lines100, %d MiB: %s, median", t.LogBytes>>20, what), off, on, tg, rv)
		if tg != nil && len(t.LogErrors) > 0 {
			r[len(r)-1] = invalidVerdict
		}
		return r
	}
	memOn, memOff := t.Memory[lMetrics], t.Memory[lTrace]
	s := report.Section{
		Title:   "6. gomon metrics off / on (tracing on in both)",
		Columns: []string{"measure", lTrace, lMetrics, "on/off", "target", "verdict"},
		Rows: [][]string{
			row("create-to-running, median ms", med(t.Latency[lTrace]), med(t.Latency[lMetrics]), nil, 0),
			row("exec sync, median ms", med(t.Exec[lTrace]), med(t.Exec[lMetrics]), nil, 0),
			logRow("MB/s", t.LogMBps, atLeast(0.97, "on/off ≥ 0.97")),
			logRow("monitor CPU s/GB", t.LogCPUPerGB, nil),
			row("idle VmRSS, 1 pod × 1, MiB", mib(memOff.RSS), mib(memOn.RSS), atMost(0.3, "on − off ≤ 0.3 MiB"), mib(memOn.RSS)-mib(memOff.RSS)),
			row("idle RssAnon, MiB", mib(memOff.Anon), mib(memOn.Anon), nil, 0),
			row("idle PSS, MiB", mib(memOff.PSS), mib(memOn.PSS), nil, 0),
			row("idle USS, MiB", mib(memOff.USS), mib(memOn.USS), nil, 0),
		},
	}
	s.Notes = append(s.Notes, fmt.Sprintf("The local OTLP sink received %d export requests (%d bytes), spans and metrics together.", t.Requests, t.Bytes))
	for name, why := range t.ExecNA {
		s.Notes = append(s.Notes, fmt.Sprintf("%s exec: n/a — %s", name, why))
	}
	var bad []string
	for name, errs := range t.LogErrors {
		bad = append(bad, fmt.Sprintf("%s: %d of %d runs failed (%s)", name, len(errs), len(t.LogMBps[name]), errs[0]))
	}
	verified := "every byte verified for both"
	if len(bad) > 0 {
		verified = "VERIFICATION FAILED: " + strings.Join(bad, "; ")
	}
	s.Notes = append(s.Notes, fmt.Sprintf("Log rows: the lines100 pattern of section 4, measured the same way (%d runs each, interleaved, one pod each); %s.", len(t.LogMBps[lTrace]), verified))
	s.Notes = append(s.Notes, t.memoryNote())
	s.Notes = append(s.Notes, "gomon+tracing+metrics adds GOMON_METRICS=otlp (to the same sink), GOMON_METRICS_TEXTFILE_DIR and OTEL_METRIC_EXPORT_INTERVAL="+metricsInterval+" (ms), so the idle reading, after "+r.Params.Idle.String()+", includes exports; exporting every second, the daemon never goes quiet and keeps the exporter's code mapped (about 2 MiB of VmRSS, shared pages), which the metrics-off daemon has released. Targets: issue 19.")
	return s
}
