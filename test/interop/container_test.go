package interop

// CreateContainer through the real client with a busybox bundle. Built against both
// client generations (go.mod and go.v073.mod).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
)

// TestCreateContainerBusybox creates a container the way CRI-O does (CRI log
// driver, two exit paths, cgroupfs), starts it with runc itself and checks
// the log record and the exit files gomon writes.
func TestCreateContainerBusybox(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	runc := runcPath(t)

	cases := []struct {
		name       string
		args       []string
		wantStream string
		wantLine   string
		wantExit   string
	}{
		{name: "echo hello", args: []string{"/bin/echo", "hello"}, wantStream: "stdout", wantLine: "hello", wantExit: "0"},
		{name: "stderr and exit 3", args: []string{"/bin/sh", "-c", "echo oops >&2; exit 3"}, wantStream: "stderr", wantLine: "oops", wantExit: "3"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("gomon-interop-%d-%d", os.Getpid(), i)
			bundle := makeBusyboxBundle(t, runc, t.TempDir(), tc.args...)
			ctrDir := t.TempDir()
			logPath := filepath.Join(ctrDir, "ctr.log")
			exitPaths := []string{filepath.Join(ctrDir, "exits", id), filepath.Join(ctrDir, "exit")}
			if err := os.MkdirAll(filepath.Dir(exitPaths[0]), 0o755); err != nil {
				t.Fatalf("create exits dir: %v", err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			defer cancel()
			resp, err := s.client.CreateContainer(ctx, &client.CreateContainerConfig{
				ID:           id,
				BundlePath:   bundle,
				ExitPaths:    exitPaths,
				OOMExitPaths: []string{filepath.Join(bundle, "oom")},
				LogDrivers: []client.ContainerLogDriver{{
					Type: client.LogDriverTypeContainerRuntimeInterface,
					Path: logPath,
				}},
				// No per-request CgroupManager: CRI-O relies on the server-level
				// one (cgroupfs), which the client copies into the request.
			})
			t.Cleanup(func() {
				// Best effort: the container may never have been created.
				_ = exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", id).Run()
			})
			if err != nil {
				t.Fatalf("CreateContainer: %v", err)
			}
			if resp.PID == 0 {
				t.Errorf("CreateContainer returned PID 0")
			}
			if out, err := exec.Command(runc, "--root", s.runtimeRoot, "start", id).CombinedOutput(); err != nil {
				t.Fatalf("runc start %s: %v: %s", id, err, out)
			}

			for _, p := range exitPaths {
				got, err := waitForFile(p)
				if err != nil {
					t.Fatalf("exit file: %v", err)
				}
				if strings.TrimSpace(got) != tc.wantExit {
					t.Errorf("exit file %s = %q, want %q", p, got, tc.wantExit)
				}
			}

			// The exit file is written after the log is drained
			// (docs/architecture.md, "A container's exit code is never lost").
			records, err := readCRILog(logPath)
			if err != nil {
				t.Fatalf("read CRI log: %v", err)
			}
			found := false
			for _, r := range records {
				if r.stream == tc.wantStream && r.tag == "F" && r.content == tc.wantLine {
					found = true
				}
			}
			t.Logf("CRI log records: %q", records)
			if !found {
				t.Errorf("no record `<ts> %s F %s` in %s; records: %q", tc.wantStream, tc.wantLine, logPath, records)
			}
		})
	}
}

// criRecord is one parsed CRI log line.
type criRecord struct {
	ts                   time.Time
	stream, tag, content string
}

// String renders the record as the line it came from.
func (r criRecord) String() string {
	return fmt.Sprintf("%s %s %s %s", r.ts.Format(time.RFC3339Nano), r.stream, r.tag, r.content)
}

// readCRILog parses every line of a CRI log file; see harness.ReadCRILog.
func readCRILog(path string) ([]criRecord, error) {
	recs, err := harness.ReadCRILog(path)
	out := make([]criRecord, len(recs))
	for i, r := range recs {
		out[i] = criRecord{ts: r.Time, stream: r.Stream, tag: r.Tag, content: r.Content}
	}
	return out, err
}
