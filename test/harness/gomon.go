package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// HangGuard bounds every wait in the suites so that a hanging gomon fails
// the test instead of stalling the run. It is not a performance assertion.
const HangGuard = 30 * time.Second

// EnvRequireRoot names the variable that turns skips for a missing root,
// runc or busybox into failures (CI sets it to 1).
const EnvRequireRoot = "GOMON_REQUIRE_ROOT"

// gomonPath is set by Main.
var gomonPath string

// Gomon returns the absolute, symlink-free path of the gomon binary under
// test, as resolved by Main.
func Gomon() string { return gomonPath }

// Main is the body of a suite's TestMain: it resolves the gomon binary
// (and stores its path in *gomon when gomon is not nil), makes the test
// binary a child subreaper, runs the tests and removes the shared rootfs. Every gomon daemonises (its parent exits and the daemon
// is orphaned); as subreaper, orphaned daemons and anything they leave
// behind become our children, so the tests can reap them, read their exit
// status and spot leftovers instead of depending on PID 1.
func Main(m *testing.M, gomon *string) int {
	p, err := LocateGomon()
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	gomonPath = p
	if gomon != nil {
		*gomon = p
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: become child subreaper: %v\n", err)
		return 1
	}
	code := m.Run()
	removeSharedRootfs()
	return code
}

// defaultGomonBinary is where `make build` puts the binary: bin/gomon in
// the nearest parent of the working directory that has cmd/gomon, so a
// suite at any depth of the repository finds it.
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

// LocateGomon resolves GOMON_BINARY (default: bin/gomon of the enclosing
// repository) to the absolute, symlink-free path of an executable file.
func LocateGomon() (string, error) {
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

// SkipOrFail skips the test with a loud reason, or fails it when
// GOMON_REQUIRE_ROOT=1.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv(EnvRequireRoot) == "1" {
		t.Fatalf("%s=1 but %s", EnvRequireRoot, reason)
	}
	t.Skipf("SKIPPED: %s (set %s=1 to make this a failure)", reason, EnvRequireRoot)
}

// RequireRoot skips (or fails, see SkipOrFail) unless running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "test needs root")
	}
}

// Runc returns the absolute path of the runc in $PATH, the runtime CRI-O
// would pass as --runtime.
func Runc(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		SkipOrFail(t, "runc not found in $PATH")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("resolve runc path %q: %v", p, err)
	}
	return abs
}

// RuncIn runs runc (see Runc) with --root root and args, and fails the test
// with runc's output if it fails.
func RuncIn(t testing.TB, root string, args ...string) {
	t.Helper()
	full := append([]string{"--root", root}, args...)
	if out, err := exec.Command(Runc(t), full...).CombinedOutput(); err != nil {
		t.Fatalf("runc %v: %v: %s", args, err, out)
	}
}
