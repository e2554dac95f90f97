// Package monitortest provides helpers for tests that run real containers
// through package monitor, the way net/http/httptest serves net/http: a
// busybox OCI bundle built in a test's temp dir, and a gate that skips
// (or, in CI, fails) tests when root or runc is missing.
//
// Bundles are made from the host's static busybox (/bin/busybox, with a
// symlink per applet) and a config.json generated once per process with
// `runc spec` and edited with encoding/json.
//
// A Monitor makes the process a child subreaper whose reaper waits for
// every child. The helpers here run their few commands (runc spec,
// busybox --list-full) once and tolerate a reaper stealing the exit
// status, so they may be called while a Monitor lives.
package monitortest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// EnvRequireRoot names the environment variable that turns skips for a
// missing root/runc/busybox into failures (CI sets it to 1).
const EnvRequireRoot = "GOMON_REQUIRE_ROOT"

// Busybox is the static busybox the bundles are built from.
const Busybox = "/bin/busybox"

// runcCandidates are tried in order before $PATH.
var runcCandidates = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"}

// RequireRoot skips the test, loudly, unless it runs as root with runc and
// a static busybox available; with GOMON_REQUIRE_ROOT=1 it fails instead,
// so CI cannot pass by skipping.
func RequireRoot(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := findRunc(); err != nil {
		missing = append(missing, "runc")
	}
	if _, err := os.Stat(Busybox); err != nil {
		missing = append(missing, Busybox)
	}
	if len(missing) == 0 {
		return
	}
	msg := "SKIPPED: this test runs real containers and needs " + strings.Join(missing, ", ")
	if os.Getenv(EnvRequireRoot) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", msg, EnvRequireRoot)
	}
	t.Skip(msg)
}

// Runc returns the path of runc, calling RequireRoot first.
func Runc(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	p, err := findRunc()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func findRunc() (string, error) {
	for _, p := range runcCandidates {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return exec.LookPath("runc")
}

// BundleOptions shape a bundle made by NewBundle.
type BundleOptions struct {
	// Args is the container's command; default "true".
	Args []string
	// Terminal sets process.terminal (a pty through the console socket).
	Terminal bool
	// MemoryLimit, when > 0, sets linux.resources.memory.limit in bytes
	// (and swap to the same value where the host accounts swap, so the
	// container cannot escape the limit by swapping).
	MemoryLimit int64
	// Env is added to process.env.
	Env []string
	// HostPID drops the PID namespace, so the command is not PID 1 (which
	// ignores signals it has no handler for, e.g. SIGTERM).
	HostPID bool
	// Annotations are added to the spec's annotations (as CRI-O adds
	// the pod's allowed annotations).
	Annotations map[string]string
}

// Bundle makes a non-terminal busybox bundle running args in t.TempDir()
// and returns its directory.
func Bundle(t testing.TB, args ...string) string {
	t.Helper()
	return NewBundle(t, BundleOptions{Args: args})
}

// NewBundle makes a busybox bundle in t.TempDir() and returns its
// directory: rootfs/ holds bin/busybox plus a symlink per applet at its
// usual path, config.json comes from `runc spec` edited per opts.
func NewBundle(t testing.TB, opts BundleOptions) string {
	t.Helper()
	RequireRoot(t)
	dir := t.TempDir()
	if err := MakeBundle(dir, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// MakeBundle writes a busybox bundle into dir (created if missing).
func MakeBundle(dir string, opts BundleOptions) error {
	tmpl, applets, err := templates()
	if err != nil {
		return err
	}
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return fmt.Errorf("make rootfs: %w", err)
		}
	}
	if err := copyFile(Busybox, filepath.Join(rootfs, "bin/busybox")); err != nil {
		return err
	}
	for _, a := range applets {
		dst := filepath.Join(rootfs, a)
		if a == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("make applet dir: %w", err)
		}
		if err := os.Symlink("/bin/busybox", dst); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link applet: %w", err)
		}
	}
	spec, err := editSpec(tmpl, opts)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), spec, 0o644); err != nil {
		return fmt.Errorf("write config.json: %w", err)
	}
	return nil
}

var (
	tmplOnce    sync.Once
	tmplSpec    []byte
	tmplApplets []string
	tmplErr     error
)

// templates returns the `runc spec` output and busybox's applet paths,
// computed once per process.
func templates() ([]byte, []string, error) {
	tmplOnce.Do(func() {
		runc, err := findRunc()
		if err != nil {
			tmplErr = fmt.Errorf("find runc: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "monitortest-spec-")
		if err != nil {
			tmplErr = fmt.Errorf("make spec dir: %w", err)
			return
		}
		defer func() { _ = os.RemoveAll(dir) }()
		cmd := exec.Command(runc, "spec", "--rootless=false")
		cmd.Dir = dir
		if _, err := output(cmd); err != nil {
			tmplErr = fmt.Errorf("runc spec: %w", err)
			return
		}
		if tmplSpec, err = os.ReadFile(filepath.Join(dir, "config.json")); err != nil {
			tmplErr = fmt.Errorf("read runc spec: %w", err)
			return
		}
		out, err := output(exec.Command(Busybox, "--list-full"))
		if err != nil {
			tmplErr = fmt.Errorf("busybox --list-full: %w", err)
			return
		}
		tmplApplets = strings.Fields(string(out))
		if len(tmplApplets) == 0 {
			tmplErr = errors.New("busybox --list-full listed no applets")
		}
	})
	return tmplSpec, tmplApplets, tmplErr
}

// output runs cmd and returns its stdout. A Monitor's reaper in this
// process may reap the child before exec does; Wait then fails with ECHILD
// although the output is complete, and that is not an error here.
func output(cmd *exec.Cmd) ([]byte, error) {
	out, err := cmd.Output()
	if err != nil && errors.Is(err, syscall.ECHILD) {
		err = nil
	}
	return out, err
}

// editSpec applies opts to a `runc spec` config.json.
func editSpec(tmpl []byte, opts BundleOptions) ([]byte, error) {
	var spec map[string]any
	if err := json.Unmarshal(tmpl, &spec); err != nil {
		return nil, fmt.Errorf("parse runc spec: %w", err)
	}
	proc, ok := spec["process"].(map[string]any)
	if !ok {
		return nil, errors.New("runc spec has no process object")
	}
	args := opts.Args
	if len(args) == 0 {
		args = []string{"true"}
	}
	proc["terminal"] = opts.Terminal
	proc["args"] = args
	if len(opts.Env) > 0 {
		env, _ := proc["env"].([]any)
		for _, e := range opts.Env {
			env = append(env, e)
		}
		proc["env"] = env
	}
	if len(opts.Annotations) > 0 {
		ann, _ := spec["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
		}
		for k, v := range opts.Annotations {
			ann[k] = v
		}
		spec["annotations"] = ann
	}
	linux, ok := spec["linux"].(map[string]any)
	if !ok {
		return nil, errors.New("runc spec has no linux object")
	}
	if opts.HostPID {
		nss, _ := linux["namespaces"].([]any)
		kept := nss[:0]
		for _, ns := range nss {
			if m, ok := ns.(map[string]any); ok && m["type"] == "pid" {
				continue
			}
			kept = append(kept, ns)
		}
		linux["namespaces"] = kept
	}
	if opts.MemoryLimit > 0 {
		res, _ := linux["resources"].(map[string]any)
		if res == nil {
			res = map[string]any{}
		}
		mem := map[string]any{"limit": opts.MemoryLimit}
		if swapAccounted() {
			mem["swap"] = opts.MemoryLimit
		}
		res["memory"] = mem
		linux["resources"] = res
	}
	out, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	return out, nil
}

// swapAccounted reports whether the memory cgroup can limit swap.
func swapAccounted() bool {
	for _, p := range []string{
		"/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", // v1
		"/sys/fs/cgroup/memory.swap.max",                    // v2 root has none; checked per child
	} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// copyFile copies src to dst with src's mode.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer func() { _ = in.Close() }()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", src, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close %s: %w", dst, cerr)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}
