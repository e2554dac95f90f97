package harness

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
	"testing"
)

// BuildRootfs writes a busybox-static rootfs into dir: the binary at
// /bin/busybox plus a symlink per applet at its usual path (like `busybox
// --install -s`), and the usual mount points.
func BuildRootfs(busybox, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return fmt.Errorf("create rootfs: %w", err)
	}
	if err := CopyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("copy busybox: %w", err)
	}
	list, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) { // e.g. "bin/sh", "usr/bin/env"
		if applet == "bin/busybox" {
			continue
		}
		link := filepath.Join(dir, applet)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return fmt.Errorf("create applet dir: %w", err)
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("link applet %s: %w", applet, err)
		}
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("create mount point: %w", err)
		}
	}
	return nil
}

// busyboxPath returns the busybox in $PATH, skipping (or failing) the
// test without one.
func busyboxPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("busybox")
	if err != nil {
		SkipOrFail(t, "busybox not found in $PATH")
	}
	return p
}

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// SharedRootfs builds, once per test binary, a busybox rootfs that many
// bundles can point at; Main removes it when the tests are done.
func SharedRootfs(t testing.TB) string {
	t.Helper()
	busybox := busyboxPath(t)
	rootfsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gomon-test-rootfs-")
		if err != nil {
			rootfsErr = fmt.Errorf("create rootfs dir: %w", err)
			return
		}
		rootfsDir, rootfsErr = dir, BuildRootfs(busybox, dir)
	})
	if rootfsErr != nil {
		t.Fatalf("build busybox rootfs: %v", rootfsErr)
	}
	return rootfsDir
}

func removeSharedRootfs() {
	if rootfsDir != "" {
		_ = os.RemoveAll(rootfsDir) // best effort: a temp dir
	}
}

var (
	specOnce sync.Once
	specRaw  []byte
	specErr  error
)

// SpecTemplate returns runc's default config.json (from the runc in
// $PATH), made once per test binary with `runc spec`.
func SpecTemplate(t testing.TB) []byte {
	t.Helper()
	runc := Runc(t)
	specOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gomon-test-spec-")
		if err != nil {
			specErr = fmt.Errorf("create spec dir: %w", err)
			return
		}
		defer func() { _ = os.RemoveAll(dir) }() // a temp dir
		if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
			specErr = fmt.Errorf("runc spec: %w: %s", err, out)
			return
		}
		specRaw, specErr = os.ReadFile(filepath.Join(dir, "config.json"))
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	return specRaw
}

// Bundle writes an OCI bundle into dir and returns dir. Its config.json is
// runc's default spec running args without a terminal on a writable root;
// edit (optional) changes the spec further. The root is rootfs, or, when
// rootfs is "", a private busybox rootfs built in dir/rootfs.
func Bundle(t testing.TB, dir, rootfs string, edit func(spec map[string]any), args ...string) string {
	t.Helper()
	rootPath := rootfs
	if rootfs == "" {
		busybox := busyboxPath(t)
		if err := BuildRootfs(busybox, filepath.Join(dir, "rootfs")); err != nil {
			t.Fatalf("build busybox rootfs: %v", err)
		}
		rootPath = "rootfs"
	}
	var spec map[string]any
	if err := json.Unmarshal(SpecTemplate(t), &spec); err != nil {
		t.Fatalf("parse config.json from runc spec: %v", err)
	}
	process, ok1 := spec["process"].(map[string]any)
	root, ok2 := spec["root"].(map[string]any)
	if !ok1 || !ok2 {
		t.Fatalf("config.json from runc spec lacks process or root")
	}
	process["terminal"] = false
	process["args"] = args
	root["path"] = rootPath
	root["readonly"] = false
	if edit != nil {
		edit(spec)
	}
	raw, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatalf("encode config.json: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatalf("write config.json: %v", err)
	}
	return dir
}

// EditSpec applies edit to the config.json of an existing bundle.
func EditSpec(t testing.TB, bundle string, edit func(spec map[string]any)) {
	t.Helper()
	p := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read config.json: %v", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("parse config.json: %v", err)
	}
	edit(spec)
	if raw, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		t.Fatalf("encode config.json: %v", err)
	}
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatalf("write config.json: %v", err)
	}
}

// CopyFile copies src to a new file dst with mode perm.
func CopyFile(src, dst string, perm os.FileMode) (retErr error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open source: %w", err)
	}
	defer func() { _ = in.Close() }() // read-only
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create destination: %w", err)
	}
	defer func() {
		if err := out.Close(); err != nil && retErr == nil {
			retErr = fmt.Errorf("close destination: %w", err)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return nil
}

// WithoutPIDNamespace is a spec edit that drops the PID namespace, so the
// container's process can die of SIGTERM: as PID 1 of its own namespace it
// would ignore a signal it has no handler for.
func WithoutPIDNamespace(spec map[string]any) {
	linux := spec["linux"].(map[string]any)
	var keep []any
	for _, ns := range linux["namespaces"].([]any) {
		if ns.(map[string]any)["type"] != "pid" {
			keep = append(keep, ns)
		}
	}
	linux["namespaces"] = keep
}
