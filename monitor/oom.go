package monitor

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"
)

// OOM verdicts. The kernel counts OOM kills per memory cgroup
// (internal/oom); a container's init, its children and its exec sessions
// share that cgroup. Reporting the container OOM killed whenever the count
// grew (what every pod monitor did) makes a container whose init survived
// a child's OOM kill, and then exited 0 or by SIGTERM, look OOM killed to
// the kubelet. The rule here: a process was OOM killed only when it died of
// SIGKILL (an OOM victim always does) and the count grew while it ran;
// other kills are counted, logged and put on the span, nothing more.

// oomWatcher is the part of oom.Watcher the monitor uses.
type oomWatcher interface {
	// Stop ends the watch and returns the kills since it started.
	Stop(ctx context.Context) uint64
	// Count returns the kills since the watch started, read now; false
	// when unknown.
	Count() (uint64, bool)
	// AfterKill runs f in a goroutine of its own once the first kill is
	// seen.
	AfterKill(f func())
}

// oomSurvivalGrace is how long a container's init must outlive OOM kills
// in its cgroup for them to count as other processes' (trackOOMSurvivals).
// An OOM victim dies within milliseconds, unless it sleeps
// uninterruptibly: a longer grace covers that, a shorter one narrows the
// window in which an init killed by someone else (SIGKILL from a stop)
// right after a child's OOM kill is still taken for OOM killed.
const oomSurvivalGrace = 2 * time.Second

// trackOOMSurvivals runs after the first OOM kill in c's cgroup, while its
// init lives: each time the init outlives kills by oomSurvivalGrace, they
// were not its own, and oomSurvived records how many there were. Without
// it, an init killed with SIGKILL by someone else (a stop's SIGKILL, runc
// kill) after a child's OOM kill looked OOM killed, as every pod monitor
// reports it. It holds a dup of the init's pidfd (readable once the init
// exited) and ends with the init, or when the count can no longer be read.
func (c *container) trackOOMSurvivals(w oomWatcher) {
	c.mu.Lock()
	fd := -1
	if c.state == stateRunning && c.init != nil && c.init.pidfd >= 0 {
		fd, _ = unix.FcntlInt(uintptr(c.init.pidfd), unix.F_DUPFD_CLOEXEC, 0) // -1 on error: nothing tracked
	}
	c.mu.Unlock()
	if fd < 0 {
		return
	}
	defer func() { _ = unix.Close(fd) }()
	for prev, ok := w.Count(); ok; prev, ok = w.Count() {
		if exitedWithin(fd, oomSurvivalGrace) {
			return
		}
		c.oomSurvived.Store(prev)
	}
}

// exitedWithin waits up to d for the process of pidfd to exit (its pidfd
// turns readable) and reports whether it did; an error counts as exited,
// so nothing is concluded from it.
func exitedWithin(pidfd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}} //nolint:gosec // an fd fits in int32
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return true
		case n > 0:
			return true
		}
	}
}

// splitOOMKills attributes kills counted in a process's cgroup while it
// ran: at most one is the process's own, when it died of SIGKILL (or its
// status is unknown: then, as before this rule, any kill counts as its
// own). notOwn are kills known to be another process's (exec sessions
// whose process was OOM killed): they cannot be the process's.
func splitOOMKills(kills, notOwn uint64, ev exitEvent) OOMKills {
	own := kills - min(notOwn, kills)
	if own > 0 && (ev.unknown || ev.signal() == syscall.SIGKILL) {
		return OOMKills{Init: 1, Other: kills - 1}
	}
	return OOMKills{Other: kills}
}

// oomAttrs are the span attributes of a verdict.
func oomAttrs(k OOMKills) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.Bool("oom_killed", k.Init > 0),
		attribute.Int64("oom_kills.init", int64(k.Init)),   //nolint:gosec // a kernel counter's growth, far below 2^63
		attribute.Int64("oom_kills.other", int64(k.Other)), //nolint:gosec // as above
	}
}

// reportOtherOOMKills records kills of other processes than the one whose
// verdict this is, which do not make it OOM killed: a span event and a log
// line. what names the process ("container", "exec").
func reportOtherOOMKills(ctx context.Context, span trace.Span, logger *slog.Logger, what string, k OOMKills) {
	if k.Other == 0 {
		return
	}
	span.AddEvent("oom kill of another process", trace.WithAttributes(
		attribute.Int64("oom_kills.other", int64(k.Other)), //nolint:gosec // a kernel counter's growth
		attribute.Bool("oom_killed", k.Init > 0)))
	logger.WarnContext(ctx, "the OOM killer killed other processes in the "+what+"'s cgroup; the "+what+
		" itself was not OOM killed by them", "oom_kills_other", k.Other, "oom_killed", k.Init > 0)
}

// execOOM takes an exec session's OOM verdict from its container's
// watcher: the count before the process starts and after it exited.
type execOOM struct {
	c      *container
	before uint64
	ok     bool
}

// startExecOOM reads the container's count before an exec's process starts.
func (c *container) startExecOOM() execOOM {
	if c == nil { // a tombstone's exec: the runtime refuses it
		return execOOM{}
	}
	w := c.oomWatcher()
	if w == nil {
		return execOOM{}
	}
	n, ok := w.Count()
	return execOOM{c: c, before: n, ok: ok}
}

// judge returns the kills while the exec's process ran, split by how it
// ended (ev), and whether they are known. An exec whose process was OOM
// killed tells its container, whose own verdict then leaves that kill out.
func (x execOOM) judge(ev exitEvent) (OOMKills, bool) {
	if !x.ok {
		return OOMKills{}, false
	}
	after, ok := x.c.oomWatcher().Count()
	if !ok || after < x.before {
		return OOMKills{}, false
	}
	k := splitOOMKills(after-x.before, 0, ev)
	if k.Init > 0 {
		x.c.execOOMKills.Add(1)
		x.c.metrics.addOOM(oomOther, 1) // the container's, now: see waitExit
	}
	return k, true
}

// oomWatcher returns the container's OOM watcher, nil if none.
func (c *container) oomWatcher() oomWatcher {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.oomw
}

// oomKills reports the container's OOM kills for metrics. Once it exited
// (final is true) they are ExitStatus.OOMKills. While it runs, kills is
// what is already known to be another process's (exec sessions' processes
// that were OOM killed), and pending the other kills counted in its cgroup
// so far, which are attributed only at exit: the last of them may be the
// init's, which the kernel counts before the init dies. So the counters
// only ever grow.
func (c *container) oomKills() (kills OOMKills, pending uint64, final bool) {
	c.mu.Lock()
	state, st, w := c.state, c.status, c.oomw
	c.mu.Unlock()
	if state == stateExited {
		return st.OOMKills, 0, true
	}
	kills.Other = c.execOOMKills.Load()
	if w != nil {
		if n, ok := w.Count(); ok && n > kills.Other {
			pending = n - kills.Other
		}
	}
	return kills, pending, false
}
