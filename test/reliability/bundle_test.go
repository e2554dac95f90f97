package reliability

// Busybox bundles, containers created through the client, and CRI log
// parsing. Adapted from test/interop/v101.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// sharedRootfs builds, once per test binary, a busybox-static rootfs (the
// binary plus one symlink per applet) that every bundle points at. It is
// removed by removeSharedRootfs at the end of TestMain's run.
func sharedRootfs(t *testing.T) string {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		skipOrFail(t, "busybox not found in $PATH")
	}
	rootfsOnce.Do(func() { rootfsDir, rootfsErr = buildRootfs(busybox) })
	if rootfsErr != nil {
		t.Fatalf("build busybox rootfs: %v", rootfsErr)
	}
	return rootfsDir
}

func buildRootfs(busybox string) (string, error) {
	dir, err := os.MkdirTemp("", "gomon-reliability-rootfs-")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return "", err
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return "", err
	}
	list, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		link := filepath.Join(dir, applet)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", err
		}
		if err := os.Symlink("/bin/busybox", link); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

var (
	specOnce sync.Once
	specRaw  []byte
	specErr  error
)

// makeBundle writes a bundle in a new temp dir: a config.json from `runc
// spec` whose root is the shared busybox rootfs (writable), running args
// without a terminal. edit (optional) changes the spec.
func makeBundle(t *testing.T, edit func(map[string]any), args ...string) string {
	t.Helper()
	rootfs := sharedRootfs(t)
	runc := runcPath(t)
	specOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gomon-reliability-spec-")
		if err != nil {
			specErr = err
			return
		}
		defer func() { _ = os.RemoveAll(dir) }()
		if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
			specErr = fmt.Errorf("runc spec: %w: %s", err, out)
			return
		}
		specRaw, specErr = os.ReadFile(filepath.Join(dir, "config.json"))
	})
	if specErr != nil {
		t.Fatal(specErr)
	}
	var spec map[string]any
	if err := json.Unmarshal(specRaw, &spec); err != nil {
		t.Fatal(err)
	}
	process := spec["process"].(map[string]any)
	root := spec["root"].(map[string]any)
	process["terminal"] = false
	process["args"] = args
	root["path"] = rootfs
	root["readonly"] = false
	if edit != nil {
		edit(spec)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// withoutPIDNamespace lets the container's process die of SIGTERM.
func withoutPIDNamespace(spec map[string]any) {
	linux := spec["linux"].(map[string]any)
	var keep []any
	for _, ns := range linux["namespaces"].([]any) {
		if ns.(map[string]any)["type"] != "pid" {
			keep = append(keep, ns)
		}
	}
	linux["namespaces"] = keep
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

var ctrSeq atomic.Int64

// ctr is one container created through the client.
type ctr struct {
	id, bundle, dir string
	logPath         string
	exitPath        string
	pid             uint32
}

// newCtr prepares (does not create) a container running args.
func newCtr(t *testing.T, edit func(map[string]any), args ...string) *ctr {
	t.Helper()
	c := &ctr{id: fmt.Sprintf("rel-%d-%d", os.Getpid(), ctrSeq.Add(1)), dir: t.TempDir()}
	c.bundle = makeBundle(t, edit, args...)
	c.logPath = filepath.Join(c.dir, "ctr.log")
	c.exitPath = filepath.Join(c.dir, "exit")
	return c
}

// request is the CreateContainerConfig CRI-O would send for c.
func (c *ctr) request() *client.CreateContainerConfig {
	return &client.CreateContainerConfig{
		ID:         c.id,
		BundlePath: c.bundle,
		ExitPaths:  []string{c.exitPath},
		LogDrivers: []client.ContainerLogDriver{{
			Type: client.LogDriverTypeContainerRuntimeInterface,
			Path: c.logPath,
		}},
	}
}

// createCtr creates c through s (mod, optional, changes the request) and
// registers a `runc delete --force` for the end of the test.
func createCtr(t *testing.T, s *gomonServer, c *ctr, mod func(*client.CreateContainerConfig)) error {
	t.Helper()
	req := c.request()
	if mod != nil {
		mod(req)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	runc := runcPath(t)
	t.Cleanup(func() { _ = exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", req.ID).Run() })
	resp, err := s.client.CreateContainer(ctx, req)
	if err != nil {
		return err
	}
	c.pid = resp.PID
	return nil
}

// running creates and starts a container running args.
func running(t *testing.T, s *gomonServer, edit func(map[string]any), args ...string) *ctr {
	t.Helper()
	c := newCtr(t, edit, args...)
	if err := createCtr(t, s, c, nil); err != nil {
		t.Fatalf("CreateContainer %v: %v", args, err)
	}
	c.runc(t, s, "start", c.id)
	return c
}

// runc runs the real runc against s's runtime root.
func (c *ctr) runc(t *testing.T, s *gomonServer, args ...string) {
	t.Helper()
	full := append([]string{"--root", s.runtimeRoot}, args...)
	if out, err := exec.Command(runcPath(t), full...).CombinedOutput(); err != nil {
		t.Fatalf("runc %v: %v: %s", args, err, out)
	}
}

// exitCode waits for the exit file and parses it.
func (c *ctr) exitCode(t *testing.T) int {
	t.Helper()
	got, err := waitForFile(c.exitPath, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	code, err := strconv.Atoi(got)
	if err != nil {
		t.Fatalf("exit file holds %q, want a bare decimal: %v", got, err)
	}
	return code
}

// waitForFile polls until path exists and is non-empty, up to d.
func waitForFile(path string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		data, err := os.ReadFile(path)
		if err == nil && len(data) > 0 {
			return string(data), nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear within %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// criLine matches one CRI log record: <RFC3339Nano> <stream> <P|F> <content>.
var criLine = regexp.MustCompile(`^(\S+) (stdout|stderr) (P|F) (.*)$`)

// criRecord is one parsed CRI log line.
type criRecord struct {
	stream, tag, content string
}

// readCRILog parses every line of a CRI log file and fails on a malformed
// or unterminated one.
func readCRILog(path string) ([]criRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	var out []criRecord
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			return out, fmt.Errorf("unterminated CRI log line %q", line)
		}
		m := criLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			return out, fmt.Errorf("malformed CRI log line %q", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			return out, fmt.Errorf("timestamp of line %q: %w", line, err)
		}
		out = append(out, criRecord{stream: m[2], tag: m[3], content: m[4]})
	}
	return out, nil
}

// logLines joins the records of a CRI log into the lines the container
// wrote (P records continue until an F record).
func logLines(t *testing.T, path string) []string {
	t.Helper()
	recs, err := readCRILog(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var lines []string
	var cur strings.Builder
	for _, r := range recs {
		cur.WriteString(r.content)
		if r.tag == "F" {
			lines = append(lines, cur.String())
			cur.Reset()
		}
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}
