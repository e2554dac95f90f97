package monitor

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReaperEarlyExit covers the race a container PID is subject to: the
// process exits and is reaped before anyone subscribes to its PID.
func TestReaperEarlyExit(t *testing.T) {
	r, err := acquireReaper(testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer releaseReaper(r)

	// A grandchild: sh starts `exit 5` in the background and exits; the
	// orphan is re-parented to us (subreaper) and reaped unknown.
	devNull, _ := os.Open(os.DevNull)
	defer func() { _ = devNull.Close() }()
	pidDir := t.TempDir()
	pidFile := filepath.Join(pidDir, "pidfile")
	cmd := exec.Command("/bin/sh", "-c", `sh -c 'sleep 0.2; exit 5' & echo $! > "$0"`, pidFile)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	c, err := r.start(cmd, false)
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-c.exit; ev.code() != 0 {
		t.Fatalf("sh exit %d", ev.code())
	}
	pid, err := readPIDFile(pidDir)
	if err != nil {
		t.Fatal(err)
	}
	// Let the grandchild exit and be reaped before we subscribe.
	if !waitFor(5*time.Second, func() bool { return unix.Kill(pid, 0) != nil }) {
		t.Fatal("grandchild did not exit")
	}
	ch := r.subscribePID(pid, time.Now(), false)
	select {
	case ev := <-ch:
		if ev.code() != 5 {
			t.Fatalf("early exit code %d, want 5", ev.code())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("early exit lost")
	}

	// A stale early exit (reaped before the new process was proven alive)
	// is not handed out.
	r.mu.Lock()
	r.early[999999] = exitEvent{pid: 999999, at: time.Now().Add(-time.Second)}
	r.mu.Unlock()
	ch = r.subscribePID(999999, time.Now(), true)
	select {
	case ev := <-ch:
		t.Fatalf("stale exit delivered: %+v", ev)
	default:
	}
	r.unsubscribe(999999)

	// A vanished PID with no record reports ExitUnknown.
	if ev := <-r.subscribePID(999998, time.Now(), false); ev.code() != ExitUnknown {
		t.Fatalf("vanished pid code %d", ev.code())
	}
}

func TestReaperEarlyBufferBounded(t *testing.T) {
	r := &reaper{log: testLogger(), subs: map[int]chan exitEvent{}, early: map[int]exitEvent{}}
	now := time.Now()
	for pid := 1; pid <= earlyExitMax+10; pid++ {
		dispatchForTest(r, exitEvent{pid: pid, at: now})
	}
	if len(r.early) != earlyExitMax {
		t.Fatalf("early buffer holds %d, want %d", len(r.early), earlyExitMax)
	}
	if _, ok := r.early[1]; ok {
		t.Error("oldest entry not evicted")
	}
	dispatchForTest(r, exitEvent{pid: 1 << 20, at: now.Add(earlyExitTTL + time.Second)})
	if len(r.early) != 1 || !slices.Equal(r.earlyOrder, []int{1 << 20}) {
		t.Errorf("expired entries kept: %d", len(r.early))
	}
}

// dispatchForTest dispatches ev as the reap loop does, under r.mu.
func dispatchForTest(r *reaper, ev exitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dispatchLocked(ev)
}
