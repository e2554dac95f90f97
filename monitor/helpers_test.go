package monitor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger logs to stderr with GOMON_TEST_LOG=1, else discards. It is
// not bound to a *testing.T because the reaper is shared across tests.
func testLogger() *slog.Logger { return monitortest.Logger() }

// newTestMonitor returns a Monitor on real runc with a fresh runtime root;
// it is shut down (and must shut down cleanly) at the end of the test.
func newTestMonitor(t *testing.T) *Monitor {
	t.Helper()
	return newTestMonitorWith(t, Config{})
}

// newTestMonitorWith is newTestMonitor with cfg's other settings (its
// Runtime, RuntimeRoot and Logger are the test's).
func newTestMonitorWith(t *testing.T, cfg Config) *Monitor {
	t.Helper()
	cfg.Runtime, cfg.RuntimeRoot, cfg.Logger = monitortest.Runc(t), t.TempDir(), testLogger()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return m
}

// paths are the files of one test container.
type paths struct {
	dir, log, exit1, exit2, oom string
}

func newPaths(t *testing.T) paths {
	d := t.TempDir()
	return paths{
		dir: d, log: filepath.Join(d, "ctr.log"),
		exit1: filepath.Join(d, "exit"), exit2: filepath.Join(d, "exits-ctr"),
		oom: filepath.Join(d, "oom"),
	}
}

// request is a CRI-O-like create request.
func (p paths) request(id, bundle string) CreateRequest {
	return CreateRequest{
		ID:           id,
		BundlePath:   bundle,
		ExitPaths:    []string{p.exit1, p.exit2},
		OOMExitPaths: []string{p.oom},
		LogDrivers:   []LogDriver{{Type: LogCRI, Path: p.log}},
		Cgroup:       Cgroupfs,
	}
}

// runToExit creates, starts and waits for a container.
func runToExit(t *testing.T, m *Monitor, req CreateRequest) ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid, err := m.CreateContainer(ctx, req)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if pid == 0 {
		t.Fatal("create returned pid 0")
	}
	if err := m.Start(ctx, req.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	st, err := m.Wait(ctx, req.ID)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := m.Delete(ctx, req.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	return st
}

// readExit returns the content of an exit file.
func readExit(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read exit file: %v", err)
	}
	return string(b)
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-runtime")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// oneLine asserts s is exactly one CRI record with the given stream, tag
// and content.
func oneLine(t *testing.T, log, stream, tag, content string) {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("log has %d records, want 1: %q", len(lines), b)
	}
	f := strings.SplitN(lines[0], " ", 4)
	if len(f) != 4 || f[1] != stream || f[2] != tag || f[3] != content {
		t.Fatalf("record = %q, want <ts> %s %s %q", lines[0], stream, tag, content)
	}
	if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		t.Fatalf("timestamp %q: %v", f[0], err)
	}
}

// The helpers cmd/gomon/internal/run's tests share with these.
var (
	parseLog = monitortest.ParseLog
	waitFor  = monitortest.WaitFor
)

type syncBuffer = monitortest.SyncBuffer
