package monitor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The single reaper (docs/architecture.md, "One reaper").
//
// gomon is a child subreaper: when the OCI runtime exits, the container's
// init process is re-parented to us. Exactly one goroutine in the whole
// process calls wait4(-1); it fans each exit out to the subscriber of that
// PID. Nothing else may wait for children: no exec.Cmd.Wait, no
// os.Process.Wait, or exit codes get stolen.
//
// Because wait4(-1) is process-wide, so is the reaper: every Monitor in a
// process shares one, reference-counted by acquireReaper/release. The first
// Monitor starts it; the last one to shut down stops it.
//
// Early exits: a process we start is subscribed while its start holds
// reaper.mu, so its exit can be reaped but not dispatched before the
// subscription exists. A container's init PID is learned only from the
// runtime's pidfile, after it may already have exited and been reaped;
// exits of unknown PIDs are therefore kept for a while (bounded count and
// age) and handed to a later subscriber of that PID (see subscribePID).

const (
	// earlyExitMax bounds the exits of unknown PIDs kept for late subscribers.
	earlyExitMax = 1024
	// earlyExitTTL is how long an exit of an unknown PID is kept.
	earlyExitTTL = 2 * time.Minute
)

// exitEvent is one reaped child.
type exitEvent struct {
	pid     int
	status  unix.WaitStatus
	at      time.Time // when it was reaped (monotonic)
	unknown bool      // the process vanished without us seeing its status
}

// code is the process's exit code: its status, or 128+signal when it was
// killed by a signal, or ExitUnknown.
func (e exitEvent) code() int {
	switch {
	case e.unknown:
		return ExitUnknown
	case e.status.Exited():
		return e.status.ExitStatus()
	case e.status.Signaled():
		return signalExitBase + int(e.status.Signal())
	default:
		return ExitUnknown
	}
}

// signal is the signal that killed the process, or 0.
func (e exitEvent) signal() syscall.Signal {
	if !e.unknown && e.status.Signaled() {
		return e.status.Signal()
	}
	return 0
}

// signalExitBase is added to a signal number to form the exit code of a
// process killed by that signal, as shells and conmon-rs do.
const signalExitBase = 128

// reaper owns the one wait4(-1) loop of the process.
type reaper struct {
	log  *slog.Logger
	sigc chan os.Signal
	stop chan struct{}
	done chan struct{}

	// mu guards subs and early. The reap loop takes it to dispatch an exit;
	// start holds it across fork+exec so the child's exit is dispatched only
	// after its subscription exists.
	mu sync.Mutex
	// subs maps a PID to the channel (capacity 1) that receives its exit;
	// a nil channel means "reap and forget" (detached processes).
	subs map[int]chan exitEvent
	// early holds exits of PIDs nobody subscribed to, oldest first in
	// earlyOrder, bounded by earlyExitMax and earlyExitTTL.
	early      map[int]exitEvent
	earlyOrder []int
}

var (
	sharedReaperMu   sync.Mutex
	sharedReaper     *reaper
	sharedReaperRefs int
)

// acquireReaper returns the process's reaper, starting it (and making the
// process a child subreaper) on first use. Every call must be paired with
// releaseReaper.
func acquireReaper(log *slog.Logger) (*reaper, error) {
	sharedReaperMu.Lock()
	defer sharedReaperMu.Unlock()
	if sharedReaper != nil {
		sharedReaperRefs++
		return sharedReaper, nil
	}
	// PR_SET_CHILD_SUBREAPER is a property of the whole process, not of a
	// Monitor or a thread: once set, every orphaned descendant of this
	// process is re-parented to it. It stays set after the last Monitor is
	// gone (harmless: the next one sets it again).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	r := &reaper{
		log: log,
		// Buffered so a SIGCHLD arriving while we reap is not dropped;
		// one pending signal is enough since each wakeup reaps everything.
		sigc:  make(chan os.Signal, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		subs:  make(map[int]chan exitEvent),
		early: make(map[int]exitEvent),
	}
	// Registered before the first child of this reaper starts, so no
	// SIGCHLD is missed: an exit signalled before Notify would sit unreaped
	// until the next one.
	signal.Notify(r.sigc, unix.SIGCHLD)
	go r.loop()
	sharedReaper, sharedReaperRefs = r, 1
	return r, nil
}

// releaseReaper drops one reference; the last one stops the reap loop and
// waits for it.
func releaseReaper(r *reaper) {
	sharedReaperMu.Lock()
	defer sharedReaperMu.Unlock()
	if sharedReaper != r || sharedReaperRefs == 0 {
		return
	}
	sharedReaperRefs--
	if sharedReaperRefs > 0 {
		return
	}
	sharedReaper = nil
	signal.Stop(r.sigc)
	close(r.stop)
	<-r.done
}

// loop is the reaper goroutine: on every SIGCHLD it reaps all exited
// children without blocking.
func (r *reaper) loop() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.sigc:
			r.reapAll()
		}
	}
}

// reapAll waits for every exited child until none is left.
//
// Each wait4 and the dispatch of its result happen under r.mu, so no one
// can observe a reaped-but-undispatched exit: subscribePID relies on it
// (a PID whose pidfd_open failed was reaped, so its exit is in early by
// the time subscribePID holds the lock). WNOHANG keeps the hold short.
func (r *reaper) reapAll() {
	for r.reapOne() {
	}
}

// reapOne reaps and dispatches one exited child; false when none is left.
func (r *reaper) reapOne() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD or nothing more exited
			return false
		}
		r.dispatchLocked(exitEvent{pid: pid, status: ws, at: time.Now()})
		return true
	}
}

// dispatchLocked hands ev to its subscriber or keeps it for a late one.
// Called with r.mu held.
func (r *reaper) dispatchLocked(ev exitEvent) {
	ch, ok := r.subs[ev.pid]
	if ok {
		delete(r.subs, ev.pid)
		if ch == nil {
			r.log.Debug("reaped detached process", "pid", ev.pid, "exit_code", ev.code())
			return
		}
		ch <- ev // capacity 1 and one event per subscription: never blocks
		return
	}
	r.log.Debug("reaped unknown process", "pid", ev.pid, "exit_code", ev.code())
	r.expireLocked(ev.at)
	if len(r.earlyOrder) >= earlyExitMax {
		delete(r.early, r.earlyOrder[0])
		r.earlyOrder = r.earlyOrder[1:]
	}
	if _, dup := r.early[ev.pid]; !dup {
		r.earlyOrder = append(r.earlyOrder, ev.pid)
	}
	r.early[ev.pid] = ev
}

// expireLocked drops early exits older than earlyExitTTL.
// Called with r.mu held.
func (r *reaper) expireLocked(now time.Time) {
	n := 0
	for _, pid := range r.earlyOrder {
		ev, ok := r.early[pid]
		if !ok {
			continue
		}
		if now.Sub(ev.at) > earlyExitTTL {
			delete(r.early, pid)
			continue
		}
		r.earlyOrder[n] = pid
		n++
	}
	r.earlyOrder = r.earlyOrder[:n]
}

// takeEarlyLocked removes and returns the early exit of pid.
// Called with r.mu held.
func (r *reaper) takeEarlyLocked(pid int) (exitEvent, bool) {
	ev, ok := r.early[pid]
	if ok {
		delete(r.early, pid)
		// earlyOrder is cleaned lazily by expireLocked.
	}
	return ev, ok
}

// child is a process started through the reaper.
type child struct {
	cmd  *exec.Cmd
	pid  int
	exit <-chan exitEvent
}

// start starts cmd and subscribes to its exit. cmd must use only *os.File
// (or nil) stdio so exec starts no copy goroutines, and must not have a
// Context. With detached, the exit is reaped and logged, not delivered.
func (r *reaper) start(cmd *exec.Cmd, detached bool) (*child, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	// Any early exit recorded for this PID belongs to an older process
	// that had the same PID: ours cannot have been dispatched yet.
	if _, stale := r.takeEarlyLocked(pid); stale {
		r.log.Debug("dropped stale exit of reused pid", "pid", pid)
	}
	if detached {
		r.subs[pid] = nil
		return &child{cmd: cmd, pid: pid}, nil
	}
	ch := make(chan exitEvent, 1)
	r.subs[pid] = ch
	return &child{cmd: cmd, pid: pid, exit: ch}, nil
}

// subscribePID subscribes to the exit of a process we did not start
// ourselves (a container's init, re-parented to us). openedAt must be taken
// before the caller proved the PID alive (pidfd_open): an early exit reaped
// after that moment is this process's; one reaped before belongs to an
// older process with the same PID. alive reports whether pidfd_open
// succeeded; when it did not, any early exit for the PID is taken as ours.
func (r *reaper) subscribePID(pid int, openedAt time.Time, alive bool) <-chan exitEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan exitEvent, 1)
	if ev, ok := r.takeEarlyLocked(pid); ok {
		if !alive || ev.at.After(openedAt) {
			ch <- ev
			return ch
		}
		r.log.Debug("dropped stale exit of reused pid", "pid", pid)
	}
	if !alive {
		// Gone, and not reaped by us: someone else waited for it, or it
		// was never our child. Its status is lost.
		ch <- exitEvent{pid: pid, at: time.Now(), unknown: true}
		return ch
	}
	r.subs[pid] = ch
	return ch
}

// unsubscribe forgets the subscription of pid, if any; a later exit of pid
// goes to the early buffer.
func (r *reaper) unsubscribe(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.subs, pid)
}
