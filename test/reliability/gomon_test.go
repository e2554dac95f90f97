package reliability

// Shared helpers: locating the gomon binary, starting it through the real
// conmon-rs client, and proving that nothing is left behind. Adapted from
// test/interop/v101 (copied, not imported: each test module stands alone).

import (
	"bufio"
	"bytes"
	"context"
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

// defaultGomonBinary is where `make build` puts the binary, relative to
// this module's directory.
const defaultGomonBinary = "../../bin/gomon"

// hangGuard bounds every wait in these tests so that a hanging gomon fails
// the test instead of stalling the suite. It is not a performance assertion.
const hangGuard = 30 * time.Second

// gomonPath is the absolute, symlink-free path of the gomon binary under
// test; set by TestMain.
var gomonPath string

func TestMain(m *testing.M) {
	// The test binary doubles as the fault-injecting runtime wrapper, the
	// cleanup-command recorder and the helper client that a test kills.
	switch os.Getenv(roleEnv) {
	case roleRuntime:
		os.Exit(runtimeWrapperMain())
	case roleRecorder:
		os.Exit(recorderMain())
	case roleHelper:
		os.Exit(helperMain())
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	p, err := locateGomon()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	gomonPath = p
	// Orphaned gomon daemons (and anything they leave behind) become our
	// children, so the tests can reap them and spot leftovers.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: become child subreaper: %v\n", err)
		return 1
	}
	code := m.Run()
	if rootfsDir != "" {
		_ = os.RemoveAll(rootfsDir) // best effort: a temp dir
	}
	return code
}

// locateGomon resolves GOMON_BINARY (default defaultGomonBinary) to an
// absolute path of an executable regular file.
func locateGomon() (string, error) {
	p := os.Getenv("GOMON_BINARY")
	if p == "" {
		p = defaultGomonBinary
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve gomon binary %q: %w", p, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("gomon binary not found at %s: %w; run `make build` or set GOMON_BINARY", abs, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("gomon binary %s is not an executable file (mode %v)", abs, fi.Mode())
	}
	return filepath.EvalSymlinks(abs)
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

// runcPath returns the real runc binary.
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

// serverConfig is the ConmonServerConfig CRI-O builds for a pod, pointed
// at gomon, at runtime (the real runc or a fault wrapper) and at a fresh
// runtime root.
func serverConfig(t *testing.T, runtime string) *client.ConmonServerConfig {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.WarnLevel)
	return &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: gomonPath,
		Runtime:          runtime,
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     t.TempDir(),
		LogLevel:         client.LogLevelDebug,
		LogDriver:        client.LogDriverNone,
		CgroupManager:    client.CgroupManagerCgroupfs,
	}
}

// withDaemonLog makes the daemon log to a file (--log-driver stdout with
// the client's Stdout/Stderr set) and returns its path.
func withDaemonLog(t *testing.T, cfg *client.ConmonServerConfig) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gomon.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	cfg.LogDriver = client.LogDriverStdout
	cfg.Stdout, cfg.Stderr = f, f
	return p
}

// gomonServer is one gomon daemon, plus the goroutine that reaps it (we
// are its subreaper).
type gomonServer struct {
	client      *client.ConmonClient
	pid         int
	runDir      string
	runtimeRoot string

	exited  chan struct{} // closed once reap has returned
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
		t.Fatalf("client.New (run dir %s): %v", cfg.ServerRunDir, err)
	}
	return adoptGomon(t, cl, cfg)
}

// adoptGomon takes over the daemon cl talks to: reaps it and stops it at
// the end of the test.
func adoptGomon(t *testing.T, cl *client.ConmonClient, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	pid := int(cl.PID())
	if pid <= 1 || pid == os.Getpid() {
		t.Fatalf("client.PID() = %d, want the daemon's PID", pid)
	}
	s := &gomonServer{client: cl, pid: pid, runDir: cfg.ServerRunDir, runtimeRoot: cfg.RuntimeRoot, exited: make(chan struct{})}
	go s.reap()
	t.Cleanup(func() { s.stop(t) })
	return s
}

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
// checks that it is gone, exited 0 and removed conmon.sock. Idempotent.
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
			_ = unix.Kill(s.pid, unix.SIGKILL) // our own daemon
			<-s.exited
		}
		switch {
		case s.waitErr != nil:
			t.Logf("gomon pid %d was not our child (%v)", s.pid, s.waitErr)
		case !s.status.Exited() || s.status.ExitStatus() != 0:
			t.Errorf("gomon pid %d after SIGINT: wait status %#x, want exit status 0", s.pid, uint32(s.status))
		}
		sock := filepath.Join(s.runDir, "conmon.sock")
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still present after Shutdown (lstat err: %v)", sock, err)
		}
	})
}

// alive checks that the daemon still answers Version.
func (s *gomonServer) alive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	v, err := s.client.Version(ctx, &client.VersionConfig{})
	if err != nil {
		t.Fatalf("gomon stopped serving: Version: %v", err)
	}
	if int(v.ProcessID) != s.pid {
		t.Fatalf("Version answered by pid %d, want %d", v.ProcessID, s.pid)
	}
}

// procInfo is the part of /proc/<pid>/stat the leftover checks need.
type procInfo struct {
	pid, ppid int
	state     byte
	comm      string
}

// readStat parses /proc/<pid>/stat.
func readStat(pid int) (procInfo, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procInfo{}, err
	}
	i := bytes.LastIndexByte(data, ')')
	j := bytes.IndexByte(data, '(')
	if i < 0 || j < 0 || i+4 > len(data) {
		return procInfo{}, fmt.Errorf("malformed stat of %d", pid)
	}
	fields := strings.Fields(string(data[i+2:]))
	if len(fields) < 2 {
		return procInfo{}, fmt.Errorf("malformed stat of %d", pid)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procInfo{}, fmt.Errorf("malformed stat of %d: %w", pid, err)
	}
	return procInfo{pid: pid, ppid: ppid, state: fields[0][0], comm: string(data[j+1 : i])}, nil
}

// childrenOf lists the processes whose parent is ppid.
func childrenOf(ppid int) ([]procInfo, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != ppid {
			continue // raced with exit, or not a child
		}
		out = append(out, st)
	}
	return out, nil
}

// processExists reports whether a process (including a zombie) exists.
func processExists(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// checkNoLeftovers registers a cleanup (run after every later-registered
// cleanup, i.e. after the servers are stopped) that fails the test if any
// process other than the helpers listed in keep is left among our
// children, then kills and reaps it so the next test starts clean.
func checkNoLeftovers(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			kids, err := childrenOf(os.Getpid())
			if err != nil {
				t.Errorf("list children: %v", err)
				return
			}
			var live []procInfo
			for _, k := range kids {
				if k.state == 'Z' {
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
					_ = unix.Kill(k.pid, unix.SIGKILL) // our own descendant
					var ws unix.WaitStatus
					_, _ = unix.Wait4(k.pid, &ws, 0, nil)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// procStatus returns the named numeric field (VmRSS in bytes, Threads as
// a count) of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("open status of pid %d: %v", pid, err)
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == field+":" {
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", sc.Text(), err)
			}
			if len(fields) == 3 && fields[2] == "kB" {
				n <<= 10
			}
			return n
		}
	}
	t.Fatalf("no %s line in /proc/%d/status (err %v)", field, pid, sc.Err())
	return 0
}

// fdCount counts the open fds of pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatalf("list fds of %d: %v", pid, err)
	}
	return len(ents)
}

// zombiesOf lists the zombie children of pid.
func zombiesOf(t *testing.T, pid int) []procInfo {
	t.Helper()
	kids, err := childrenOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	var z []procInfo
	for _, k := range kids {
		if k.state == 'Z' {
			z = append(z, k)
		}
	}
	return z
}
