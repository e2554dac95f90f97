package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Runtime handlers configured in crio.conf.
const (
	handlerGomon = "gomon"    // runtime_type = "pod", monitor_path = gomon (default_runtime)
	handlerOCI   = "runc-oci" // runtime_type = "oci", CRI-O's own conmon
)

// image is the busybox image the suite builds into containers-storage.
const image = "docker.io/library/busybox:e2e"

// tools are the binaries under test and the helpers, from the environment.
type tools struct {
	gomon, crioBin, pinns, crictlBin, jaegerBin, runc, conmon string
}

// suite is one CRI-O + Jaeger environment under a temporary directory.
type suite struct {
	tools
	dir           string // temporary root; everything the suite creates is below it
	driver        string // storage driver: overlay when it works here, else vfs
	cgroupParent  string // per-run cgroupfs parent of every pod
	crioSock      string
	crioMinor     int    // CRI-O's minor version (34 for v1.34.0), from `crictl version`
	otlpAddr      string // Jaeger's OTLP gRPC receiver, host:port
	queryURL      string // Jaeger's HTTP query API base URL
	crioLog       string
	gomonLog      string
	jaegerLog     string
	crictlTimeout string
	crio, jaeger  *exec.Cmd
	times         *timings
	dumped        bool     // logs were dumped once already
	hostDirs      []string // host caches that did not exist before the run, deepest first
	gomonCreates  int      // containers created through the gomon handler
	// gomonContainers are the identities of the containers created through the gomon handler,
	// which their spans must carry.
	gomonContainers []podIdentity
}

// requireEnv returns the tools from the environment, skipping (or failing under
// GOMON_REQUIRE_ROOT=1) when one is missing or the test is not running as root.
func requireEnv(t *testing.T) tools {
	t.Helper()
	return tools{
		gomon:     toolFromEnv(t, "GOMON_BINARY", ""),
		crioBin:   toolFromEnv(t, "CRIO", ""),
		pinns:     toolFromEnv(t, "PINNS", ""),
		crictlBin: toolFromEnv(t, "CRICTL", ""),
		jaegerBin: toolFromEnv(t, "JAEGER", ""),
		runc:      toolFromEnv(t, "RUNC", "/usr/sbin/runc"),
		conmon:    toolFromEnv(t, "CONMON", "/usr/bin/conmon"),
	}
}

// skipEnv skips the test, or fails it under GOMON_REQUIRE_ROOT=1, saying what is missing.
func skipEnv(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("GOMON_REQUIRE_ROOT") == "1" {
		t.Fatalf("GOMON_REQUIRE_ROOT=1 but %s", msg)
	}
	t.Skipf("SKIPPING the CRI-O end-to-end test: %s (run `sudo make e2e`)", msg)
}

// toolFromEnv returns the absolute path of the executable named by the environment variable
// name (def when unset); it skips (see skipEnv) when not root or when there is none.
func toolFromEnv(t *testing.T, name, def string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		skipEnv(t, "not running as root")
	}
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	if v == "" {
		skipEnv(t, "%s is not set", name)
	}
	p, err := exec.LookPath(v)
	if err != nil {
		skipEnv(t, "%s=%q is not an executable: %v", name, v, err)
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		skipEnv(t, "%s: %v", name, err)
	}
	return abs
}

// newSuite builds the image and starts Jaeger and CRI-O; t.Cleanup stops everything.
func newSuite(t *testing.T) *suite {
	t.Helper()
	tl := requireEnv(t)
	dir, err := os.MkdirTemp("", "gomon-e2e-")
	if err != nil {
		t.Fatalf("make temp dir: %v", err)
	}
	s := &suite{
		tools:         tl,
		dir:           dir,
		cgroupParent:  "/gomon-e2e-" + filepath.Base(dir)[len("gomon-e2e-"):],
		crioSock:      filepath.Join(dir, "crio.sock"),
		crioLog:       filepath.Join(dir, "crio.log"),
		gomonLog:      filepath.Join(dir, "gomon.log"),
		jaegerLog:     filepath.Join(dir, "jaeger.log"),
		crictlTimeout: "60s",
		times:         newTimings(),
	}
	t.Logf("e2e directory: %s", dir)
	s.hostDirs = missing(hostCacheDirs)
	t.Cleanup(func() { s.teardown(t) })

	s.driver = pickStorageDriver(t, dir)
	t.Logf("storage driver: %s", s.driver)
	step := time.Now()
	if err := s.buildImage(t); err != nil {
		t.Fatalf("build busybox image: %v", err)
	}
	t.Logf("busybox image built in %v", time.Since(step).Round(time.Millisecond))

	step = time.Now()
	// The free ports are picked before Jaeger binds them: retry if one was taken meanwhile.
	for attempt := 1; ; attempt++ {
		err := s.startJaeger(t)
		if err == nil {
			break
		}
		stopProcess(s.jaeger, 5*time.Second)
		if attempt == 3 {
			s.dumpLogs(t)
			t.Fatalf("start jaeger: %v", err)
		}
		t.Logf("start jaeger (attempt %d): %v; retrying on other ports", attempt, err)
	}
	t.Logf("jaeger up in %v: OTLP %s, query %s", time.Since(step).Round(time.Millisecond), s.otlpAddr, s.queryURL)

	step = time.Now()
	if err := s.startCRIO(t); err != nil {
		s.dumpLogs(t)
		t.Fatalf("start crio: %v", err)
	}
	t.Logf("crio up in %v on %s", time.Since(step).Round(time.Millisecond), s.crioSock)
	return s
}

// freeLoopbackPorts returns n distinct loopback TCP ports that were free a
// moment ago: all are held open until the last is picked, so the kernel
// cannot hand one out twice.
func freeLoopbackPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen on loopback: %w", err)
		}
		defer func() { _ = l.Close() }()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// pickStorageDriver returns "overlay" when an overlay mount works below dir, else "vfs".
func pickStorageDriver(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "overlay-probe")
	defer func() { _ = os.RemoveAll(p) }()
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.MkdirAll(filepath.Join(p, d), 0o700); err != nil {
			return "vfs"
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", p, p, p)
	if err := syscall.Mount("overlay", filepath.Join(p, "m"), "overlay", 0, opts); err != nil {
		t.Logf("overlay mount failed (%v): using vfs", err)
		return "vfs"
	}
	_ = syscall.Unmount(filepath.Join(p, "m"), 0)
	return "overlay"
}

// startProcess starts name with args and env added to ours, its stdout and stderr appended to logPath.
func startProcess(env []string, logPath, name string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = f.Close() }()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(name), err)
	}
	go func() { _ = cmd.Wait() }() // reaps; ProcessState tells whether it exited
	return cmd, nil
}

// exited reports whether cmd's process is gone.
func exited(cmd *exec.Cmd) bool {
	return cmd.Process.Signal(syscall.Signal(0)) != nil
}

// poll calls ok every interval until it returns nil or timeout passes.
func poll(timeout, interval time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// stopProcess sends SIGTERM, waits up to grace, then SIGKILLs.
func stopProcess(cmd *exec.Cmd, grace time.Duration) {
	if cmd == nil || cmd.Process == nil || exited(cmd) {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if poll(grace, 50*time.Millisecond, func() error {
		if exited(cmd) {
			return nil
		}
		return errors.New("still running")
	}) != nil {
		_ = cmd.Process.Kill()
		_ = poll(5*time.Second, 50*time.Millisecond, func() error {
			if exited(cmd) {
				return nil
			}
			return errors.New("still running")
		})
	}
}

// run runs a helper command and returns its combined output.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// dumpLogs prints the tail of CRI-O's, gomon's and Jaeger's logs, once per run.
func (s *suite) dumpLogs(t *testing.T) {
	t.Helper()
	if s.dumped {
		t.Logf("(logs dumped above; full files in %s)", s.dir)
		return
	}
	s.dumped = true
	for _, p := range []string{s.crioLog, s.gomonLog, s.jaegerLog} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("--- %s: %v", p, err)
			continue
		}
		const max = 40000
		if len(b) > max {
			b = append([]byte("[...]\n"), b[len(b)-max:]...)
		}
		t.Logf("--- %s (tail) ---\n%s\n--- end of %s ---", p, b, filepath.Base(p))
	}
}

// writeJSON writes v as JSON to name in the suite directory and returns the path.
func (s *suite) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("encode %s: %v", name, err)
	}
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	return p
}

// decodeJSON decodes s into v.
func decodeJSON(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode json: %w", err)
	}
	return nil
}
