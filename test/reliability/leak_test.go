package reliability

// Leaks: many create/exit cycles and exec syncs in one daemon must not
// grow its fds, threads or memory, nor leave zombies.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// leakCycles is the number of create/exit cycles and of exec syncs
// (RELIABILITY_CYCLES, default 1000).
func leakCycles(t *testing.T) int {
	t.Helper()
	if v := os.Getenv("RELIABILITY_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("RELIABILITY_CYCLES=%q is not a positive number", v)
		}
		return n
	}
	return 1000
}

// usage is a snapshot of the daemon's resources.
type usage struct {
	fds     int
	threads int64
	rss     int64
}

func (u usage) String() string {
	return fmt.Sprintf("%d fds, %d threads, VmRSS %d KiB", u.fds, u.threads, u.rss>>10)
}

// measure snapshots s's resources after letting in-flight work settle.
func measure(t *testing.T, s *gomonServer) usage {
	t.Helper()
	// The daemon gives memory back to the OS a while after work stops
	// (reclaimPeriod, 5 s, in cmd/gomon/internal/daemon/runtime.go): a
	// reading right after a burst depends on where that tick fell. Two
	// periods of quiet make both readings steady-state ones, which is
	// what a leak shows in.
	time.Sleep(11 * time.Second)
	return usage{fds: fdCount(t, s.pid), threads: procStatus(t, s.pid, "Threads"), rss: procStatus(t, s.pid, "VmRSS")}
}

// checkGrowth fails if after grew beyond small bounds over before.
func checkGrowth(t *testing.T, what string, n int, before, after usage) {
	t.Helper()
	const fdSlack, threadSlack, rssSlack = 2, 6, 2 << 20
	t.Logf("%s: before %v; after %d more: %v (fds %+d, threads %+d, VmRSS %+d KiB)",
		what, before, n, after, after.fds-before.fds, after.threads-before.threads, (after.rss-before.rss)>>10)
	if after.fds > before.fds+fdSlack {
		t.Errorf("%s: fds grew from %d to %d over %d", what, before.fds, after.fds, n)
	}
	if after.threads > before.threads+threadSlack {
		t.Errorf("%s: threads grew from %d to %d over %d", what, before.threads, after.threads, n)
	}
	if after.rss > before.rss+rssSlack {
		t.Errorf("%s: VmRSS grew by %d KiB over %d (bound %d KiB)", what, (after.rss-before.rss)>>10, n, rssSlack>>10)
	}
}

// parallel runs n jobs on workers goroutines; job gets the worker index
// and the job number. It stops at the first error.
func parallel(workers, n int, job func(w, i int) error) error {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				mu.Lock()
				failed := firstErr != nil
				mu.Unlock()
				if failed {
					return
				}
				if err := job(w, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

func TestNoLeaksOverManyCycles(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("long: 1000 create/exit cycles and 1000 exec syncs (RELIABILITY_CYCLES to change)")
	}
	checkNoLeftovers(t)
	n := leakCycles(t)
	runc := runcPath(t)
	s := startGomon(t, serverConfig(t, runc))
	const workers = 4
	type slot struct{ bundle, exit, log string }
	slots := make([]slot, workers)
	for w := range slots {
		dir := t.TempDir()
		slots[w] = slot{bundle: makeBundle(t, nil, "true"), exit: filepath.Join(dir, "exit"), log: filepath.Join(dir, "ctr.log")}
	}
	var seq atomic.Int64
	cycle := func(w, _ int) error {
		sl := slots[w]
		id := fmt.Sprintf("leak-%d-%d", os.Getpid(), seq.Add(1))
		_ = os.Remove(sl.exit)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		if _, err := s.client.CreateContainer(ctx, &client.CreateContainerConfig{
			ID: id, BundlePath: sl.bundle, ExitPaths: []string{sl.exit},
			LogDrivers: []client.ContainerLogDriver{{Type: client.LogDriverTypeContainerRuntimeInterface, Path: sl.log}},
		}); err != nil {
			return fmt.Errorf("create %s: %w", id, err)
		}
		if out, err := exec.Command(runc, "--root", s.runtimeRoot, "start", id).CombinedOutput(); err != nil {
			return fmt.Errorf("runc start %s: %w: %s", id, err, out)
		}
		if got, err := waitForFile(sl.exit, hangGuard); err != nil {
			return fmt.Errorf("exit file of %s: %w", id, err)
		} else if got != "0" {
			return fmt.Errorf("exit file of %s: %q, want 0", id, got)
		}
		if out, err := exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", id).CombinedOutput(); err != nil {
			return fmt.Errorf("runc delete %s: %w: %s", id, err, out)
		}
		return nil
	}
	// The monitor remembers its last 256 exited containers (for Wait and
	// late ReopenLog errors): warm up past that ring before measuring.
	const warmUp, createWarmUp = 40, 300
	if err := parallel(workers, createWarmUp, cycle); err != nil {
		t.Fatal(err)
	}
	before := measure(t, s)
	start := time.Now()
	if err := parallel(workers, n, cycle); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d create/start/exit/delete cycles, %d at a time: %v", n, workers, time.Since(start).Round(time.Millisecond))
	after := measure(t, s)
	checkGrowth(t, "create/exit cycles", n, before, after)
	if z := zombiesOf(t, s.pid); len(z) != 0 {
		t.Errorf("gomon has %d zombie children after the cycles: %+v", len(z), z)
	}

	c := running(t, s, nil, "sleep", "100000")
	execOne := func(_, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		want := strconv.Itoa(i)
		res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", want}, Timeout: 20})
		if err != nil {
			return fmt.Errorf("exec %d: %w", i, err)
		}
		if res.ExitCode != 0 || string(res.Stdout) != want+"\n" {
			return fmt.Errorf("exec %d: exit %d stdout %q stderr %q", i, res.ExitCode, res.Stdout, res.Stderr)
		}
		return nil
	}
	if err := parallel(workers, warmUp, execOne); err != nil {
		t.Fatal(err)
	}
	before = measure(t, s)
	start = time.Now()
	if err := parallel(workers, n, execOne); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d exec syncs, %d at a time: %v", n, workers, time.Since(start).Round(time.Millisecond))
	after = measure(t, s)
	checkGrowth(t, "exec syncs", n, before, after)
	if z := zombiesOf(t, s.pid); len(z) != 0 {
		t.Errorf("gomon has %d zombie children after the execs: %+v", len(z), z)
	}
	if left, _ := filepath.Glob(filepath.Join(s.runDir, "exec_sync*")); len(left) != 0 {
		t.Errorf("%d exec pidfiles left in the run dir", len(left))
	}
	c.runc(t, s, "kill", c.id, "KILL")
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d", code)
	}
}
