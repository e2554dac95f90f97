// Package oci makes busybox OCI bundles for the benchmark and runs the runc
// commands the harness itself issues (start, state, exec, delete).
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// applets are the busybox applets linked into every rootfs.
var applets = []string{"sh", "sleep", "echo", "true", "cat", "yes", "head", "tr", "ls"}

// Bundler makes bundles from one `runc spec` template and one private copy
// of busybox and of the loggen helper, hard-linked into each rootfs.
type Bundler struct {
	spec    map[string]any
	busybox string // private copy
	loggen  string // static helper, may be empty
}

// NewBundler prepares dir (a scratch directory it owns) with a spec
// template from runc and a private copy of busybox and loggen.
func NewBundler(runc, busybox, loggen, dir string) (*Bundler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create bundler dir: %w", err)
	}
	specDir, err := os.MkdirTemp(dir, "spec")
	if err != nil {
		return nil, fmt.Errorf("create spec dir: %w", err)
	}
	cmd := exec.Command(runc, "spec", "--rootless=false")
	cmd.Dir = specDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("runc spec: %w: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(specDir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read spec template: %w", err)
	}
	b := &Bundler{busybox: filepath.Join(dir, "busybox")}
	if err := json.Unmarshal(raw, &b.spec); err != nil {
		return nil, fmt.Errorf("parse spec template: %w", err)
	}
	if err := copyFile(busybox, b.busybox); err != nil {
		return nil, err
	}
	if loggen != "" {
		b.loggen = filepath.Join(dir, "loggen")
		if err := copyFile(loggen, b.loggen); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Make creates a bundle in dir (which must not exist) whose process runs
// args without a terminal. The rootfs is writable.
func (b *Bundler) Make(dir string, args ...string) error {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return fmt.Errorf("create rootfs: %w", err)
		}
	}
	if err := os.Link(b.busybox, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		return fmt.Errorf("link busybox: %w", err)
	}
	if b.loggen != "" {
		if err := os.Link(b.loggen, filepath.Join(rootfs, "bin", "loggen")); err != nil {
			return fmt.Errorf("link loggen: %w", err)
		}
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			return fmt.Errorf("link applet: %w", err)
		}
	}
	spec := b.Spec(args...)
	raw, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return fmt.Errorf("encode config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		return fmt.Errorf("write config.json: %w", err)
	}
	return nil
}

// Spec returns a fresh copy of the template with args as the process.
func (b *Bundler) Spec(args ...string) map[string]any {
	raw, _ := json.Marshal(b.spec) // cannot fail: it came from JSON
	var spec map[string]any
	_ = json.Unmarshal(raw, &spec)
	proc, _ := spec["process"].(map[string]any)
	if proc == nil {
		proc = map[string]any{}
		spec["process"] = proc
	}
	proc["terminal"] = false
	argv := make([]any, len(args))
	for i, a := range args {
		argv[i] = a
	}
	proc["args"] = argv
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	return spec
}

// ProcessSpec returns the bundle's process (as `runc exec --process` and
// conmon's --exec-process-spec take it) with args replaced.
func ProcessSpec(bundle string, args ...string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read config.json: %w", err)
	}
	var spec struct {
		Process map[string]any `json:"process"`
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	if spec.Process == nil {
		return nil, errors.New("config.json has no process")
	}
	spec.Process["args"] = args
	spec.Process["terminal"] = false
	out, err := json.Marshal(spec.Process)
	if err != nil {
		return nil, fmt.Errorf("encode process: %w", err)
	}
	return out, nil
}

// CopyExecutable copies src to a new file dst with mode 0755.
func CopyExecutable(src, dst string) error { return copyFile(src, dst) }

// copyFile copies src to a new file dst with mode 0755.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return nil
}

// Annotate adds annotations to the bundle's config.json (as CRI-O copies a
// pod's annotations into its containers' specs).
func Annotate(bundle string, ann map[string]string) error {
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config.json: %w", err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("parse config.json: %w", err)
	}
	all, _ := spec["annotations"].(map[string]any)
	if all == nil {
		all = map[string]any{}
	}
	for k, v := range ann {
		all[k] = v
	}
	spec["annotations"] = all
	if raw, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		return fmt.Errorf("encode config.json: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		return fmt.Errorf("write config.json: %w", err)
	}
	return nil
}
