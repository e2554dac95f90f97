package monitor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// orphan runs script (with "$0" a pidfile path) through r, waits for it and
// returns the PID it wrote: a process re-parented to us, as a runtime
// leaves a container's init or an exec'd process.
func orphan(t *testing.T, r *reaper, script string, newGroup bool) (pid int, dir string) {
	t.Helper()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = devNull.Close() }()
	dir = t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", script, filepath.Join(dir, "pidfile"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	if newGroup {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	c, err := r.start(cmd, false)
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-c.exit; ev.code() != 0 {
		t.Fatalf("sh exit %d", ev.code())
	}
	_ = c.cmd.Process.Release()
	pid, err = readPIDFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return pid, dir
}

// TestProcKillGroup: killGroup kills the adopted process and the rest of
// its process group, and never signals our own group (the test process
// would die of it).
func TestProcKillGroup(t *testing.T) {
	r, err := acquireReaper(testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer releaseReaper(r)

	t.Run("own group", func(t *testing.T) {
		// sleep inherits our process group.
		pid, _ := orphan(t, r, `sleep 100 & echo $! > "$0"`, false)
		if pgid, err := unix.Getpgid(pid); err != nil || pgid != unix.Getpgrp() {
			t.Fatalf("orphan pgid %d (%v), want ours %d", pgid, err, unix.Getpgrp())
		}
		p := r.adopt(pid)
		defer p.close()
		if !p.alive() {
			t.Fatal("live process not adopted alive")
		}
		p.killGroup()
		if !p.await(5 * time.Second) {
			t.Fatal("killed process not reaped")
		}
	})

	t.Run("new group", func(t *testing.T) {
		// A subshell (the adopted process) with a child in its group.
		script := `(sleep 100 & echo $! > "$0.child"; wait) & echo $! > "$0"`
		pid, dir := orphan(t, r, script, true)
		var child int
		if !waitFor(5*time.Second, func() bool {
			b, rerr := os.ReadFile(filepath.Join(dir, "pidfile.child"))
			child, err = strconv.Atoi(strings.TrimSpace(string(b)))
			return rerr == nil && err == nil
		}) {
			t.Fatalf("no child pid: %v", err)
		}
		p := r.adopt(pid)
		defer p.close()
		p.killGroup()
		if !p.await(5 * time.Second) {
			t.Fatal("killed process not reaped")
		}
		if !waitFor(5*time.Second, func() bool { return unix.Kill(child, 0) != nil }) {
			_ = unix.Kill(child, unix.SIGKILL)
			t.Fatal("child in the process group survived killGroup")
		}
	})

	t.Run("closed", func(t *testing.T) {
		pid, _ := orphan(t, r, `sleep 100 & echo $! > "$0"`, false)
		p := r.adopt(pid)
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unix.Close(fd) }()
		p.close()
		if err := p.signal(unix.SIGKILL, true); err != nil {
			t.Fatalf("signal after close = %v", err)
		}
		// Still alive: nothing was sent. Then the await bound: the
		// subscription is dropped.
		if p.await(100 * time.Millisecond) {
			t.Fatal("exit of a process nobody killed")
		}
		r.mu.Lock()
		_, subscribed := r.subs[pid]
		r.mu.Unlock()
		if subscribed {
			t.Error("subscription kept after await timed out")
		}
		_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // the reaper reaps it as unknown
	})
}
