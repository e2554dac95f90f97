package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// policyJSON accepts any image: the suite never pulls, it copies a local OCI layout.
const policyJSON = `{"default":[{"type":"insecureAcceptAnything"}]}`

// storageSpec is skopeo's containers-storage reference prefix for the suite's store.
func (s *suite) storageSpec() string {
	return fmt.Sprintf("containers-storage:[%s@%s+%s]", s.driver, filepath.Join(s.dir, "root"), filepath.Join(s.dir, "run"))
}

// containersEnv isolates containers/image and containers/storage from the host's /etc files.
func (s *suite) containersEnv() []string {
	return []string{
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(s.dir, "storage.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(s.dir, "registries.conf"),
		"REGISTRIES_CONFIG_PATH=" + filepath.Join(s.dir, "registries.conf"),
		"TMPDIR=" + filepath.Join(s.dir, "tmp"),
	}
}

// buildImage makes a busybox image without a registry: a new OCI layout with umoci, the host's
// static busybox and one symlink per applet, an entrypoint, then skopeo copies it into the
// containers-storage CRI-O will use.
func (s *suite) buildImage(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	files := map[string]string{
		"policy.json":     policyJSON,
		"registries.conf": "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n",
		"storage.conf": fmt.Sprintf("[storage]\ndriver = %q\ngraphroot = %q\nrunroot = %q\n",
			s.driver, filepath.Join(s.dir, "root"), filepath.Join(s.dir, "run")),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "tmp"), 0o700); err != nil {
		return fmt.Errorf("make tmp dir: %w", err)
	}
	layout := filepath.Join(s.dir, "image", "oci")
	bundle := filepath.Join(s.dir, "image", "bundle")
	ref := layout + ":e2e"
	if err := os.MkdirAll(filepath.Dir(layout), 0o755); err != nil {
		return fmt.Errorf("make image dir: %w", err)
	}
	steps := [][]string{
		{"umoci", "init", "--layout", layout},
		{"umoci", "new", "--image", ref},
		{"umoci", "unpack", "--image", ref, bundle},
	}
	for _, st := range steps {
		if _, err := run(ctx, nil, st[0], st[1:]...); err != nil {
			return err
		}
	}
	if err := populateBusybox(ctx, filepath.Join(bundle, "rootfs")); err != nil {
		return err
	}
	steps = [][]string{
		{"umoci", "repack", "--image", ref, bundle},
		{"umoci", "config", "--image", ref, "--config.entrypoint", "/bin/sh",
			"--config.workingdir", "/", "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		{"skopeo", "--policy", filepath.Join(s.dir, "policy.json"), "copy", "--quiet",
			"oci:" + ref, s.storageSpec() + image},
	}
	for _, st := range steps {
		if _, err := run(ctx, s.containersEnv(), st[0], st[1:]...); err != nil {
			return err
		}
	}
	return os.RemoveAll(filepath.Join(s.dir, "image"))
}

// populateBusybox copies /bin/busybox into rootfs with a symlink per applet at its usual path.
func populateBusybox(ctx context.Context, rootfs string) error {
	b, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), b, 0o755); err != nil {
		return fmt.Errorf("copy busybox: %w", err)
	}
	list, err := run(ctx, nil, "/bin/busybox", "--list-full")
	if err != nil {
		return err
	}
	for _, applet := range strings.Fields(list) {
		if applet == "bin/busybox" {
			continue
		}
		p := filepath.Join(rootfs, applet)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("make applet dir: %w", err)
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link %s: %w", applet, err)
		}
	}
	// Minimal passwd/group so user lookups inside the container work.
	if err := os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return fmt.Errorf("write passwd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\n"), 0o644); err != nil {
		return fmt.Errorf("write group: %w", err)
	}
	return nil
}
