package suite

import (
	"context"
	"fmt"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/loggen"
	"github.com/gomon-dev/gomon/bench/internal/oci"
	"github.com/gomon-dev/gomon/bench/internal/report"
)

// The cost of the log rate limiter itself: the log throughput of section
// 4's lines100 pattern through gomon without a limit and with one far
// above the load (every chunk goes through the bucket, none is dropped).
const (
	rateCostLimit = "1TiB/s"
	lLimited      = "gomon, limit " + rateCostLimit
)

// RateCostResult is gomon's lines100 log throughput without and with a
// limit far above the load, by label (lGomon, lLimited), one per rep.
type RateCostResult struct {
	Bytes    int64
	MBps     map[string][]float64
	CPUPerGB map[string][]float64
	Errors   map[string][]string
}

// annotated is a driver whose containers get annotations in their bundle
// before the create, as CRI-O copies a pod's annotations into its
// containers' specs.
type annotated struct {
	driver.Driver
	label string
	ann   map[string]string
}

func (a *annotated) Name() string { return a.label }

func (a *annotated) NewPod(ctx context.Context, name string) (driver.Pod, error) {
	p, err := a.Driver.NewPod(ctx, name)
	if err != nil {
		return nil, err
	}
	return &annotatedPod{Pod: p, ann: a.ann}, nil
}

type annotatedPod struct {
	driver.Pod
	ann map[string]string
}

func (p *annotatedPod) Create(ctx context.Context, c *driver.Container) error {
	if err := oci.Annotate(c.Bundle, p.ann); err != nil {
		return err
	}
	return p.Pod.Create(ctx, c)
}

// rateCost runs the lines100 pattern RateCostReps times on gomon without
// and with the limit, interleaved, one pod each.
func (h *harness) rateCost(ctx context.Context, res *Results) error {
	pat := loggen.Lines100
	size := h.cfg.Params.LogBytes[pat.Name]
	if size <= 0 || h.cfg.Params.RateCostReps <= 0 {
		return nil
	}
	limited := &annotated{Driver: h.gomon, label: lLimited, ann: map[string]string{"io.gomon.log.rate-limit": rateCostLimit}}
	drivers := []driver.Driver{h.gomon, limited}
	r := &RateCostResult{Bytes: size, MBps: map[string][]float64{}, CPUPerGB: map[string][]float64{}, Errors: map[string][]string{}}
	res.RateCost = r
	pods := make([]driver.Pod, len(drivers))
	for i, d := range drivers {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return err
		}
		pods[i] = p
	}
	for rep := 0; rep < h.cfg.Params.RateCostReps; rep++ {
		for _, i := range rotation(len(drivers), rep) {
			d := drivers[i]
			o, err := h.logRun(ctx, d, pods[i], pat, size)
			if err != nil {
				return fmt.Errorf("%s rep %d: %w", d.Name(), rep, err)
			}
			mbps := float64(size) / 1e6 / o.elapsed.Seconds()
			r.MBps[d.Name()] = append(r.MBps[d.Name()], mbps)
			r.CPUPerGB[d.Name()] = append(r.CPUPerGB[d.Name()], o.cpu.Run.Seconds()/(float64(size)/1e9))
			if o.verifyErr != nil {
				r.Errors[d.Name()] = append(r.Errors[d.Name()], o.verifyErr.Error())
			}
			h.log.Info("rate cost run", "monitor", d.Name(), "MBps", mbps, "cpu", o.cpu, "verify", o.verifyErr)
		}
	}
	return nil
}

func (r *Results) rateCostSection() report.Section {
	rc := r.RateCost
	row := func(name string, v map[string][]float64, t *target) []string {
		off, on := med(v[lGomon]), med(v[lLimited])
		rs, rv := ratio(on, off)
		verdict := t.verdict(rv)
		if t != nil && len(rc.Errors) > 0 {
			verdict = invalidVerdict
		}
		return []string{name, num(off), num(on), rs, t.label(), verdict}
	}
	verified := "Every byte verified for both"
	for name, errs := range rc.Errors {
		verified = fmt.Sprintf("VERIFICATION FAILED: %s: %d of %d runs (%s)", name, len(errs), len(rc.MBps[name]), errs[0])
	}
	return report.Section{
		Title:   "7. Cost of the log rate limiter",
		Columns: []string{"measure", lGomon, lLimited, "limited/none", "target", "verdict"},
		Rows: [][]string{
			row(fmt.Sprintf("log lines100, %d MiB: MB/s, median", rc.Bytes>>20), rc.MBps, atLeast(0.95, "limited/none ≥ 0.95")),
			row("monitor CPU s/GB, median", rc.CPUPerGB, atMost(1.05, "limited/none ≤ 1.05")),
		},
		Notes: []string{
			fmt.Sprintf("Section 4's lines100 runs (%d each, interleaved, one pod each), gomon without a limit and with io.gomon.log.rate-limit=%s in the container's bundle: every chunk goes through the bucket and nothing is dropped. %s. Target: issue 20, a limit far above the load costs at most 5%%.",
				len(rc.MBps[lGomon]), rateCostLimit, verified),
		},
	}
}
