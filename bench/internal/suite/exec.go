package suite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
)

// execCmd is what every exec sync runs; its output is checked.
var execCmd = []string{"/bin/echo", "hello"}

// execSync measures exec sync latency against one running container per
// contender: gomon's ExecSyncContainer RPC, `conmon -e` as CRI-O runs it,
// and a foreground `runc exec`.
func (h *harness) execSync(ctx context.Context, res *Results) error {
	res.Exec, res.ExecNA = map[string][]float64{}, map[string]string{}
	return h.execInto(ctx, []driver.Driver{h.gomon, h.conmon, h.bare}, h.cfg.Params.ExecReps, res.Exec, res.ExecNA)
}

// execInto runs reps interleaved rounds (plus one warm-up) over drivers.
// A contender that answers ErrUnsupported is recorded in na and skipped.
func (h *harness) execInto(ctx context.Context, drivers []driver.Driver, reps int, out map[string][]float64, na map[string]string) error {
	type target struct {
		p driver.Pod
		c *driver.Container
	}
	targets := make([]target, len(drivers))
	for i, d := range drivers {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return err
		}
		c, err := h.newContainer(d, sleeper...)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = p.Create(cctx, c)
		if err == nil {
			err = h.startRunning(cctx, c)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", d.Name(), err)
		}
		targets[i] = target{p, c}
	}
	for rep := -1; rep < reps; rep++ {
		for _, i := range rotation(len(drivers), rep) {
			d := drivers[i]
			if _, skip := na[d.Name()]; skip {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			t0 := time.Now()
			r, err := targets[i].p.ExecSync(cctx, targets[i].c, execCmd)
			dt := time.Since(t0)
			cancel()
			if errors.Is(err, driver.ErrUnsupported) {
				na[d.Name()] = err.Error()
				h.log.Warn("exec sync unsupported", "monitor", d.Name(), "err", err)
				continue
			}
			if err != nil {
				return fmt.Errorf("%s exec rep %d: %w", d.Name(), rep, err)
			}
			if r.ExitCode != 0 || string(r.Stdout) != "hello\n" {
				return fmt.Errorf("%s exec rep %d: exit %d stdout %q stderr %q, want 0 and \"hello\\n\"", d.Name(), rep, r.ExitCode, r.Stdout, r.Stderr)
			}
			if rep >= 0 {
				out[d.Name()] = append(out[d.Name()], ms(dt))
			}
		}
	}
	for _, t := range targets {
		if err := t.p.Remove(ctx, t.c); err != nil {
			return err
		}
		h.dropContainer(t.c)
	}
	return nil
}
