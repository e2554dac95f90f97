package oom

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests in this file use the host's real cgroups and need root.

const testLimit = 8 << 20 // bytes; the alloc helper touches 64 MiB

// v1MemoryMount returns the host's cgroup v1 memory mount point, or skips.
func v1MemoryMount(t *testing.T) string {
	t.Helper()
	m, ok := hostMount(t, procCgroup{version: v1, path: "/"})
	if !ok {
		t.Skip("SKIPPED: no cgroup v1 memory hierarchy on this host (pure cgroup v2); the v2 tests cover it")
	}
	return m
}

// hostMount returns the mount point of cg's hierarchy on this host.
func hostMount(t *testing.T, cg procCgroup) (string, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	m, err := findMount(f, cg)
	if err != nil || m.root != "/" {
		return "", false
	}
	return m.mountPoint, true
}

// newCgroup creates a cgroup directory named after the test under parent
// and removes it at cleanup (tolerating an earlier removal by the test).
func newCgroup(t *testing.T, parent string) string {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "gomon-" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + hex.EncodeToString(rnd[:])
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

func writeCgroupFile(t *testing.T, dir, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		t.Fatalf("write %s: %v", file, err)
	}
}

// newV1LimitedCgroup creates a v1 memory cgroup limited to testLimit,
// swap included when the kernel accounts it.
func newV1LimitedCgroup(t *testing.T) string {
	t.Helper()
	dir := newCgroup(t, v1MemoryMount(t))
	writeCgroupFile(t, dir, "memory.limit_in_bytes", strconv.Itoa(testLimit))
	if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
		writeCgroupFile(t, dir, "memory.memsw.limit_in_bytes", strconv.Itoa(testLimit))
	}
	return dir
}

// startIn starts a paused helper and moves it into the cgroup dir.
func startIn(t *testing.T, dir, mode string) *helper {
	t.Helper()
	h := startHelper(t, mode)
	writeCgroupFile(t, dir, "cgroup.procs", strconv.Itoa(h.pid()))
	return h
}

func killedBy(st *os.ProcessState) syscall.Signal {
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

func TestWatchV1(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		mode string
		// afterExit runs between reaping the helper and Stop.
		afterExit func(t *testing.T, w *Watcher, dir string)
		want      bool
	}{
		{name: "oom killed", mode: modeAlloc, want: true},
		{name: "exits normally", mode: modeExit, want: false},
		{
			// The kernel signals the eventfd when the cgroup is removed
			// (asynchronously, once the cgroup goes offline); conmon-rs
			// takes any wake for an OOM. Wait until the watcher has
			// handled that wake and quit.
			name: "exits normally, cgroup removed before Stop",
			mode: modeExit,
			afterExit: func(t *testing.T, w *Watcher, dir string) {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
				select {
				case <-w.done:
				case <-time.After(30 * time.Second):
					t.Fatal("watcher did not see the cgroup removal within 30s")
				}
			},
			want: false,
		},
		{
			name: "oom killed, cgroup removed after the kill was seen",
			mode: modeAlloc,
			afterExit: func(t *testing.T, w *Watcher, dir string) {
				waitOOMed(t, w)
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			},
			want: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newV1LimitedCgroup(t)
			fds := countFDs(t)
			h := startIn(t, dir, tt.mode)
			logger, logs := newTestLogger()

			w, err := Watch(h.pid(), logger)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if w.dir != dir {
				t.Fatalf("watching %q, want %q", w.dir, dir)
			}
			st := h.release(t)
			// Check the helper did what the case assumes, so a false
			// verdict cannot pass for the wrong reason.
			if sig := killedBy(st); tt.want && sig != syscall.SIGKILL {
				t.Fatalf("helper was not OOM killed: %v", st)
			} else if !tt.want && !st.Success() {
				t.Fatalf("helper failed: %v", st)
			}
			if tt.afterExit != nil {
				tt.afterExit(t, w, dir)
			}
			if got := stopAndCheck(t, w); got != kills(tt.want) {
				t.Errorf("Stop = %d kills, want %d; log:\n%s", got, kills(tt.want), logs)
			}
			if after := countFDs(t); after != fds {
				t.Errorf("open descriptors: %d before Watch, %d after Stop", fds, after)
			}
		})
	}
}

// kills is the count a case expects of one helper that is OOM killed or not.
func kills(oomKilled bool) uint64 {
	if oomKilled {
		return 1
	}
	return 0
}

// TestWatchV1CountsEveryKill: the watcher keeps counting after the first
// kill. Two helpers of the watched cgroup are OOM killed one after the
// other while the watched process (a third, idle one) lives on; each kill
// is seen while the cgroup exists, and Stop reports both.
func TestWatchV1CountsEveryKill(t *testing.T) {
	requireRoot(t)
	dir := newV1LimitedCgroup(t)
	idle := startIn(t, dir, modeExit)
	w, err := Watch(idle.pid(), nil)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	for i := uint64(1); i <= 2; i++ {
		h := startIn(t, dir, modeAlloc)
		if sig := killedBy(h.release(t)); sig != syscall.SIGKILL {
			t.Fatalf("helper %d was not OOM killed", i)
		}
		waitKills(t, w, i)
		if n, ok := w.Count(); !ok || n != i {
			t.Fatalf("Count = %d, %v after kill %d", n, ok, i)
		}
	}
	if st := idle.release(t); !st.Success() {
		t.Fatalf("watched process failed: %v", st)
	}
	if got := stopAndCheck(t, w); got != 2 {
		t.Errorf("Stop = %d kills, want 2", got)
	}
}

// TestWatchV2 needs a unified hierarchy with the memory controller. On
// hybrid hosts memory is bound to v1 and the test skips; TestWatchFakeV2
// covers the v2 code path with a fake tree.
func TestWatchV2(t *testing.T) {
	requireRoot(t)
	mnt, ok := hostMount(t, procCgroup{version: v2, path: "/"})
	if !ok {
		t.Skip("SKIPPED: no cgroup2 mount")
	}
	controllers, err := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(controllers)), "memory") {
		t.Skipf("SKIPPED: memory controller not available in the unified hierarchy at %s (bound to cgroup v1 on this hybrid host); TestWatchFakeV2 covers v2", mnt)
	}
	// Delegate memory to children of the root (a no-op if already done).
	writeCgroupFile(t, mnt, "cgroup.subtree_control", "+memory")

	tests := []struct {
		name string
		mode string
		want bool
	}{
		{name: "oom killed", mode: modeAlloc, want: true},
		{name: "exits normally", mode: modeExit, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newCgroup(t, mnt)
			writeCgroupFile(t, dir, "memory.max", strconv.Itoa(testLimit))
			if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
				writeCgroupFile(t, dir, "memory.swap.max", "0")
			}
			h := startIn(t, dir, tt.mode)
			w, err := Watch(h.pid(), nil)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			st := h.release(t)
			if sig := killedBy(st); tt.want && sig != syscall.SIGKILL {
				t.Fatalf("helper was not OOM killed: %v", st)
			}
			if got := stopAndCheck(t, w); got != kills(tt.want) {
				t.Errorf("Stop = %d kills, want %d", got, kills(tt.want))
			}
		})
	}
}

// TestWatchHostEdgeCases: the root cgroup and a reaped PID.
func TestWatchHostEdgeCases(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		pid  func(t *testing.T) int
	}{
		{
			name: "process in the root memory cgroup",
			pid: func(t *testing.T) int {
				mnt := v1MemoryMount(t)
				h := startHelper(t, modeExit)
				writeCgroupFile(t, mnt, "cgroup.procs", strconv.Itoa(h.pid()))
				t.Cleanup(func() { h.release(t) })
				return h.pid()
			},
		},
		{
			name: "reaped process",
			pid: func(t *testing.T) int {
				cmd := exec.Command("/bin/true")
				if err := cmd.Run(); err != nil {
					t.Skipf("SKIPPED: cannot run /bin/true: %v", err)
				}
				return cmd.Process.Pid
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid := tt.pid(t)
			w, err := Watch(pid, nil)
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if w.notify != nil {
				t.Error("watcher armed a notification for nothing")
			}
			if got := stopAndCheck(t, w); got != 0 {
				t.Errorf("Stop = %d kills, want 0", got)
			}
		})
	}
}

// TestStopCancelledV1: Stop with a done context on an armed v1 watcher
// returns, and a later Stop keeps the verdict and frees everything.
func TestStopCancelledV1(t *testing.T) {
	requireRoot(t)
	dir := newV1LimitedCgroup(t)
	h := startIn(t, dir, modeExit)
	w, err := Watch(h.pid(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if w.Stop(ctx) != 0 {
		t.Error("Stop counted a kill before anything ran")
	}
	h.release(t)
	if stopAndCheck(t, w) != 0 {
		t.Error("second Stop changed the verdict")
	}
}
