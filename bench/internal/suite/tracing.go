package suite

import (
	"context"
	"fmt"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/otlpsink"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// tracing compares gomon without and with --enable-tracing (pointed at a
// local OTLP sink): create-to-running, exec sync and the idle memory of a
// pod with one container, interleaved.
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
	tr := &TracingResult{
		Latency: map[string][]float64{}, Exec: map[string][]float64{}, ExecNA: map[string]string{},
		Memory: map[string]procfs.Memory{},
	}
	res.Tracing = tr
	if err := h.latencyInto(ctx, drivers, h.cfg.Params.TraceReps, tr.Latency, nil); err != nil {
		return err
	}
	if err := h.execInto(ctx, drivers, h.cfg.Params.TraceReps, tr.Exec, tr.ExecNA); err != nil {
		return err
	}
	// Memory is read with nothing else of ours running (PSS depends on who
	// else maps the binary).
	if err := h.closePods(ctx); err != nil {
		return err
	}
	for _, d := range drivers {
		m, _, err := h.idleMemory(ctx, d, Scenario{Pods: 1, PerPod: 1})
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name(), err)
		}
		tr.Memory[d.Name()] = m
	}
	// Pods shut down (SIGINT) flush their spans before exiting.
	if err := h.closePods(ctx); err != nil {
		return err
	}
	tr.Requests, tr.Bytes = sink.Requests(), sink.Bytes()
	return nil
}
