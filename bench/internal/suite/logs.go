package suite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/loggen"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// logs measures log throughput: a container writes Params.LogBytes of a
// pattern to stdout as fast as it can; the time runs from `runc start` to
// the exit file (both monitors write it after draining the log), and the
// monitor CPU is the delta of its process(es)' run time (schedstat, and
// utime+stime from stat as a cross-check). The log is then
// parsed back and every byte checked. Bare runc writes straight to a file
// in its rootfs (the upper bound); the relay copies the container's pipe to
// a file with nothing else (the floor for a monitor, driver.Relay).
func (h *harness) logs(ctx context.Context, res *Results) error {
	drivers := []driver.Driver{h.gomon, h.conmon, h.conmonNoSync, h.bare, h.relay}
	pods := make([]driver.Pod, len(drivers))
	for i, d := range drivers {
		p, err := h.newPod(ctx, d)
		if err != nil {
			return err
		}
		pods[i] = p
	}
	for _, pat := range loggen.Patterns {
		size := h.cfg.Params.LogBytes[pat.Name]
		if size <= 0 {
			continue
		}
		r := LogResult{
			Pattern: pat.Name, Bytes: size,
			MBps: map[string][]float64{}, CPUPerGB: map[string][]float64{}, CPUTicksPerGB: map[string][]float64{},
			Errors: map[string][]string{}, Records: map[string]int64{}, WarmupMBps: map[string]float64{},
		}
		for i, d := range drivers {
			h.settle()
			o, err := h.logRun(ctx, d, pods[i], pat, size)
			if err != nil {
				return fmt.Errorf("%s %s warm-up: %w", d.Name(), pat.Name, err)
			}
			r.WarmupMBps[d.Name()] = float64(size) / 1e6 / o.elapsed.Seconds()
			h.log.Info("log warm-up run (discarded)", "monitor", d.Name(), "pattern", pat.Name,
				"MBps", r.WarmupMBps[d.Name()], "verify", o.verifyErr)
		}
		for rep := 0; rep < h.cfg.Params.LogReps; rep++ {
			for _, i := range rotation(len(drivers), rep) {
				d := drivers[i]
				h.settle()
				o, err := h.logRun(ctx, d, pods[i], pat, size)
				if err != nil {
					return fmt.Errorf("%s %s rep %d: %w", d.Name(), pat.Name, rep, err)
				}
				secs := o.elapsed.Seconds()
				r.MBps[d.Name()] = append(r.MBps[d.Name()], float64(size)/1e6/secs)
				if d != h.bare { // bare runc has no monitor, so no CPU figure
					r.CPUPerGB[d.Name()] = append(r.CPUPerGB[d.Name()], o.cpu.Run.Seconds()/(float64(size)/1e9))
					r.CPUTicksPerGB[d.Name()] = append(r.CPUTicksPerGB[d.Name()], o.cpu.Ticks.Seconds()/(float64(size)/1e9))
				}
				r.Records[d.Name()] = o.records
				if o.verifyErr != nil {
					r.Errors[d.Name()] = append(r.Errors[d.Name()], o.verifyErr.Error())
				}
				h.log.Info("log run", "monitor", d.Name(), "pattern", pat.Name, "MBps", float64(size)/1e6/secs,
					"cpu", o.cpu, "records", o.records, "verify", o.verifyErr)
			}
		}
		res.Logs = append(res.Logs, r)
	}
	return nil
}

// logOutcome is one log run.
type logOutcome struct {
	elapsed   time.Duration
	cpu       procfs.CPU
	records   int64
	verifyErr error
}

// logRun runs one writer container to completion and checks its log.
func (h *harness) logRun(ctx context.Context, d driver.Driver, p driver.Pod, pat loggen.Pattern, size int64) (logOutcome, error) {
	var o logOutcome
	args := []string{"/bin/loggen", "-pattern", pat.Name, "-bytes", strconv.FormatInt(size, 10)}
	if d == h.bare {
		args = append(args, "-o", "/out.bin")
	}
	c, err := h.newContainer(d, args...)
	if err != nil {
		return o, err
	}
	defer h.dropContainer(c)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := p.Create(ctx, c); err != nil {
		return o, err
	}
	cpu0, err := p.MonitorCPU()
	if err != nil {
		return o, err
	}
	t0 := time.Now()
	if err := h.env.Runc.Start(ctx, c.Root, c.ID); err != nil {
		return o, err
	}
	if err := p.WaitExit(ctx, c); err != nil {
		return o, err
	}
	o.elapsed = time.Since(t0)
	// Remove waits for a per-container monitor to exit, so that its final
	// CPU time is in.
	if err := p.Remove(ctx, c); err != nil {
		return o, err
	}
	cpu1, err := p.MonitorCPU()
	if err != nil {
		return o, err
	}
	o.cpu = cpu1.Sub(cpu0)
	if c.ExitFile != "" {
		code, err := os.ReadFile(c.ExitFile)
		if err != nil {
			return o, fmt.Errorf("read exit file: %w", err)
		}
		if strings.TrimSpace(string(code)) != "0" {
			o.verifyErr = fmt.Errorf("writer exit code %q", code)
			return o, nil
		}
	}
	o.records, o.verifyErr = verifyLog(c.LogPath, d == h.bare || d == h.relay, pat, size)
	return o, nil
}

// verifyLog checks a CRI log (or, raw, the plain file) against the
// pattern and returns the record count.
func verifyLog(path string, raw bool, pat loggen.Pattern, size int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = f.Close() }()
	v := loggen.NewVerifier(pat, size)
	if raw {
		if _, err := io.Copy(v, bufio.NewReaderSize(f, 256<<10)); err != nil {
			return 0, fmt.Errorf("read output: %w", err)
		}
		return 0, v.Err()
	}
	var stderr countWriter
	st, err := loggen.DecodeCRI(f, v, &stderr)
	if err != nil {
		return st.Records, err
	}
	if stderr > 0 {
		return st.Records, fmt.Errorf("%d unexpected stderr bytes", stderr)
	}
	return st.Records, v.Err()
}

// countWriter counts bytes.
type countWriter int64

// Write counts b.
func (w *countWriter) Write(b []byte) (int, error) { *w += countWriter(len(b)); return len(b), nil }

// settle brings the page cache and memory to the same state before a
// timed log run: the previous run's log pages are written back (they would
// otherwise be flushed during this run, on this run's time), the page
// cache and reclaimable slab are dropped, and free memory is compacted.
// Root only (the bench runs as root); a failure is logged once and the
// runs go on unsettled.
func (h *harness) settle() {
	unix.Sync()
	for _, f := range []struct{ path, val string }{
		{"/proc/sys/vm/drop_caches", "3"},
		{"/proc/sys/vm/compact_memory", "1"},
	} {
		if err := os.WriteFile(f.path, []byte(f.val), 0); err != nil && !h.settleFailed {
			h.settleFailed = true
			h.log.Warn("cannot settle memory before log runs, figures may drift", "path", f.path, "error", err)
		}
	}
}
