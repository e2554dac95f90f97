package monitor

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// TestOOMFileBeforeExitFile runs `tail /dev/zero` (which buffers a line
// that never ends) under an 8 MiB limit and watches the directory with
// inotify, so the order in which the OOM and exit files appear is observed
// rather than inferred from timestamps.
func TestOOMFileBeforeExitFile(t *testing.T) {
	m := newTestMonitor(t)
	dir := t.TempDir()
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"tail", "/dev/zero"}, MemoryLimit: 8 << 20,
	})
	req := CreateRequest{
		ID: "oom", BundlePath: bundle, Cgroup: Cgroupfs,
		ExitPaths:    []string{filepath.Join(dir, "exit")},
		OOMExitPaths: []string{filepath.Join(dir, "oom")},
	}
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(ifd) }()
	if _, err := unix.InotifyAddWatch(ifd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid, err := m.CreateContainer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	limit := memoryLimitOf(int(pid))
	if err := m.Start(ctx, "oom"); err != nil {
		t.Fatal(err)
	}
	st, err := m.Wait(ctx, "oom")
	if err != nil {
		t.Fatal(err)
	}
	if !st.OOMKilled || st.Code != 137 || st.OOMKills != (OOMKills{Init: 1}) {
		t.Fatalf("status %+v, want OOM kill with 137; the host did not enforce the limit: "+
			"container memory cgroup limit was %q (want 8388608), swap on host: %q", st, limit, swaps())
	}
	var order []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(ifd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			name = bytes.TrimRight(name, "\x00")
			if s := string(name); s == "oom" || s == "exit" {
				order = append(order, s)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	if strings.Join(order, ",") != "oom,exit" {
		t.Fatalf("files appeared in order %v, want oom then exit", order)
	}
	if got := readExit(t, req.ExitPaths[0]); got != "137" {
		t.Errorf("exit file = %q", got)
	}
	if b, err := os.ReadFile(req.OOMExitPaths[0]); err != nil || len(b) != 0 {
		t.Errorf("oom file: %q, %v; want empty", b, err)
	}
}

// memoryLimitOf reads the v1 memory limit of pid's cgroup, for the
// failure message.
func memoryLimitOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && strings.Contains(parts[1], "memory") {
			l, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"))
			if err != nil {
				return err.Error()
			}
			return strings.TrimSpace(string(l))
		}
	}
	return "no v1 memory cgroup in " + string(b)
}

func swaps() string {
	b, _ := os.ReadFile("/proc/swaps")
	return strings.TrimSpace(string(b))
}
