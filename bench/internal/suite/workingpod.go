package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// WorkingPodResult is the memory of a monitor that has done some work:
// one gomon daemon through Cycles create/start/exit/delete cycles and
// Execs exec syncs, sampled throughout.
type WorkingPodResult struct {
	Cycles, Execs int
	Quiet         time.Duration
	// Gomon's daemon: idle before the work, the field-wise maximum of
	// the samples taken during it, and after Quiet of quiet.
	Idle, Max, AfterQuiet procfs.Memory
	// Samples is the daemon's memory during the work, every
	// workSamplePeriod (VmRSS and USS, KiB; T in seconds).
	Samples []MemSample
	// Conmon: one process per container, sampled right after each
	// create (the largest and the median), for the same cycles. A conmon
	// leaves nothing behind when its container is gone.
	ConmonMax, ConmonMedian procfs.Memory
}

// MemSample is one sample of a process's memory.
type MemSample struct {
	T        float64
	RSS, USS int64
}

// NodeResult is the node-scale measure: many pods at idle, gomon's
// daemons against conmon's processes for the same containers, and the
// floor, a trivial static Go listener measured the same way.
type NodeResult struct {
	Scenarios []MemoryResult
	// Floor is the sum over FloorProcs listeners.
	Floor      procfs.Memory
	FloorProcs int
}

// workSamplePeriod is how often the working pod's daemon is sampled.
const workSamplePeriod = 50 * time.Millisecond

// workingPod runs the "working pod" scenario: Params.WorkCycles
// containers that exit at once (`true`) through one gomon daemon, created,
// started, waited for and deleted one after the other, then
// Params.WorkExecs exec syncs into one sleeping container, sampling the
// daemon's memory throughout; then the quiet time. conmon runs the same
// cycles, one process per container.
func (h *harness) workingPod(ctx context.Context, res *Results) error {
	p := h.cfg.Params
	r := &WorkingPodResult{Cycles: p.WorkCycles, Execs: p.WorkExecs, Quiet: p.WorkQuiet}
	res.WorkingPod = r

	pod, err := h.newPod(ctx, h.gomon)
	if err != nil {
		return err
	}
	pid := pod.MonitorPIDs()[0]
	if err := sleepCtx(ctx, p.Idle); err != nil {
		return err
	}
	if r.Idle, err = procfs.ReadMemory(pid); err != nil {
		return err
	}
	stop := h.sample(pid, r)
	werr := h.work(ctx, h.gomon, pod, p.WorkCycles, p.WorkExecs, nil)
	stop()
	if werr != nil {
		return fmt.Errorf("gomon: %w", werr)
	}
	if err := sleepCtx(ctx, p.WorkQuiet); err != nil {
		return err
	}
	if r.AfterQuiet, err = procfs.ReadMemory(pid); err != nil {
		return err
	}
	h.log.Info("working pod", "monitor", lGomon, "idle_rss_kib", r.Idle.RSS, "max_rss_kib", r.Max.RSS,
		"after_quiet_rss_kib", r.AfterQuiet.RSS, "idle_uss_kib", r.Idle.USS, "max_uss_kib", r.Max.USS,
		"after_quiet_uss_kib", r.AfterQuiet.USS)
	if err := h.closePods(ctx); err != nil {
		return err
	}

	cpod, err := h.newPod(ctx, h.conmon)
	if err != nil {
		return err
	}
	var per []procfs.Memory
	if err := h.work(ctx, h.conmon, cpod, p.WorkCycles, 0, &per); err != nil {
		return fmt.Errorf("conmon: %w", err)
	}
	for _, m := range per {
		r.ConmonMax = maxMemory(r.ConmonMax, m)
	}
	r.ConmonMedian = medianMemory(per)
	return nil
}

// work runs the cycles and the exec syncs in pod. With per, the pod's
// monitor processes are measured after each create (conmon's
// per-container process).
func (h *harness) work(ctx context.Context, d driver.Driver, pod driver.Pod, cycles, execs int, per *[]procfs.Memory) error {
	for i := range cycles {
		c, err := h.newContainer(d, "/bin/true")
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = pod.Create(cctx, c)
		if err == nil && per != nil {
			var sum procfs.Memory
			for _, pid := range pod.MonitorPIDs() {
				if m, merr := procfs.ReadMemory(pid); merr == nil {
					sum = sum.Add(m)
				}
			}
			*per = append(*per, sum)
		}
		if err == nil {
			err = h.env.Runc.Start(cctx, c.Root, c.ID)
		}
		if err == nil {
			err = pod.WaitExit(cctx, c)
		}
		if err == nil {
			err = pod.Remove(cctx, c)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		h.dropContainer(c)
	}
	if execs == 0 {
		return nil
	}
	c, err := h.runningSleeper(ctx, d, pod)
	if err != nil {
		return err
	}
	for i := range execs {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := pod.ExecSync(cctx, c, execCmd)
		cancel()
		if err != nil {
			return fmt.Errorf("exec %d: %w", i, err)
		}
		if r.ExitCode != 0 || string(r.Stdout) != "hello\n" {
			return fmt.Errorf("exec %d: exit %d stdout %q stderr %q", i, r.ExitCode, r.Stdout, r.Stderr)
		}
	}
	if err := pod.Remove(ctx, c); err != nil {
		return err
	}
	h.dropContainer(c)
	return nil
}

// sample reads pid's memory every workSamplePeriod into r.Samples and
// r.Max until the returned stop is called (the suite's one sampling
// goroutine; stop waits for it).
func (h *harness) sample(pid int, r *WorkingPodResult) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		start := time.Now()
		t := time.NewTicker(workSamplePeriod)
		defer t.Stop()
		for {
			if m, err := procfs.ReadMemory(pid); err == nil {
				r.Max = maxMemory(r.Max, m)
				r.Samples = append(r.Samples, MemSample{T: time.Since(start).Seconds(), RSS: m.RSS, USS: m.USS})
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// nodeScale measures Params.NodeScenario at idle for gomon and conmon,
// then the floor.
func (h *harness) nodeScale(ctx context.Context, res *Results) error {
	r := &NodeResult{}
	res.Node = r
	drivers := []driver.Driver{h.gomon, h.conmon}
	for i, s := range h.cfg.Params.NodeScenario {
		mr := MemoryResult{Scenario: s, Mem: map[string]procfs.Memory{}, Procs: map[string]int{}, MaxPodRSS: map[string]int64{}}
		for _, k := range rotation(len(drivers), i) {
			d := drivers[k]
			m, n, maxPod, err := h.idleMemory(ctx, d, s)
			if err != nil {
				return fmt.Errorf("%s %s: %w", d.Name(), s, err)
			}
			mr.Mem[d.Name()], mr.Procs[d.Name()], mr.MaxPodRSS[d.Name()] = m, n, maxPod
			h.log.Info("node scale", "monitor", d.Name(), "scenario", s.String(), "pss_kib", m.PSS, "uss_kib", m.USS, "procs", n)
		}
		r.Scenarios = append(r.Scenarios, mr)
	}
	r.FloorProcs = 1
	if len(h.cfg.Params.NodeScenario) > 0 {
		r.FloorProcs = max(1, h.cfg.Params.NodeScenario[0].Pods)
	}
	var err error
	r.Floor, err = h.floor(ctx, r.FloorProcs)
	return err
}

// floor starts n static Go listeners (as many as the first scenario's
// pods, so that their code pages are shared as the daemons' are), idles
// for Params.Idle as the monitors do, and sums their memory.
func (h *harness) floor(ctx context.Context, n int) (procfs.Memory, error) {
	if h.cfg.Golisten == "" {
		return procfs.Memory{}, errors.New("no golisten binary")
	}
	var cmds []*exec.Cmd
	defer func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Kill() // ours; Wait reaps it
			_ = cmd.Wait()
		}
	}()
	for i := range n {
		sock := filepath.Join(h.env.WorkDir, fmt.Sprintf("golisten%d.sock", i))
		cmd := exec.Command(h.cfg.Golisten, sock)
		if err := cmd.Start(); err != nil {
			return procfs.Memory{}, fmt.Errorf("start golisten: %w", err)
		}
		cmds = append(cmds, cmd)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
				return procfs.Memory{}, err
			}
		}
	}
	if err := sleepCtx(ctx, h.cfg.Params.Idle); err != nil {
		return procfs.Memory{}, err
	}
	var sum procfs.Memory
	for _, cmd := range cmds {
		m, err := procfs.ReadMemory(cmd.Process.Pid)
		if err != nil {
			return procfs.Memory{}, err
		}
		sum = sum.Add(m)
	}
	return sum, nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// maxMemory is the field-wise maximum.
func maxMemory(a, b procfs.Memory) procfs.Memory {
	return procfs.Memory{RSS: max(a.RSS, b.RSS), Anon: max(a.Anon, b.Anon), PSS: max(a.PSS, b.PSS), USS: max(a.USS, b.USS)}
}

// medianMemory is the field-wise median (the upper one of an even count).
func medianMemory(ms []procfs.Memory) procfs.Memory {
	if len(ms) == 0 {
		return procfs.Memory{}
	}
	field := func(f func(procfs.Memory) int64) int64 {
		v := make([]int64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return procfs.Memory{
		RSS:  field(func(m procfs.Memory) int64 { return m.RSS }),
		Anon: field(func(m procfs.Memory) int64 { return m.Anon }),
		PSS:  field(func(m procfs.Memory) int64 { return m.PSS }),
		USS:  field(func(m procfs.Memory) int64 { return m.USS }),
	}
}
