// Package suite is the benchmark itself: it runs gomon, C conmon and bare
// runc side by side, interleaved run by run (A B C A B C …) so that drift
// on a shared machine hits every contender alike, and turns the samples
// into a report.
//
// Run is sequential; the only goroutines are the drivers' reapers and the
// OTLP sink, all stopped before Run returns. Every pod and container it
// creates is removed before Run returns, also on failure or cancellation,
// and a final sweep kills whatever is left below the harness process.
package suite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/loggen"
	"github.com/gomon-dev/gomon/bench/internal/oci"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// Scenario is a number of pods with a number of containers each.
type Scenario struct {
	Pods, PerPod int
}

// String renders "1 pod × 10".
func (s Scenario) String() string {
	if s.Pods == 1 {
		return fmt.Sprintf("1 pod × %d", s.PerPod)
	}
	return fmt.Sprintf("%d pods × %d", s.Pods, s.PerPod)
}

// Params sizes a run.
type Params struct {
	LatencyReps int
	ExecReps    int
	MemScenario []Scenario
	// Idle is how long pods sit idle before their memory is read (the
	// memory, working pod and node sections): FullIdle in a full run.
	Idle      time.Duration
	LogReps   int
	LogBytes  map[string]int64 // by pattern name
	TraceReps int
	// TraceMemReps is the number of idle-memory readings per contender
	// in the tracing and metrics comparisons (fresh pods, interleaved;
	// the median of each field is reported): one reading varies by a
	// few hundred KiB, the size of the budgets it is judged against.
	TraceMemReps int
	// TraceLogReps is the number of lines100 log runs per contender in
	// the tracing comparison (more than LogReps: the on/off ratio of two
	// close numbers needs more samples than a 2x comparison).
	TraceLogReps int
	// NeighbourReps runs of the noisy-neighbour scenario per variant,
	// each NeighbourTicks quiet lines long (neighbour.go).
	NeighbourReps, NeighbourTicks int
	// RateCostReps rounds of lines100, one run per contender each,
	// measure the cost of issue 20's log work (ratecost.go), each run of
	// RateCostBytes (0: lines100's LogBytes).
	RateCostReps  int
	RateCostBytes int64
	// The working pod (workingpod): create/start/exit/delete cycles and
	// exec syncs through one daemon, then WorkQuiet of quiet.
	WorkCycles int
	WorkExecs  int
	WorkQuiet  time.Duration
	// NodeScenario is the node-scale measure's pods at idle (node).
	NodeScenario []Scenario
	// UpgradeReps upgrades in place of one pod per UpgradeContainers
	// count of idle containers (upgrade.go).
	UpgradeReps       int
	UpgradeContainers []int
}

// QuickParams is a smoke run of about a minute.
func QuickParams() Params {
	return Params{
		LatencyReps:  3,
		ExecReps:     5,
		MemScenario:  []Scenario{{1, 0}, {1, 1}, {1, 5}, {2, 3}},
		Idle:         2 * time.Second,
		LogReps:      1,
		LogBytes:     map[string]int64{loggen.Lines100.Name: 8 << 20, loggen.LongLine.Name: 8 << 20, loggen.Lines2.Name: 1 << 20},
		TraceReps:    3,
		TraceMemReps: 1,
		TraceLogReps: 1,
		// 1 s of ticks.
		NeighbourReps: 1, NeighbourTicks: 100,
		// 6 rounds: the fewest with a 95 % interval (min – max).
		RateCostReps:      6,
		WorkCycles:        20,
		WorkExecs:         20,
		WorkQuiet:         5 * time.Second,
		NodeScenario:      []Scenario{{5, 1}, {2, 5}},
		UpgradeReps:       3,
		UpgradeContainers: []int{1, 10},
	}
}

// RateCostRounds is the full run's default number of ratecost rounds
// (gomon-bench -ratecost-rounds): 180 runs of 128 MiB, about 1 s each
// with the settling on a quiet 2-core VM (1.5 s under load), so about 3
// minutes. A multiple of 6: every order of the 3 contenders equally often.
const RateCostRounds = 60

// FullIdle is a full run's idle time before memory is read: a daemon
// releases its code pages after a whole 5 s period without calls
// (docs/reliability.md, "Code pages"), so 12 s reads it as it sits for
// most of a pod's life, not with the code the client's first calls ran
// still mapped (until 2026-12-02 the bench read after 2 s).
const FullIdle = 12 * time.Second

// FullParams is the full run (a few minutes on 2 cores).
func FullParams() Params {
	return Params{
		LatencyReps:  80,
		ExecReps:     150,
		MemScenario:  []Scenario{{1, 0}, {1, 1}, {1, 10}, {1, 50}, {10, 5}},
		Idle:         FullIdle,
		LogReps:      9,
		LogBytes:     map[string]int64{loggen.Lines100.Name: 128 << 20, loggen.LongLine.Name: 128 << 20, loggen.Lines2.Name: 8 << 20},
		TraceReps:    20,
		TraceMemReps: 8,
		TraceLogReps: 20,
		// 2 s of ticks per run: the unlimited noisy container writes a few
		// GB to the log disk over the scenario.
		NeighbourReps: 3, NeighbourTicks: 200,
		RateCostReps: RateCostRounds,
		WorkCycles:   1000,
		WorkExecs:    1000,
		WorkQuiet:    time.Minute,
		// 110 pods of one container: the kubelet's default pod limit.
		NodeScenario:      []Scenario{{110, 1}, {20, 5}},
		UpgradeReps:       15,
		UpgradeContainers: []int{1, 10, 50},
	}
}

// Config is everything Run needs.
type Config struct {
	Params  Params
	Env     *driver.Env
	Busybox string
	Loggen  string // static writer binary
	// Golisten is the node-scale floor, a static Go unix-socket listener.
	Golisten string
	Logger   *slog.Logger
	// Only restricts the run to these measures (latency, exec, memory,
	// logs, tracing, neighbour, ratecost, metrics, workingpod, node,
	// upgrade); empty
	// means all.
	Only map[string]bool
	// Baseline is a private copy of a gomon from before issue 20's log
	// work, the ratecost measure's reference; empty for none.
	Baseline string
	// RateCostWith is the ratecost measure's contender set
	// (RateCostLimit when empty, RateCostTracing, RateCostMetrics).
	RateCostWith string
	// Sources maps "gomon", "conmon" and "baseline" to the binaries the
	// private copies were made from (for the report).
	Sources map[string]string
}

// harness is the state of one Run.
type harness struct {
	cfg     Config
	env     *driver.Env
	log     *slog.Logger
	bundler *oci.Bundler
	pods    []driver.Pod
	seq     int
	// podStart collects how long each gomon pod took to start (ms).
	podStart []float64

	gomon, conmon, bare driver.Driver
	// conmonNoSync is conmon with --no-sync-log, the log benchmark's
	// like-for-like conmon (see driver.Conmon.NoSyncLog).
	conmonNoSync driver.Driver
	// relay is the log benchmark's floor for a monitor (driver.Relay).
	relay driver.Driver
	// settleFailed is set once settle could not drop caches (not root).
	settleFailed bool
}

// Run executes the benchmark and returns the results. The caller must
// have made the process a child subreaper.
func Run(ctx context.Context, cfg Config) (res *Results, err error) {
	h := &harness{cfg: cfg, env: cfg.Env, log: cfg.Logger}
	h.gomon = &driver.Gomon{Env: h.env}
	h.conmon = &driver.Conmon{Env: h.env}
	h.conmonNoSync = &driver.Conmon{Env: h.env, NoSyncLog: true}
	h.bare = &driver.Bare{Env: h.env}
	h.relay = &driver.Relay{Env: h.env, Loggen: cfg.Loggen}
	defer func() {
		// Cleanup runs even when ctx was cancelled.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err = errors.Join(err, h.cleanup(cctx))
	}()
	h.bundler, err = oci.NewBundler(h.env.Runc.Path, cfg.Busybox, cfg.Loggen, filepath.Join(h.env.WorkDir, "bundler"))
	if err != nil {
		return nil, err
	}
	res = &Results{Params: cfg.Params, Machine: describeMachine(ctx, h.env, cfg.Sources)}
	steps := []struct {
		name string
		run  func(context.Context, *Results) error
	}{
		{"latency", h.latency},
		{"exec", h.execSync},
		{"memory", h.memory},
		{"logs", h.logs},
		{"tracing", h.tracing},
		{"neighbour", h.neighbour},
		{"ratecost", h.rateCost},
		{"metrics", h.metrics},
		{"workingpod", h.workingPod},
		{"node", h.nodeScale},
		{"upgrade", h.upgradePause},
	}
	for _, s := range steps {
		if len(cfg.Only) > 0 && !cfg.Only[s.name] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("before %s: %w", s.name, err)
		}
		h.log.Info("measure", "name", s.name)
		start := time.Now()
		if err := s.run(ctx, res); err != nil {
			return res, fmt.Errorf("%s: %w", s.name, err)
		}
		res.Durations = append(res.Durations, StepDuration{s.name, time.Since(start)})
		if err := h.closePods(ctx); err != nil {
			return res, fmt.Errorf("%s: close pods: %w", s.name, err)
		}
	}
	res.Machine.LoadEnd = loadAvg()
	res.PodStart = h.podStart
	return res, nil
}

// newPod starts a pod and registers it for cleanup.
func (h *harness) newPod(ctx context.Context, d driver.Driver) (driver.Pod, error) {
	p, err := h.openPod(ctx, d)
	if err != nil {
		return nil, err
	}
	h.pods = append(h.pods, p)
	if s, ok := p.(interface{ Startup() time.Duration }); ok && d.Name() == lGomon {
		h.podStart = append(h.podStart, ms(s.Startup()))
	}
	return p, nil
}

// openPod starts a pod of d under the next name; the caller closes it
// (newPod's pods are closed by closePods).
func (h *harness) openPod(ctx context.Context, d driver.Driver) (driver.Pod, error) {
	h.seq++
	return d.NewPod(ctx, fmt.Sprintf("pod%d", h.seq))
}

// closePods closes every pod started so far.
func (h *harness) closePods(ctx context.Context) error {
	var errs []error
	for _, p := range h.pods {
		if err := p.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	h.pods = nil
	return errors.Join(errs...)
}

// newContainer makes a bundle running args and returns the container.
func (h *harness) newContainer(d driver.Driver, args ...string) (*driver.Container, error) {
	h.seq++
	id := fmt.Sprintf("gb%d-%s-%d", os.Getpid(), idSafe(d.Name()), h.seq)
	dir := filepath.Join(h.env.WorkDir, "ctr", id)
	c := &driver.Container{ID: id, Name: id, Bundle: filepath.Join(dir, "bundle"), Dir: filepath.Join(dir, "state")}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create container dir: %w", err)
	}
	if err := h.bundler.Make(c.Bundle, args...); err != nil {
		return nil, err
	}
	return c, nil
}

// dropContainer removes a container's files (the log tests write a lot).
func (h *harness) dropContainer(c *driver.Container) {
	_ = os.RemoveAll(filepath.Dir(c.Dir)) // best effort: scratch space
}

// runningSleeper creates a container of d running sleeper in pod and
// returns it once it runs.
func (h *harness) runningSleeper(ctx context.Context, d driver.Driver, pod driver.Pod) (*driver.Container, error) {
	c, err := h.newContainer(d, sleeper...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pod.Create(ctx, c); err != nil {
		return nil, err
	}
	return c, h.startRunning(ctx, c)
}

// startRunning runs `runc start` and waits for "running".
func (h *harness) startRunning(ctx context.Context, c *driver.Container) error {
	if err := h.env.Runc.Start(ctx, c.Root, c.ID); err != nil {
		return err
	}
	return h.env.Runc.WaitRunning(ctx, c.Root, c.ID)
}

// cleanup closes pods, deletes every container runc still knows under the
// work dir, kills every process left below us and reaps it.
func (h *harness) cleanup(ctx context.Context) error {
	var errs []error
	if err := h.closePods(ctx); err != nil {
		errs = append(errs, err)
	}
	_ = filepath.WalkDir(h.env.WorkDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() != "root" {
			return nil //nolint:nilerr // best effort sweep
		}
		ids, lerr := h.env.Runc.List(ctx, p)
		if lerr != nil {
			return filepath.SkipDir
		}
		for _, id := range ids {
			h.log.Warn("leftover container", "id", id, "root", p)
			if derr := h.env.Runc.Delete(ctx, p, id); derr != nil {
				errs = append(errs, derr)
			}
		}
		return filepath.SkipDir
	})
	killDescendants(h.log)
	return errors.Join(errs...)
}

// killDescendants SIGKILLs every process below us and reaps our zombies.
func killDescendants(log *slog.Logger) {
	for range 3 {
		ds, err := procfs.Descendants(os.Getpid())
		if err != nil {
			return
		}
		live := 0
		for _, d := range ds {
			if d.State == 'Z' {
				continue
			}
			live++
			log.Warn("leftover process", "pid", d.PID, "comm", d.Comm)
			_ = unix.Kill(d.PID, unix.SIGKILL) // best effort
		}
		time.Sleep(50 * time.Millisecond)
		reapZombies()
		if live == 0 {
			return
		}
	}
}

// reapZombies reaps our exited children without blocking.
func reapZombies() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// rotation is the order in which round rep visits n contenders: round
// after round it cycles through every permutation in lexicographic order,
// so over n! rounds each contender runs directly after each other one
// equally often (and pays for its teardown: a container's cgroup and
// namespaces go away after runc delete returns) and is first equally often.
func rotation(n, rep int) []int {
	f := factorial(n)
	k := ((rep % f) + f) % f // rep's place in the cycle, written in factorial base below
	left := make([]int, n)
	for i := range left {
		left[i] = i
	}
	order := make([]int, 0, n)
	for i := n; i > 0; i-- {
		f /= i
		j := k / f
		k %= f
		order = append(order, left[j])
		left = slices.Delete(left, j, j+1)
	}
	return order
}

func factorial(n int) int {
	f := 1
	for i := 2; i <= n; i++ {
		f *= i
	}
	return f
}

// idSafe maps a contender's name to container-ID characters (runc allows
// letters, digits, '+', '-', '.' and '_').
func idSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("+-._", r):
			return r
		}
		return '-'
	}, name)
}
