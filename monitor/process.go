package monitor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a process that the runtime started and left to us: a
// container's init or an exec'd process, re-parented to us (the
// subreaper) when the runtime exited, known by the PID in the runtime's
// pidfile. The one reaper reaps it; proc signals it through a pidfd, so a
// signal never reaches a process that reused its PID.
//
// A proc is used by one owner at a time (the container under its mu, an
// exec by its call).
type proc struct {
	pid   int
	pidfd int              // -1 once closed, or when it was gone at adopt
	exit  <-chan exitEvent // receives its exit once
	r     *reaper
}

// adopt subscribes to the exit of pid. It notes the time, then proves the
// process alive with a pidfd: an exit reaped after that moment is this
// process's (it may have exited, and been reaped, before we knew its PID),
// one reaped before belongs to an older process with the same PID.
func (r *reaper) adopt(pid int) *proc {
	openedAt := time.Now()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		fd = -1
	}
	return &proc{pid: pid, pidfd: fd, exit: r.subscribePID(pid, openedAt, err == nil), r: r}
}

// alive reports whether the process was alive when adopted (and its pidfd
// is still open).
func (p *proc) alive() bool { return p.pidfd >= 0 }

// signal sends sig to the process through its pidfd; with group, first to
// its process group, so the process's children get it too. Never to our
// own group (a process started without a new session or group inherits
// it), and only while the pidfd shows the process still exists, so the
// group ID read from its PID is its own. A process already gone is not an
// error.
func (p *proc) signal(sig unix.Signal, group bool) error {
	if p.pidfd < 0 {
		return nil
	}
	if group {
		pgid, err := unix.Getpgid(p.pid)
		if err == nil && pgid > 1 && pgid != unix.Getpgrp() && unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil {
			_ = unix.Kill(-pgid, sig) // best effort; the pidfd signal follows
		}
	}
	if err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// killGroup SIGKILLs the process and its group, best effort.
func (p *proc) killGroup() { _ = p.signal(unix.SIGKILL, true) }

// await waits up to d for the exit of a killed process (one in
// uninterruptible sleep dies late) and reports whether it came. On timeout
// it drops the subscription: a later exit is kept by the reaper for a
// while, then forgotten.
func (p *proc) await(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exit:
		return true
	case <-t.C:
		p.r.unsubscribe(p.pid)
		return false
	}
}

// close closes the pidfd; signal then does nothing. It is idempotent.
func (p *proc) close() {
	if p.pidfd >= 0 {
		_ = unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// readPIDPath reads a PID the runtime wrote to the pidfile p.
func readPIDPath(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("grandchild pid read error %s: %w", p, err)
	}
	// conmon-rs parses without trimming; runc writes no newline, but a
	// trailing newline from another runtime is harmless.
	pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 31)
	if err != nil || pid == 0 {
		if err == nil {
			err = errZeroPID
		}
		return 0, fmt.Errorf("grandchild pid parse error %s: %w", p, err)
	}
	if err := checkOwnChild(int(pid)); err != nil {
		return 0, fmt.Errorf("grandchild pid %s: %w", p, err)
	}
	return int(pid), nil
}

// killPidfileProcess SIGKILLs, by pidfd, the process a runtime named in
// the pidfile p, best effort: nothing is there when the runtime never wrote
// it or the process is gone. It serves an exec abandoned after the runtime
// wrote the pidfile but before the process was adopted (the reaper reaps
// it as an unknown process).
func killPidfileProcess(p string) {
	pid, err := readPIDPath(p)
	if err != nil {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) // best effort
	_ = unix.Close(fd)
}

// abandonOnPanic returns the deferred step of an exec whose waiting code
// may panic: unless the call returned (*returned), the process must not
// outlive it unseen, so it is killed and reaped (unless its exit was
// received, *reaped) and its output collectors are ended.
func abandonOnPanic(p *proc, out *outputs, returned, reaped *bool) func() {
	return func() {
		if *returned {
			return
		}
		if !*reaped {
			p.killGroup()
			p.await(execKillWait)
		}
		out.finish(failedDrainTimeout)
	}
}
