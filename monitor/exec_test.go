package monitor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// startSleeper creates and starts a long-running container and returns
// its ID. Shutdown (test cleanup) kills it.
func startSleeper(t testing.TB, m *Monitor, id string, opts monitortest.BundleOptions) {
	t.Helper()
	if len(opts.Args) == 0 {
		opts.Args = []string{"sleep", "1000"}
	}
	bundle := monitortest.NewBundle(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := CreateRequest{ID: id, BundlePath: bundle, Cgroup: Cgroupfs, Terminal: opts.Terminal}
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func execSync(t testing.TB, m *Monitor, req ExecSyncRequest) ExecSyncResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if req.Cgroup == 0 {
		req.Cgroup = Cgroupfs
	}
	res, err := m.ExecSync(ctx, req)
	if err != nil {
		t.Fatalf("ExecSync %v: %v", req.Command, err)
	}
	return res
}

func TestExecSync(t *testing.T) {
	m := newTestMonitor(t)
	startSleeper(t, m, "ex", monitortest.BundleOptions{})
	startSleeper(t, m, "ex-tty", monitortest.BundleOptions{Terminal: true})
	tests := []struct {
		name             string
		id               string
		cmd              []string
		tty              bool
		env              map[string]string
		code             int32
		stdout, stderr   string
		stderrContains   string
		stdoutContains   string
		wantStderrOrZero bool
	}{
		{name: "echo", id: "ex", cmd: []string{"echo", "hello"}, stdout: "hello\n"},
		{name: "both streams and code", id: "ex", cmd: []string{"sh", "-c", "echo out; echo err >&2; exit 7"},
			code: 7, stdout: "out\n", stderr: "err\n"},
		{name: "signalled", id: "ex", cmd: []string{"sh", "-c", "kill -9 $$"}, code: 137},
		{name: "shell command not found", id: "ex", cmd: []string{"sh", "-c", "nonexistent"},
			code: 127, stderrContains: "nonexistent: not found"},
		// runc checks the binary before it starts anything, so a bare
		// missing command is a runtime failure, with runc's own words.
		{name: "binary not found", id: "ex", cmd: []string{"nonexistent"},
			code: ExitRuntimeFailed, stderrContains: "executable file not found in $PATH"},
		{name: "tty", id: "ex-tty", tty: true, cmd: []string{"sh", "-c", "echo out; echo err >&2"}, stdout: "out\r\nerr\r\n"},
		{name: "tty shell command not found", id: "ex-tty", tty: true, cmd: []string{"sh", "-c", "nonexistent"},
			code: 127, stdoutContains: "nonexistent: not found\r\n"},
		{name: "tty on non-tty container", id: "ex", tty: true, cmd: []string{"echo", "hi"}, stdout: "hi\r\n"},
		// Env goes to the runtime, not to the command.
		{name: "env is the runtime's", id: "ex", env: map[string]string{"GOMON_X": "1"},
			cmd: []string{"sh", "-c", "echo ${GOMON_X:-unset}"}, stdout: "unset\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := execSync(t, m, ExecSyncRequest{ID: tt.id, Command: tt.cmd, Terminal: tt.tty, Env: tt.env})
			if res.ExitCode != tt.code || res.TimedOut {
				t.Fatalf("exit %d timedOut %v, want %d; stdout %q stderr %q", res.ExitCode, res.TimedOut, tt.code, res.Stdout, res.Stderr)
			}
			if tt.stdoutContains == "" && string(res.Stdout) != tt.stdout {
				t.Errorf("stdout %q, want %q", res.Stdout, tt.stdout)
			}
			if tt.stdoutContains != "" && !strings.Contains(string(res.Stdout), tt.stdoutContains) {
				t.Errorf("stdout %q lacks %q", res.Stdout, tt.stdoutContains)
			}
			if tt.stderrContains == "" && string(res.Stderr) != tt.stderr {
				t.Errorf("stderr %q, want %q", res.Stderr, tt.stderr)
			}
			if tt.stderrContains != "" && !strings.Contains(string(res.Stderr), tt.stderrContains) {
				t.Errorf("stderr %q lacks %q", res.Stderr, tt.stderrContains)
			}
			if tt.tty && len(res.Stderr) != 0 {
				t.Errorf("tty exec has stderr %q", res.Stderr)
			}
		})
	}
	// No exec pidfiles are left behind.
	if left, _ := os.ReadDir(os.TempDir()); hasExecPidfile(left) {
		t.Errorf("exec pidfiles left in %s", os.TempDir())
	}
}

func hasExecPidfile(entries []os.DirEntry) bool {
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "exec_sync") {
			return true
		}
	}
	return false
}

func TestExecSyncErrors(t *testing.T) {
	m := newTestMonitor(t)
	res, err := m.ExecSync(context.Background(), ExecSyncRequest{ID: "nope", Command: []string{"true"}})
	if err != nil || res.ExitCode != ExitRuntimeFailed || !strings.Contains(string(res.Stderr), "child not available") {
		t.Fatalf("exec into unknown id = %+v, %v; want exit code %d and the reason on stderr", res, err, ExitRuntimeFailed)
	}
	// A stopped container: the runtime's exec fails, which is a result.
	p := newPaths(t)
	runDir := t.TempDir()
	m.cfg.RunDir = runDir
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, p.request("stopped", monitortest.Bundle(t, "true"))); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}
	res, err = m.ExecSync(ctx, ExecSyncRequest{ID: "stopped", Command: []string{"true"}, Cgroup: Cgroupfs})
	if err != nil || res.ExitCode != ExitRuntimeFailed || res.TimedOut {
		t.Fatalf("exec into stopped container = %+v, %v; want exit %d, no error", res, err, ExitRuntimeFailed)
	}
	t.Logf("runtime said: %s", res.Stderr)
	if entries, _ := os.ReadDir(runDir); len(entries) != 0 {
		t.Errorf("run dir not clean: %v", entries)
	}
	if _, err := m.ExecSync(ctx, ExecSyncRequest{ID: "stopped"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("exec without command = %v", err)
	}
}

func TestExecSyncTimeout(t *testing.T) {
	m := newTestMonitor(t)
	// Host PID namespace, so $$ is a PID we can check.
	startSleeper(t, m, "to", monitortest.BundleOptions{HostPID: true})
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			res := execSync(t, m, ExecSyncRequest{ID: "to", Command: []string{"sh", "-c", "echo $$; exec sleep 30"}, TimeoutSec: 3, Terminal: tty})
			if !res.TimedOut || res.ExitCode != ExitTimedOut {
				t.Fatalf("result %+v, want timed out with %d", res, ExitTimedOut)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
			if err != nil {
				t.Fatalf("stdout %q: %v", res.Stdout, err)
			}
			// Reaped: no zombie (kill(pid, 0) succeeds on a zombie).
			if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
				t.Errorf("exec pid %d still exists after the timeout (kill: %v)", pid, err)
			}
		})
	}
	// A finished command is not timed out.
	if res := execSync(t, m, ExecSyncRequest{ID: "to", Command: []string{"true"}, TimeoutSec: 10}); res.TimedOut || res.ExitCode != 0 {
		t.Errorf("quick exec with timeout = %+v", res)
	}
}

func TestExecSyncOutputLimit(t *testing.T) {
	m := newTestMonitor(t)
	startSleeper(t, m, "big", monitortest.BundleOptions{})
	// 20 MiB of 'y\n' on stdout, then a marker on stderr and exit 3: the
	// process must finish (never blocked by the full pipe).
	cmd := []string{"sh", "-c", "yes | head -c 20971520; echo finished >&2; exit 3"}
	res := execSync(t, m, ExecSyncRequest{ID: "big", Command: cmd, TimeoutSec: 60})
	if res.ExitCode != 3 || res.TimedOut {
		t.Fatalf("exit %d timedOut %v, want 3", res.ExitCode, res.TimedOut)
	}
	// Whole chunks are kept, so the prefix ends less than one read (up to
	// 128 KiB in ioloop) short of the limit.
	n := len(res.Stdout)
	if n >= execOutputLimit || n < execOutputLimit-128<<10 {
		t.Errorf("kept %d bytes of stdout, want just under %d", n, execOutputLimit)
	}
	if want := bytes.Repeat([]byte("y\n"), n/2); !bytes.Equal(res.Stdout[:n/2*2], want) {
		t.Error("kept stdout is not a prefix of the output")
	}
	if string(res.Stderr) != "finished\n" {
		t.Errorf("stderr %q", res.Stderr)
	}
}

// TestExecSync_Concurrent runs exec syncs in parallel in one container;
// each must get exactly its own output.
func TestExecSync_Concurrent(t *testing.T) {
	m := newTestMonitor(t)
	startSleeper(t, m, "conc", monitortest.BundleOptions{})
	const n = 10
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := fmt.Sprintf("for j in 1 2 3; do echo exec%d-$j; done; echo e%d >&2; exit %d", i, i, i)
			res, err := m.ExecSync(ctx, ExecSyncRequest{ID: "conc", Command: []string{"sh", "-c", cmd}, Cgroup: Cgroupfs})
			switch {
			case err != nil:
				errs <- err
			case res.ExitCode != int32(i):
				errs <- fmt.Errorf("exec %d: exit %d", i, res.ExitCode)
			case string(res.Stdout) != fmt.Sprintf("exec%d-1\nexec%d-2\nexec%d-3\n", i, i, i) || string(res.Stderr) != fmt.Sprintf("e%d\n", i):
				errs <- fmt.Errorf("exec %d: stdout %q stderr %q", i, res.Stdout, res.Stderr)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestExecSyncSequential runs 25 exec syncs one after the other and
// reports the test process's VmRSS growth between the 5th and the 25th
// (the daemon-level budget is < 2 MiB over 25; measured in e2e).
func TestExecSyncSequential(t *testing.T) {
	m := newTestMonitor(t)
	startSleeper(t, m, "seq", monitortest.BundleOptions{})
	var rss5 int
	for i := 1; i <= 25; i++ {
		res := execSync(t, m, ExecSyncRequest{ID: "seq", Command: []string{"echo", strconv.Itoa(i)}})
		if res.ExitCode != 0 || string(res.Stdout) != strconv.Itoa(i)+"\n" {
			t.Fatalf("exec %d: %+v", i, res)
		}
		if i == 5 {
			rss5 = vmRSSKiB(t)
		}
	}
	rss25 := vmRSSKiB(t)
	t.Logf("VmRSS after exec 5: %d KiB, after exec 25: %d KiB, growth %d KiB", rss5, rss25, rss25-rss5)
}

func vmRSSKiB(t testing.TB) int {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// BenchmarkExecSync and BenchmarkRuncExec run the same command in the same
// kind of container: through ExecSync, and as a plain `runc exec` (through
// the same reaper, output discarded). Compare with
//
//	go test -run '^$' -bench 'ExecSync|RuncExec' ./monitor/
func BenchmarkExecSync(b *testing.B) {
	m := newBenchMonitor(b)
	startSleeper(b, m, "bench", monitortest.BundleOptions{})
	b.ResetTimer()
	for b.Loop() {
		res := execSync(b, m, ExecSyncRequest{ID: "bench", Command: []string{"echo", "hi"}})
		if res.ExitCode != 0 {
			b.Fatalf("exit %d", res.ExitCode)
		}
	}
}

func BenchmarkRuncExec(b *testing.B) {
	m := newBenchMonitor(b)
	startSleeper(b, m, "bench", monitortest.BundleOptions{})
	args := append(m.globalArgs("bench", Cgroupfs, nil), "exec", "bench", "echo", "hi")
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if err := m.runRuntime(ctx, args); err != nil {
			b.Fatal(err)
		}
	}
}

func newBenchMonitor(b *testing.B) *Monitor {
	b.Helper()
	runc := monitortest.Runc(b)
	m, err := New(Config{Runtime: runc, RuntimeRoot: b.TempDir(), Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			b.Errorf("shutdown: %v", err)
		}
	})
	return m
}
