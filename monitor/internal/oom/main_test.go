package oom

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// helperEnv selects a helper mode of the test binary (see TestMain).
const helperEnv = "GOMON_OOM_TEST_HELPER"

// Helper modes. Both wait for one byte on stdin first, so the test can move
// the helper into a cgroup before it allocates anything that matters.
const (
	modeAlloc = "alloc" // test binary touching 64 MiB; expected to be OOM killed
	// modeExit is busybox copying with a 1 MiB buffer, then exiting 0. Not
	// the test binary: under -race its shadow memory alone can exceed 8 MiB.
	modeExit = "exit"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// sink keeps the helper's allocations reachable.
var sink [][]byte

func runHelper(mode string) int {
	var b [1]byte
	if _, err := io.ReadFull(os.Stdin, b[:]); err != nil {
		fmt.Fprintln(os.Stderr, "helper: wait for go:", err)
		return 2
	}
	if mode != modeAlloc {
		fmt.Fprintln(os.Stderr, "helper: unknown mode", mode)
		return 2
	}
	for allocated := 0; allocated < 64<<20; allocated += 1 << 20 {
		chunk := make([]byte, 1<<20)
		for i := 0; i < len(chunk); i += 4096 {
			chunk[i] = 1
		}
		sink = append(sink, chunk)
	}
	return 0
}

const busybox = "/bin/busybox"

// requireRoot skips tests that need root, or fails them when
// GOMON_REQUIRE_ROOT=1 so CI cannot pass by skipping.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("GOMON_REQUIRE_ROOT") == "1" {
		t.Fatal("test needs root and GOMON_REQUIRE_ROOT=1")
	}
	t.Skip("SKIPPED: test needs root to create cgroups (set GOMON_REQUIRE_ROOT=1 to make this a failure)")
}

// helper is a started, paused helper process.
type helper struct {
	cmd   *exec.Cmd
	start io.WriteCloser // one byte lets the helper run
}

// startHelper starts the test binary in the given mode, paused until release.
func startHelper(t *testing.T, mode string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GOGC=off")
	if mode == modeExit {
		if _, err := os.Stat(busybox); err != nil {
			t.Skipf("SKIPPED: helper needs %s: %v", busybox, err)
		}
		cmd = exec.Command(busybox, "sh", "-c", "read x; dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, start: in}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return h
}

func (h *helper) pid() int { return h.cmd.Process.Pid }

// release lets the helper allocate and waits for it to end.
func (h *helper) release(t *testing.T) *os.ProcessState {
	t.Helper()
	if _, err := h.start.Write([]byte{1}); err != nil {
		t.Fatalf("release helper: %v", err)
	}
	_ = h.start.Close()
	if err := h.cmd.Wait(); err != nil {
		if exitErr := (*exec.ExitError)(nil); !errors.As(err, &exitErr) {
			t.Fatalf("wait helper: %v", err)
		}
	}
	return h.cmd.ProcessState
}

// logBuffer is a concurrency-safe buffer for a debug-level text logger.
type logBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// waitOOMed waits for w.OOMed; the timeout only keeps a broken build from
// hanging and is far above anything the kernel needs.
func waitOOMed(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case <-w.OOMed():
	case <-time.After(30 * time.Second):
		t.Fatal("OOMed not closed after 30s")
	}
}

// waitKills waits until w has seen n kills; the timeout only keeps a
// broken build from hanging.
func waitKills(t *testing.T, w *Watcher, n uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.kills.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("watcher saw %d kills after 30s, want %d", w.kills.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopAndCheck stops w and checks that its goroutine is gone and OOMed
// agrees with the count of kills.
func stopAndCheck(t *testing.T, w *Watcher) uint64 {
	t.Helper()
	got := w.Stop(context.Background())
	select {
	case <-w.done:
	default:
		t.Error("watcher goroutine still running after Stop")
	}
	select {
	case <-w.OOMed():
		if got == 0 {
			t.Error("OOMed closed but Stop reported no kill")
		}
	default:
		if got != 0 {
			t.Errorf("Stop reported %d kills but OOMed is open", got)
		}
	}
	if again := w.Stop(context.Background()); again != got {
		t.Errorf("second Stop = %v, first %v", again, got)
	}
	return got
}

// countFDs returns the number of open descriptors of this process.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
