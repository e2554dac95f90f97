package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/loggen"
	"github.com/gomon-dev/gomon/bench/internal/otlpsink"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// tracing compares gomon without and with --enable-tracing (pointed at a
// local OTLP sink): create-to-running, exec sync, log throughput of
// 100-byte lines and the idle memory of a pod with one container,
// interleaved.
func (h *harness) tracing(ctx context.Context, res *Results) error {
	sink, err := otlpsink.Start()
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sink.Close(cctx) // nothing to report: the counts are read before
	}()
	off := &driver.Gomon{Env: h.env, Label: "gomon"}
	on := &driver.Gomon{Env: h.env, Label: "gomon+tracing", TracingEndpoint: sink.Endpoint()}
	drivers := []driver.Driver{off, on}
	tr, err := h.compare(ctx, drivers, sink)
	res.Tracing = tr
	return err
}

// compare runs the tracing comparison's measures on drivers, interleaved:
// create-to-running, exec sync, lines100 log throughput, then the idle
// memory of one pod with one container each; the OTLP sink's counts come
// last. The result holds what was measured before a failure.
func (h *harness) compare(ctx context.Context, drivers []driver.Driver, sink *otlpsink.Sink) (*TracingResult, error) {
	tr := &TracingResult{
		Latency: map[string][]float64{}, Exec: map[string][]float64{}, ExecNA: map[string]string{},
		Memory:  map[string]procfs.Memory{},
		LogMBps: map[string][]float64{}, LogCPUPerGB: map[string][]float64{}, LogErrors: map[string][]string{},
	}
	if err := h.latencyInto(ctx, drivers, h.cfg.Params.TraceReps, tr.Latency, nil); err != nil {
		return tr, err
	}
	if err := h.execInto(ctx, drivers, h.cfg.Params.TraceReps, tr.Exec, tr.ExecNA); err != nil {
		return tr, err
	}
	if err := h.tracingLogs(ctx, drivers, tr); err != nil {
		return tr, err
	}
	// Memory is read with nothing else of ours running (PSS depends on who
	// else maps the binary).
	if err := h.closePods(ctx); err != nil {
		return tr, err
	}
	readings := map[string][]procfs.Memory{}
	for rep := 0; rep < max(h.cfg.Params.TraceMemReps, 1); rep++ {
		for _, i := range rotation(len(drivers), rep) {
			d := drivers[i]
			m, _, _, err := h.idleMemory(ctx, d, Scenario{Pods: 1, PerPod: 1})
			if err != nil {
				return tr, fmt.Errorf("%s: %w", d.Name(), err)
			}
			readings[d.Name()] = append(readings[d.Name()], m)
			if err := h.closePods(ctx); err != nil {
				return tr, err
			}
		}
	}
	for name, ms := range readings {
		tr.Memory[name] = medianMemory(ms)
		tr.MemoryReadings = len(ms)
	}
	// Pods shut down (SIGINT) flush their spans before exiting.
	if err := h.closePods(ctx); err != nil {
		return tr, err
	}
	tr.Requests, tr.Bytes = sink.Requests(), sink.Bytes()
	return tr, nil
}

// tracingLogs runs the lines100 log pattern Params.TraceLogReps times on
// each driver, interleaved, with one pod per driver, into tr.
func (h *harness) tracingLogs(ctx context.Context, drivers []driver.Driver, tr *TracingResult) error {
	pat := loggen.Lines100
	size := h.cfg.Params.LogBytes[pat.Name]
	if size <= 0 || h.cfg.Params.TraceLogReps <= 0 {
		return nil
	}
	tr.LogBytes = size
	pods := make([]driver.Pod, len(drivers))
	for i, d := range drivers {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return err
		}
		pods[i] = p
	}
	for rep := 0; rep < h.cfg.Params.TraceLogReps; rep++ {
		for _, i := range rotation(len(drivers), rep) {
			d := drivers[i]
			h.settle()
			o, err := h.logRun(ctx, d, pods[i], pat, size)
			if err != nil {
				return fmt.Errorf("%s %s rep %d: %w", d.Name(), pat.Name, rep, err)
			}
			gb := float64(size) / 1e9
			tr.LogMBps[d.Name()] = append(tr.LogMBps[d.Name()], float64(size)/1e6/o.elapsed.Seconds())
			tr.LogCPUPerGB[d.Name()] = append(tr.LogCPUPerGB[d.Name()], o.cpu.Run.Seconds()/gb)
			if o.verifyErr != nil {
				tr.LogErrors[d.Name()] = append(tr.LogErrors[d.Name()], o.verifyErr.Error())
			}
			h.log.Info("log run", "monitor", d.Name(), "pattern", pat.Name,
				"MBps", float64(size)/1e6/o.elapsed.Seconds(), "cpu", o.cpu, "verify", o.verifyErr)
		}
	}
	return nil
}
