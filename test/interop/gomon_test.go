package interop

// Shared helpers: locating the gomon binary, starting it through the real
// conmon-rs client, and proving that nothing is left behind. Shared with
// test/interop/v073 and test/streaming, where it is a symlink.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// defaultGomonBinary is where `make build` (or `go build -o bin/gomon
// ./cmd/gomon` in the repository root) puts the binary: bin/gomon in the
// nearest parent of the test's directory that has cmd/gomon. This file is
// shared by modules at different depths (test/interop/*, test/streaming).
func defaultGomonBinary() string {
	dir, err := os.Getwd()
	if err != nil {
		return "bin/gomon"
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, "cmd", "gomon")); err == nil && fi.IsDir() {
			return filepath.Join(dir, "bin", "gomon")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "bin/gomon"
		}
		dir = parent
	}
}

// hangGuard bounds every wait in these tests so that a hanging gomon fails
// the test instead of stalling the suite. It is not a performance assertion.
const hangGuard = 30 * time.Second

// gomonPath is the absolute, symlink-free path of the gomon binary under
// test; set by TestMain.
var gomonPath string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	p, err := locateGomon()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	gomonPath = p

	// gomon daemonises (its parent exits and the daemon is orphaned). Being
	// a child subreaper makes every orphaned gomon (and anything it leaves
	// behind) our child, so the tests can reap the daemon, read its exit
	// status and spot leftovers instead of depending on PID 1 to reap them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: become child subreaper: %v\n", err)
		return 1
	}
	return m.Run()
}

// locateGomon resolves GOMON_BINARY (default defaultGomonBinary) to an
// absolute path of an executable regular file.
func locateGomon() (string, error) {
	p := os.Getenv("GOMON_BINARY")
	source := "GOMON_BINARY"
	if p == "" {
		p, source = defaultGomonBinary(), "default path"
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve gomon binary %q: %w", p, err)
	}
	hint := "build it with `cd <repo> && go build -o bin/gomon ./cmd/gomon` (or `make build`), " +
		"or set GOMON_BINARY to its absolute path"
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("gomon binary not found at %s (%s): %w; %s", abs, source, err, hint)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("gomon binary %s (%s) is not an executable file (mode %v); %s", abs, source, fi.Mode(), hint)
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("resolve symlinks of gomon binary %s: %w", abs, err)
	}
	return resolved, nil
}

// skipOrFail skips the test with a loud reason, or fails it when
// GOMON_REQUIRE_ROOT=1 so that CI cannot pass by skipping.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("GOMON_REQUIRE_ROOT") == "1" {
		t.Fatalf("GOMON_REQUIRE_ROOT=1 but %s", reason)
	}
	t.Skipf("SKIPPED: %s (set GOMON_REQUIRE_ROOT=1 to make this a failure)", reason)
}

// requireRoot skips (or fails, see skipOrFail) unless running as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "test needs root")
	}
}

// runcPath returns the runc binary CRI-O would pass as --runtime.
func runcPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		skipOrFail(t, "runc not found in $PATH")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("resolve runc path %q: %v", p, err)
	}
	return abs
}

// serverConfig is the ConmonServerConfig CRI-O builds for a pod (docs/contract.md,
// "How CRI-O starts gomon"), pointed at gomon and at a fresh runtime root.
func serverConfig(t *testing.T, runDir string) *client.ConmonServerConfig {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.InfoLevel)
	return &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: gomonPath,
		Runtime:          runcPath(t),
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     runDir,
		LogLevel:         client.LogLevelDebug,
		LogDriver:        serverLogDriver,
		CgroupManager:    client.CgroupManagerCgroupfs,
	}
}

// gomonServer is one gomon daemon started through client.New, plus the
// goroutine that reaps it (we are its subreaper).
type gomonServer struct {
	client      *client.ConmonClient
	pid         int
	runDir      string
	runtimeRoot string

	// exited is closed once the reaper goroutine has returned; status and
	// waitErr are valid after that.
	exited  chan struct{}
	status  unix.WaitStatus
	waitErr error

	stopOnce sync.Once
}

// startGomon runs client.New(cfg), fails the test on error and registers a
// cleanup that shuts the daemon down and checks it is gone.
func startGomon(t *testing.T, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New (conmon-rs %s client, run dir %s): %v", clientGeneration, cfg.ServerRunDir, err)
	}
	pid := int(cl.PID())
	// Never hand 0, 1 or our own PID to Shutdown: kill(0, SIGINT) would hit
	// our own process group.
	if pid <= 1 || pid == os.Getpid() {
		t.Fatalf("client.PID() = %d after client.New, want the daemon's PID", pid)
	}
	s := &gomonServer{
		client:      cl,
		pid:         pid,
		runDir:      cfg.ServerRunDir,
		runtimeRoot: cfg.RuntimeRoot,
		exited:      make(chan struct{}),
	}
	go s.reap()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// reap waits for the daemon to exit. It returns at once with ECHILD if the
// daemon is not our child (then stop relies on the client's own polling).
func (s *gomonServer) reap() {
	defer close(s.exited)
	for {
		_, err := unix.Wait4(s.pid, &s.status, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		s.waitErr = err
		return
	}
}

// stop shuts the daemon down through the client (SIGINT, as CRI-O does) and
// checks that the process is gone, exited 0 and removed conmon.sock. It is
// idempotent.
func (s *gomonServer) stop(t *testing.T) {
	t.Helper()
	s.stopOnce.Do(func() {
		if err := s.client.Shutdown(); err != nil {
			t.Errorf("Shutdown of gomon pid %d: %v", s.pid, err)
		}
		select {
		case <-s.exited:
		case <-time.After(hangGuard):
			t.Errorf("gomon pid %d still running after Shutdown; sending SIGKILL", s.pid)
			_ = unix.Kill(s.pid, unix.SIGKILL) // best effort: the reaper confirms below
			<-s.exited
		}
		switch {
		case s.waitErr != nil:
			t.Logf("gomon pid %d was not our child (%v); relying on Shutdown's own check", s.pid, s.waitErr)
		case !s.status.Exited() || s.status.ExitStatus() != 0:
			t.Errorf("gomon pid %d after SIGINT: wait status %s, want exit status 0", s.pid, describeStatus(s.status))
		}
		if processExists(s.pid) {
			t.Errorf("gomon pid %d still exists after Shutdown", s.pid)
		}
		sock := filepath.Join(s.runDir, "conmon.sock")
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still present after Shutdown (lstat err: %v)", sock, err)
		}
	})
}

// describeStatus renders a wait status for error messages.
func describeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v (core dumped: %v)", ws.Signal(), ws.CoreDump())
	default:
		return fmt.Sprintf("raw %#x", uint32(ws))
	}
}

// processExists reports whether a process (including a zombie) with pid
// exists.
func processExists(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// exePath returns the /proc/<pid>/exe link target.
func exePath(pid int) (string, error) {
	p, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	if err != nil {
		return "", fmt.Errorf("read exe link of pid %d: %w", pid, err)
	}
	return p, nil
}

// procInfo is the part of /proc/<pid>/stat the leftover check needs.
type procInfo struct {
	pid   int
	ppid  int
	state byte
	comm  string
}

// children lists our direct children (orphans of gomon land here because we
// are a subreaper).
func children() ([]procInfo, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	self := os.Getpid()
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // raced with exit
		}
		// Format: pid (comm) state ppid ...; comm may contain spaces and ')'.
		i := bytes.LastIndexByte(data, ')')
		j := bytes.IndexByte(data, '(')
		if i < 0 || j < 0 || i+4 > len(data) {
			continue
		}
		fields := strings.Fields(string(data[i+2:]))
		if len(fields) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(fields[1])
		if err != nil || ppid != self {
			continue
		}
		out = append(out, procInfo{pid: pid, ppid: ppid, state: fields[0][0], comm: string(data[j+1 : i])})
	}
	return out, nil
}

// gomonChildren returns the PIDs of our children that run the gomon binary.
func gomonChildren(t *testing.T) []int {
	t.Helper()
	kids, err := children()
	if err != nil {
		t.Fatalf("list children: %v", err)
	}
	var pids []int
	for _, k := range kids {
		if exe, err := exePath(k.pid); err == nil && strings.TrimSuffix(exe, " (deleted)") == gomonPath {
			pids = append(pids, k.pid)
		}
	}
	return pids
}

// checkNoLeftovers registers a cleanup (run after every later-registered
// cleanup, i.e. after the servers are stopped) that fails the test if any
// process is left among our children, then kills and reaps it so the next
// test starts clean.
func checkNoLeftovers(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			kids, err := children()
			if err != nil {
				t.Errorf("list children: %v", err)
				return
			}
			var live []procInfo
			for _, k := range kids {
				if k.state == 'Z' {
					// An exited orphan of gomon that gomon did not reap.
					t.Logf("reaping zombie left behind: pid %d (%s)", k.pid, k.comm)
					var ws unix.WaitStatus
					_, _ = unix.Wait4(k.pid, &ws, unix.WNOHANG, nil) // best effort reap
					continue
				}
				live = append(live, k)
			}
			if len(live) == 0 {
				return
			}
			if time.Now().After(deadline) {
				for _, k := range live {
					t.Errorf("process left behind: pid %d (%s); killing it", k.pid, k.comm)
					_ = unix.Kill(k.pid, unix.SIGKILL) // cleanup of our own descendant
					var ws unix.WaitStatus
					_, _ = unix.Wait4(k.pid, &ws, 0, nil)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
