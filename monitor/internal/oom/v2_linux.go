package oom

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/internal/undo"
)

// inotifyBufSize holds many events; a file watch's events carry no name.
const inotifyBufSize = 4096

// setupV2 arms the cgroup v2 watch: an inotify watch on the cgroup's
// memory.events (the kernel signals a modification on every counter
// change), then the oom_kill baseline. It reports false when there is
// nothing to watch: the cgroup is gone, or the memory controller is not
// enabled for it (no memory.events).
//
// The inotify watch is not needed for a verdict taken after the process
// exited while the cgroup still exists: the final read at Stop sees every
// kill. It is there because the cgroup can be removed before Stop runs
// (systemd removes an emptied scope; runtimes remove sub-cgroups), after
// which the counter is unreadable; the watching goroutine records the kill
// as it happens. It also drives OOMed and the count of kills.
//
// Only this cgroup's own memory.events is consulted. conmon-rs also watches
// the parent's memory.events and, when the child's file cannot be read,
// reports an OOM if the parent's counter is merely non-zero. The parent of
// a container cgroup is the pod cgroup, whose v2 counters are hierarchical:
// they include every kill of every earlier or sibling container of the pod,
// so one OOM killed container makes every later container of the pod that
// exits after its cgroup is removed look OOM killed too. A kill of this
// process is counted in its own cgroup (and propagated upwards), so the
// own file is sufficient; when it is gone without a recorded kill we report
// false.
func (w *Watcher) setupV2() (watching bool, err error) {
	var undo undo.Stack
	defer undo.Run()

	name := filepath.Join(w.dir, "memory.events")

	// Watch before reading the baseline, so that any increase after the
	// baseline produces a notification.
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return false, fmt.Errorf("create inotify: %w", err)
	}
	inf, err := newPollable(ifd, "oom-inotify")
	if err != nil {
		return false, err
	}
	undo.Add(func() { _ = inf.Close() })
	if _, err := unix.InotifyAddWatch(ifd, name, unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			w.logger.Debug("oom watch skipped: no memory.events (cgroup gone or memory controller not enabled)")
			return false, nil
		}
		return false, fmt.Errorf("watch memory.events: %w", err)
	}

	cf, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		w.logger.Debug("oom watch skipped: cgroup already removed")
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open memory.events: %w", err)
	}
	undo.Add(func() { _ = cf.Close() })
	counter := &counterFile{f: cf}

	cs, err := counter.read()
	if err != nil {
		return false, fmt.Errorf("read oom_kill baseline: %w", err)
	}
	if !cs.oomKill.ok {
		// Only kernels before 4.13 lack it, and they predate usable cgroup
		// v2 memory accounting.
		w.logger.Warn("oom watch skipped: memory.events has no oom_kill counter")
		return false, nil
	}
	w.baseline, w.counted = cs.oomKill.n, true

	w.counter, w.notify, w.bufSize, w.handle = counter, inf, inotifyBufSize, w.handleV2
	undo.Release()
	w.logger.Debug("oom watch armed", "baseline", w.baseline, "oom", cs.oom.n)
	return true, nil
}

// handleV2 re-reads the counter after memory.events changed.
func (w *Watcher) handleV2() (done bool) {
	now, err := w.counter.readOOMKill()
	if err != nil {
		w.logger.Debug("oom watch: cgroup removed", "error", err)
		return true
	}
	// Keep watching after a kill: later ones are counted as they happen.
	w.markOOM(now)
	return false
}
