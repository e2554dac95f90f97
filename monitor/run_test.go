package monitor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

func TestRun(t *testing.T) {
	runc := monitortest.Runc(t)
	tests := []struct {
		name           string
		opts           monitortest.BundleOptions
		terminal       bool
		code           int
		stdout, stderr string
	}{
		{"pipes", monitortest.BundleOptions{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}}, false, 4, "out\n", "err\n"},
		{"terminal", monitortest.BundleOptions{Args: []string{"sh", "-c", "echo out; echo err >&2"}, Terminal: true}, true, 0, "out\r\nerr\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			logPath := filepath.Join(t.TempDir(), "run.log")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code, err := Run(ctx, RunOptions{
				Runtime: runc, Bundle: monitortest.NewBundle(t, tt.opts), Terminal: tt.terminal,
				LogPath: logPath, Stdout: &stdout, Stderr: &stderr, Logger: testLogger(),
			})
			if err != nil || code != tt.code {
				t.Fatalf("Run = %d, %v; want %d", code, err, tt.code)
			}
			if stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("stdout %q stderr %q; want %q %q", stdout.String(), stderr.String(), tt.stdout, tt.stderr)
			}
			lo, le := parseLog(t, logPath)
			if string(lo) != tt.stdout || string(le) != tt.stderr {
				t.Errorf("log stdout %q stderr %q", lo, le)
			}
		})
	}
}

// TestNoFDLeak runs good and failing creates and checks the process holds
// no more fds afterwards.
func TestNoFDLeak(t *testing.T) {
	runc := monitortest.Runc(t)
	good := monitortest.Bundle(t, "echo", "hi")
	bad := monitortest.Bundle(t, "does-not-exist")
	round := func() {
		m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		p := newPaths(t)
		runToExit(t, m, p.request("fd-good", good))
		if _, err := m.CreateContainer(context.Background(), p.request("fd-bad", bad)); err == nil {
			t.Fatal("bad create succeeded")
		}
		tty := p.request("fd-tty", monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"true"}, Terminal: true}))
		tty.Terminal = true
		runToExit(t, m, tty)
		if err := m.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	round() // warm up: the runtime's poller and the like open fds once
	before := countFDs(t)
	round()
	if after := countFDs(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
