package interop

// ExecSyncContainer through the real client (docs/contract.md, "ExecSyncContainer"): concurrent
// calls, the daemon's memory over many calls, timeouts, failing commands,
// terminals, the 16 MiB output cap and unknown containers. Built against both client
// generations (go.mod and go.v073.mod).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
)

// execGuard bounds one ExecSync call (or a batch of concurrent ones): a
// `runc exec` on the shared 2-core machine can take seconds. Like
// hangGuard it only turns a hang into a failure.
const execGuard = 2 * hangGuard

// runningContainer creates a busybox container running args and starts it.
func runningContainer(t *testing.T, s *gomonServer, args []string, edit func(map[string]any), cfg func(*client.CreateContainerConfig)) *ctr {
	t.Helper()
	c, err := create(t, s, args, edit, cfg)
	if err != nil {
		t.Fatalf("CreateContainer %v: %v", args, err)
	}
	c.runc(t, s, "start", c.id)
	return c
}

// execSync runs one ExecSyncContainer call bounded by execGuard and fails
// the test on an RPC error.
func execSync(t *testing.T, s *gomonServer, cfg *client.ExecSyncConfig) *client.ExecContainerResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), execGuard)
	defer cancel()
	res, err := s.client.ExecSyncContainer(ctx, cfg)
	if ctx.Err() != nil {
		t.Fatalf("ExecSyncContainer %v did not return within %v: %v", cfg.Command, execGuard, err)
	}
	if err != nil {
		t.Fatalf("ExecSyncContainer %v: %v", cfg.Command, err)
	}
	return res
}

// vmRSS returns the resident set size of pid in bytes (VmRSS in
// /proc/<pid>/status).
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return harness.ProcStatus(t, pid, "VmRSS")
}

// TestExecSyncConcurrent: ten ExecSync calls at once into one container
// each get their own output, and none leaves its pidfile in the run dir.
func TestExecSyncConcurrent(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)

	const n = 10
	ctx, cancel := context.WithTimeout(context.Background(), execGuard)
	defer cancel()
	results := make([]*client.ExecContainerResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{
				ID: c.id, Command: []string{"echo", strconv.Itoa(i)},
			})
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%d concurrent ExecSync calls did not all return within %v", n, execGuard)
	}
	for i := range n {
		res, err := results[i], errs[i]
		switch {
		case err != nil:
			t.Errorf("exec %d: %v", i, err)
		case res.ExitCode != 0 || res.TimedOut:
			t.Errorf("exec %d: exit code %d, timed out %v, stderr %q; want 0, false", i, res.ExitCode, res.TimedOut, res.Stderr)
		case string(res.Stdout) != fmt.Sprintf("%d\n", i) || len(res.Stderr) != 0:
			t.Errorf("exec %d: stdout %q stderr %q, want %q and nothing", i, res.Stdout, res.Stderr, fmt.Sprintf("%d\n", i))
		}
	}
	left, err := filepath.Glob(filepath.Join(s.runDir, "exec_sync*pid"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("exec pidfiles left in the run dir: %v", left)
	}
}

// TestExecSyncMemory: 25 sequential execs after a warm-up must not grow
// the daemon's resident memory by 2 MiB or more (a leaked buffer or
// goroutine per exec would).
func TestExecSyncMemory(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)

	run := func(round, count int) {
		for i := range count {
			want := fmt.Sprintf("r%d-%d", round, i)
			res := execSync(t, s, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", want}, Timeout: uint64(execGuard / time.Second)})
			if res.ExitCode != 0 || string(res.Stdout) != want+"\n" {
				t.Fatalf("exec %s: exit %d stdout %q stderr %q", want, res.ExitCode, res.Stdout, res.Stderr)
			}
		}
	}
	const warmUp, measured, limit = 5, 25, 2 << 20
	run(0, warmUp)
	before := vmRSS(t, s.pid)
	run(1, measured)
	after := vmRSS(t, s.pid)
	growth := after - before
	t.Logf("gomon VmRSS after %d warm-up execs %d KiB, after %d more %d KiB: growth %+d KiB (limit %d KiB)",
		warmUp, before>>10, measured, after>>10, growth>>10, limit>>10)
	if growth >= limit {
		t.Errorf("VmRSS grew by %d KiB over %d execs, want < %d KiB", growth>>10, measured, limit>>10)
	}
}

// nsProcesses lists the processes in the PID namespace of pid (the
// container's init) whose argv is exactly argv.
func nsProcesses(t *testing.T, pid uint32, argv ...string) []int {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatalf("pid namespace of container init %d: %v", pid, err)
	}
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || got != ns {
			continue // gone, or another namespace
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Equal(cmd, want) {
			out = append(out, p)
		}
	}
	return out
}

// TestExecSyncTimeout: a command outliving its timeout is reported as
// timed out (exit code -3, docs/contract.md, "Exit codes") and is gone when the call
// returns. The process is first seen running, so the final check can fail.
func TestExecSyncTimeout(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)

	type outcome struct {
		res *client.ExecContainerResult
		err error
	}
	ctx, cancel := context.WithTimeout(context.Background(), execGuard)
	defer cancel()
	done := make(chan outcome, 1)
	go func() {
		res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"sleep", "5"}, Timeout: 1})
		done <- outcome{res, err}
	}()

	seen := false
	var got outcome
wait:
	for {
		select {
		case got = <-done:
			break wait
		case <-time.After(10 * time.Millisecond):
			if !seen && len(nsProcesses(t, c.pid, "sleep", "5")) > 0 {
				seen = true
			}
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("ExecSync with Timeout 1 did not return within %v: %v", execGuard, got.err)
	}
	if got.err != nil {
		t.Fatalf("ExecSync with Timeout 1: %v", got.err)
	}
	if !seen {
		// A slow runc exec can eat the whole second; then the check
		// below proves less, so say so.
		t.Logf("never saw `sleep 5` running in the container before the call returned")
	}
	t.Logf("result: exit code %d, timed out %v, stdout %q, stderr %q", got.res.ExitCode, got.res.TimedOut, got.res.Stdout, got.res.Stderr)
	if !got.res.TimedOut {
		t.Errorf("TimedOut = false, want true")
	}
	if got.res.ExitCode != -3 {
		t.Errorf("exit code %d, want -3 (killed at the deadline)", got.res.ExitCode)
	}
	if left := nsProcesses(t, c.pid, "sleep", "5"); len(left) != 0 {
		t.Errorf("`sleep 5` still in the container after the timed-out call returned: pids %v", left)
	}
}

// TestExecSyncResults covers failing commands, terminals and the output
// cap.
func TestExecSyncResults(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)
	const notFound = "sh: nonexistent: not found"

	tests := []struct {
		name     string
		cmd      []string
		terminal bool
		check    func(t *testing.T, res *client.ExecContainerResult)
	}{{
		name: "invalid command",
		cmd:  []string{"sh", "-c", "nonexistent"},
		check: func(t *testing.T, res *client.ExecContainerResult) {
			if res.ExitCode != 127 || res.TimedOut {
				t.Errorf("exit code %d timed out %v, want 127, false", res.ExitCode, res.TimedOut)
			}
			if !strings.Contains(string(res.Stderr), notFound) || len(res.Stdout) != 0 {
				t.Errorf("stdout %q stderr %q, want nothing and the shell's %q", res.Stdout, res.Stderr, notFound)
			}
		},
	}, {
		name:     "invalid command on a terminal",
		cmd:      []string{"sh", "-c", "nonexistent"},
		terminal: true,
		check: func(t *testing.T, res *client.ExecContainerResult) {
			if res.ExitCode != 127 || res.TimedOut {
				t.Errorf("exit code %d timed out %v, want 127, false", res.ExitCode, res.TimedOut)
			}
			out := string(res.Stdout)
			if !strings.Contains(out, notFound) || !strings.HasSuffix(out, "\r\n") || len(res.Stderr) != 0 {
				t.Errorf("stdout %q stderr %q, want %q ending in CRLF on stdout and nothing on stderr", out, res.Stderr, notFound)
			}
		},
	}, {
		name: "20 MiB of output",
		cmd:  []string{"head", "-c", "20971520", "/dev/zero"},
		check: func(t *testing.T, res *client.ExecContainerResult) {
			const limit = 16 << 20
			t.Logf("kept %d bytes of stdout (16 MiB - %d)", len(res.Stdout), limit-len(res.Stdout))
			if res.ExitCode != 0 || res.TimedOut {
				t.Errorf("exit code %d timed out %v, want 0, false", res.ExitCode, res.TimedOut)
			}
			if len(res.Stdout) >= limit || len(res.Stdout) <= 15<<20 {
				t.Errorf("stdout has %d bytes, want a prefix in (15 MiB, 16 MiB)", len(res.Stdout))
			}
			if i := bytes.IndexFunc(res.Stdout, func(r rune) bool { return r != 0 }); i >= 0 {
				t.Errorf("stdout byte %d is not a zero byte", i)
			}
			if len(res.Stderr) != 0 {
				t.Errorf("stderr %q, want empty", res.Stderr)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := execSync(t, s, &client.ExecSyncConfig{
				ID: c.id, Command: tt.cmd, Terminal: tt.terminal, Timeout: uint64(execGuard / time.Second),
			})
			tt.check(t, res)
		})
	}
}
