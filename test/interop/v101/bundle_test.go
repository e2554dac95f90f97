package interop

// Busybox OCI bundle for the container tests. Shared with test/interop/v073
// and test/streaming, where it is a symlink.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeBusyboxBundle builds an OCI bundle in dir: rootfs with a static
// busybox at /bin/busybox plus a symlink per applet (like `busybox
// --install -s`), and a config.json from `runc spec` running args without a
// terminal on a writable root. It returns dir.
func makeBusyboxBundle(t *testing.T, runc, dir string, args ...string) string {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		skipOrFail(t, "busybox not found in $PATH")
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatalf("create rootfs: %v", err)
	}
	if err := copyFile(busybox, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		t.Fatalf("copy busybox: %v", err)
	}
	list, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	for _, applet := range strings.Fields(string(list)) { // e.g. "bin/sh", "usr/bin/env"
		link := filepath.Join(rootfs, applet)
		if applet == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatalf("create applet dir: %v", err)
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatalf("link applet %s: %v", applet, err)
		}
	}

	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec --bundle %s: %v: %s", dir, err, out)
	}
	cfgPath := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatalf("read config.json: %v", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("parse config.json: %v", err)
	}
	process, ok1 := spec["process"].(map[string]any)
	root, ok2 := spec["root"].(map[string]any)
	if !ok1 || !ok2 {
		t.Fatalf("config.json from runc spec lacks process or root: %s", raw)
	}
	process["terminal"] = false
	process["args"] = args
	root["readonly"] = false
	raw, err = json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatalf("encode config.json: %v", err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatalf("write config.json: %v", err)
	}
	return dir
}

// copyFile copies src to a new file dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) (retErr error) {
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
