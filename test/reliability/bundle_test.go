package reliability

// Busybox bundles, containers created through the client, and CRI log
// parsing. The bundles come from github.com/gomon-dev/gomon/test/harness.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
)

// makeBundle writes a bundle in a new temp dir: runc's default spec whose
// root is the shared busybox rootfs (writable), running args without a
// terminal. edit (optional) changes the spec.
func makeBundle(t *testing.T, edit func(map[string]any), args ...string) string {
	t.Helper()
	return harness.Bundle(t, t.TempDir(), sharedRootfs(t), edit, args...)
}

var (
	bundleOnce sync.Once
	// rootfsDir and specRaw are the shared busybox rootfs and runc's spec
	// template, set by the first sharedRootfs (or makeBundle), for tests
	// that write their bundles by hand.
	rootfsDir string
	specRaw   []byte
)

// sharedRootfs is the busybox rootfs every bundle points at, built once
// per test binary.
func sharedRootfs(t *testing.T) string {
	t.Helper()
	dir, spec := harness.SharedRootfs(t), harness.SpecTemplate(t)
	bundleOnce.Do(func() { rootfsDir, specRaw = dir, spec })
	return dir
}

// copyFile copies src to a new file dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error { return harness.CopyFile(src, dst, perm) }

// withoutPIDNamespace lets the container's process die of SIGTERM.
func withoutPIDNamespace(spec map[string]any) { harness.WithoutPIDNamespace(spec) }

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
	harness.RuncIn(t, s.runtimeRoot, args...)
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
func waitForFile(path string, d time.Duration) (string, error) { return harness.WaitForFile(path, d) }

// criRecord is one parsed CRI log line.
type criRecord struct {
	stream, tag, content string
}

// readCRILog parses every line of a CRI log file and fails on a malformed
// or unterminated one; see harness.ReadCRILog.
func readCRILog(path string) ([]criRecord, error) {
	recs, err := harness.ReadCRILog(path)
	out := make([]criRecord, len(recs))
	for i, r := range recs {
		out[i] = criRecord{stream: r.Stream, tag: r.Tag, content: r.Content}
	}
	return out, err
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
