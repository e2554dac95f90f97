package oom

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/internal/undo"
)

// setupV1 arms the cgroup v1 watch: baseline of oom_kill from
// memory.oom_control, then an eventfd registered for OOM notifications
// through cgroup.event_control. Registration needs the cgroup to exist,
// which is why Watch must run before the process can exit. It reports false
// when the cgroup is already gone.
//
// The baseline is read before registering: an OOM in between still shows
// in the final counter read, whereas a notification consumed before the
// baseline could hide one.
func (w *Watcher) setupV1() (watching bool, err error) {
	var undo undo.Stack
	defer undo.Run()

	// Read access is what the kernel checks on the file named in
	// cgroup.event_control.
	cf, err := os.Open(filepath.Join(w.dir, "memory.oom_control"))
	if errors.Is(err, fs.ErrNotExist) {
		w.logger.Debug("oom watch skipped: cgroup already removed")
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open memory.oom_control: %w", err)
	}
	undo.Add(func() { _ = cf.Close() })
	counter := &counterFile{f: cf}

	baseline, err := counter.readOOMKill()
	switch {
	case err == nil:
		w.baseline, w.counted = baseline, true
	case errors.Is(err, errNoField):
		// Linux < 4.13. C conmon has the same fallback.
		w.logger.Debug("oom watch: no oom_kill counter, any oom notification counts")
	default:
		return false, fmt.Errorf("read oom_kill baseline: %w", err)
	}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return false, fmt.Errorf("create eventfd: %w", err)
	}
	ef, err := newPollable(efd, "oom-eventfd")
	if err != nil {
		return false, err
	}
	undo.Add(func() { _ = ef.Close() })

	// Fd on a regular file only switches it to blocking mode, which it is
	// anyway.
	if err := registerEvent(w.dir, efd, int(cf.Fd())); err != nil {
		return false, err
	}

	w.counter, w.notify, w.bufSize, w.handle = counter, ef, 8, w.handleV1
	undo.Release()
	w.logger.Debug("oom watch armed", "baseline", w.baseline, "counted", w.counted)
	return true, nil
}

// registerEvent writes "<eventfd> <fd of memory.oom_control>" to the
// cgroup's cgroup.event_control. The kernel keeps its own references; the
// registration ends when the eventfd is closed or the cgroup removed.
func registerEvent(dir string, efd, cfd int) error {
	ec, err := os.OpenFile(filepath.Join(dir, "cgroup.event_control"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open cgroup.event_control: %w", err)
	}
	_, werr := ec.WriteString(strconv.Itoa(efd) + " " + strconv.Itoa(cfd))
	cerr := ec.Close()
	if werr != nil {
		return fmt.Errorf("register oom eventfd: %w", werr)
	}
	if cerr != nil {
		return fmt.Errorf("close cgroup.event_control: %w", cerr)
	}
	return nil
}

// handleV1 judges an eventfd wake. The kernel signals the eventfd when the
// cgroup enters OOM, which happens just before the victim is chosen and
// counted, and also when the cgroup is removed (memcg_event_remove). That
// second wake is why conmon-rs's "any wake means OOM" can misreport; the
// counter settles it.
func (w *Watcher) handleV1() (done bool) {
	if !w.counted {
		// No counter: a wake while the cgroup is still readable is an OOM;
		// one after removal is the removal notice.
		if _, err := w.counter.read(); err != nil {
			w.logger.Debug("oom watch: cgroup removed", "error", err)
			return true
		}
		w.markOOM(0)
		return true
	}
	seen := w.seenCount()
	now, err := w.counter.readOOMKill()
	// The wake precedes the kill by the kernel's victim selection, a few
	// microseconds. Re-read for a bounded while so the kill is recorded
	// even if the cgroup is removed before Stop's final read; Stop cuts the
	// wait short.
	for delay := time.Millisecond; err == nil && now <= seen && delay <= maxRecheckDelay; delay *= 2 {
		if !w.sleep(delay) {
			break
		}
		now, err = w.counter.readOOMKill()
	}
	if err != nil {
		w.logger.Debug("oom watch: cgroup removed", "error", err)
		return true
	}
	// Keep waiting after a kill too: later ones are counted (and logged)
	// as they happen. Entering OOM without a kill (the allocation found
	// memory after all, or the victim was already exiting) changes
	// nothing; Stop's final read has the last word.
	w.markOOM(now)
	return false
}

// maxRecheckDelay bounds handleV1's re-reads: about a second in total.
const maxRecheckDelay = 512 * time.Millisecond
