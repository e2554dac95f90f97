package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a child process (a gomon daemon, orphaned to us because we
// are its subreaper) and the goroutine that reaps it.
type Process struct {
	PID int

	exited chan struct{} // closed once reap has returned; then status and err are valid
	status unix.WaitStatus
	err    error
}

// Watch starts reaping pid. If pid is not our child, the reaper returns
// at once with ECHILD and Exited is closed without a status.
func Watch(pid int) *Process {
	p := &Process{PID: pid, exited: make(chan struct{})}
	go p.reap()
	return p
}

func (p *Process) reap() {
	defer close(p.exited)
	for {
		_, err := unix.Wait4(p.PID, &p.status, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		p.err = err
		return
	}
}

// Exited is closed once the process has been reaped (or found not to be
// our child).
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Status is the wait status and the wait error; valid after Exited.
func (p *Process) Status() (unix.WaitStatus, error) {
	<-p.exited
	return p.status, p.err
}

// Gone says why the process is no longer running, or "" while it runs.
func (p *Process) Gone() string {
	select {
	case <-p.exited:
	default:
		return ""
	}
	if p.err != nil {
		return fmt.Sprintf("not our child (%v)", p.err)
	}
	return DescribeStatus(p.status)
}

// awaitOrKill waits up to HangGuard for the process to end, then fails
// the test and SIGKILLs it.
func (p *Process) awaitOrKill(t testing.TB, after string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(HangGuard):
		t.Errorf("gomon pid %d still running after %s; sending SIGKILL", p.PID, after)
		_ = unix.Kill(p.PID, unix.SIGKILL) // our own daemon; the reaper confirms below
		<-p.exited
	}
}

// Daemon is one gomon daemon started through a conmon-rs client: its
// process, its run dir and the client's Shutdown.
type Daemon struct {
	*Process
	RunDir string

	shutdown func() error
	stopOnce sync.Once
}

// Adopt takes over the daemon with pid that serves runDir: reaps it, and
// stops it at the end of the test with Stop. shutdown is the client's
// Shutdown (SIGINT, as CRI-O sends).
func Adopt(t testing.TB, pid int, runDir string, shutdown func() error) *Daemon {
	t.Helper()
	// Never hand 0, 1 or our own PID to Shutdown: kill(0, SIGINT) would
	// hit our own process group.
	if pid <= 1 || pid == os.Getpid() {
		t.Fatalf("client.PID() = %d, want the daemon's PID", pid)
	}
	d := &Daemon{Process: Watch(pid), RunDir: runDir, shutdown: shutdown}
	t.Cleanup(func() { d.Stop(t) })
	return d
}

// Stop shuts the daemon down through the client and checks that the
// process is gone, exited 0 and removed conmon.sock. It is idempotent.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	d.stopOnce.Do(func() {
		if err := d.shutdown(); err != nil {
			t.Errorf("Shutdown of gomon pid %d: %v", d.PID, err)
		}
		d.awaitOrKill(t, "Shutdown")
		switch {
		case d.err != nil:
			t.Logf("gomon pid %d was not our child (%v); relying on Shutdown's own check", d.PID, d.err)
		case !d.status.Exited() || d.status.ExitStatus() != 0:
			t.Errorf("gomon pid %d after SIGINT: wait status %s, want exit status 0", d.PID, DescribeStatus(d.status))
		}
		if ProcessExists(d.PID) {
			t.Errorf("gomon pid %d still exists after Shutdown", d.PID)
		}
		sock := filepath.Join(d.RunDir, "conmon.sock")
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still present after Shutdown (lstat err: %v)", sock, err)
		}
	})
}

// StopWith shuts down a watched process with shutdown (unless it is gone
// already), waits for it and checks that it exited 0. Unlike Daemon.Stop it
// does not look at the run dir.
func (p *Process) StopWith(t testing.TB, shutdown func() error) {
	t.Helper()
	if p.Gone() == "" {
		if err := shutdown(); err != nil {
			t.Errorf("Shutdown of gomon pid %d: %v", p.PID, err)
		}
	}
	p.awaitOrKill(t, "Shutdown")
	if p.err == nil && (!p.status.Exited() || p.status.ExitStatus() != 0) {
		t.Errorf("gomon pid %d ended with wait status %s, want exit status 0 after SIGINT", p.PID, DescribeStatus(p.status))
	}
}

// DescribeStatus renders a wait status for error messages.
func DescribeStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exited %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by %v (core dumped: %v)", ws.Signal(), ws.CoreDump())
	default:
		return fmt.Sprintf("raw %#x", uint32(ws))
	}
}
