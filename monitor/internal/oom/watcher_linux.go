package oom

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/contain"
)

// Watcher watches one process's memory cgroup for OOM kills.
//
// Lifecycle: [Watch] resolves the cgroup, reads the baseline counter,
// registers a notification and starts at most one goroutine that waits on
// it. The goroutine keeps counting kills (and logs each) until the cgroup
// goes or Stop is called. [Watcher.Stop], called once the process has
// exited, stops that goroutine, reads the counter a last time, closes every
// descriptor and returns how many processes of the cgroup were killed. A Watcher that found nothing to watch (process
// already gone, root cgroup, no memory controller) has no goroutine and
// reports false.
//
// All methods are safe for concurrent use. A nil *Watcher behaves like one
// that watches nothing.
type Watcher struct {
	logger *slog.Logger

	// Set by Watch, immutable afterwards.
	dir      string       // cgroup directory; "" when nothing is watched
	counter  *counterFile // memory.oom_control (v1) or memory.events (v2); nil when nothing is watched
	baseline uint64       // oom_kill at Watch time
	counted  bool         // baseline known; false only for v1 kernels without oom_kill
	notify   *os.File     // pollable eventfd (v1) or inotify fd (v2); nil when nothing is watched
	bufSize  int          // read size for notify
	// handle runs on the goroutine for each notification and reports
	// whether there is nothing left to wait for.
	handle func() (done bool)

	oomed   chan struct{} // closed by the first markOOM
	oomOnce sync.Once
	// afterKill is AfterKill's function, run once (afterOnce) after
	// oomed is closed.
	afterKill atomic.Pointer[func()]
	afterOnce sync.Once
	// kills is the highest number of kills (counter minus baseline)
	// observed so far; 1 for a v1 kernel without oom_kill that saw a
	// wake. Set before oomed is closed; never decreases.
	kills atomic.Uint64

	done       chan struct{} // closed when the goroutine returned, or at once if none was started
	stopping   chan struct{} // closed by the first Stop
	signalOnce sync.Once     // guards closing stopping and waking the goroutine
	finishOnce sync.Once     // guards the final read and closing descriptors
	verdict    atomic.Uint64 // the final count, written inside finishOnce
}

// procRoot is where Watch finds /proc; tests point it at a fake tree.
type procRoot string

const hostProc procRoot = "/proc"

// Watch starts watching the memory cgroup of process pid for OOM kills.
// Call it as soon as the PID is known, while the process (and so its
// cgroup) still exists. A process that is already gone, or sits in the
// root cgroup, gives a Watcher that reports false, not an error. logger may
// be nil.
func Watch(pid int, logger *slog.Logger) (*Watcher, error) {
	return watch(hostProc, pid, logger)
}

func watch(proc procRoot, pid int, logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		logger:   logger.With("pid", pid),
		oomed:    make(chan struct{}),
		done:     make(chan struct{}),
		stopping: make(chan struct{}),
	}
	cg, err := readProcCgroup(proc, pid)
	switch {
	case errors.Is(err, errProcessGone):
		w.logger.Debug("oom watch skipped: process already gone")
		return w.idle(), nil
	case err != nil:
		return nil, err
	case cg.isRoot():
		// The root cgroup has no limit, and its counters are shared by every
		// process of the host that is not in a child cgroup: a kill counted
		// there says nothing about this process.
		w.logger.Debug("oom watch skipped: process is in the root cgroup", "cgroup_version", cg.version.String())
		return w.idle(), nil
	}
	dir, err := resolveDir(proc, cg)
	if err != nil {
		return nil, err
	}
	w.dir = dir
	w.logger = w.logger.With("cgroup", dir, "cgroup_version", cg.version.String())
	var watching bool
	switch cg.version {
	case v1:
		watching, err = w.setupV1()
	default:
		watching, err = w.setupV2()
	}
	if err != nil {
		return nil, err
	}
	if !watching {
		return w.idle(), nil
	}
	go w.run()
	return w, nil
}

// errProcessGone: /proc/<pid> no longer exists.
var errProcessGone = errors.New("process gone")

// readProcCgroup reads and parses /proc/<pid>/cgroup, mapping the ways a
// just-exited process shows up to errProcessGone.
func readProcCgroup(proc procRoot, pid int) (procCgroup, error) {
	name := filepath.Join(string(proc), strconv.Itoa(pid), "cgroup")
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return procCgroup{}, errProcessGone
		}
		return procCgroup{}, fmt.Errorf("open cgroup list of pid %d: %w", pid, err)
	}
	defer func() { _ = f.Close() }()
	cg, err := parseProcCgroup(f)
	if err != nil {
		// A process that exits between open and read yields ESRCH or an
		// empty file.
		if errors.Is(err, unix.ESRCH) || !exists(filepath.Join(string(proc), strconv.Itoa(pid))) {
			return procCgroup{}, errProcessGone
		}
		return procCgroup{}, fmt.Errorf("parse cgroup list of pid %d: %w", pid, err)
	}
	return cg, nil
}

// resolveDir maps cg to its directory using this process's mount table.
func resolveDir(proc procRoot, cg procCgroup) (string, error) {
	f, err := os.Open(filepath.Join(string(proc), "self", "mountinfo"))
	if err != nil {
		return "", fmt.Errorf("open mountinfo: %w", err)
	}
	defer func() { _ = f.Close() }()
	m, err := findMount(f, cg)
	if err != nil {
		return "", err
	}
	return cgroupDir(m, cg)
}

func exists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// idle marks w as watching nothing.
func (w *Watcher) idle() *Watcher {
	close(w.done)
	return w
}

// OOMed returns a channel closed as soon as an OOM kill in the watched
// cgroup is observed, by the watching goroutine or by Stop. It stays open
// for a Watcher that never sees one; a nil Watcher returns nil.
func (w *Watcher) OOMed() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.oomed
}

// AfterKill arranges for f to run, in a goroutine of its own, once the
// first OOM kill in the watched cgroup is observed (at once if one was
// already). It is meant to be called once, right after Watch; a nil
// Watcher never runs f.
func (w *Watcher) AfterKill(f func()) {
	if w == nil {
		return
	}
	w.afterKill.Store(&f)
	select {
	case <-w.oomed:
		w.runAfterKill()
	default:
	}
}

// runAfterKill starts AfterKill's function, once, if it was set.
func (w *Watcher) runAfterKill() {
	f := w.afterKill.Load()
	if f == nil {
		return
	}
	w.afterOnce.Do(func() { go (*f)() })
}

// Stop ends the watch and returns how many processes of the cgroup the
// OOM killer killed between Watch and now: the watched process among them
// or not, which only the way it died can tell (the caller knows). Call it
// after the process has exited: a kill is counted before the victim dies,
// so the counter read here is final.
//
// ctx bounds only the wait for the watching goroutine, which normally
// returns at once; the final counter read is a short non-blocking file read
// and happens even when ctx is already done. Stop is idempotent: later
// calls return the first verdict. It is safe to call concurrently.
func (w *Watcher) Stop(ctx context.Context) uint64 {
	if w == nil {
		return 0
	}
	w.signalOnce.Do(func() {
		close(w.stopping)
		if w.notify == nil {
			return
		}
		// A past deadline makes the goroutine's blocked Read return
		// os.ErrDeadlineExceeded without closing the descriptor under it.
		if err := w.notify.SetReadDeadline(time.Now()); err != nil {
			w.logger.Debug("oom watch: wake watcher", "error", err)
		}
	})
	select {
	case <-w.done:
	case <-ctx.Done():
		w.logger.Debug("oom watch: stopped before the watcher returned", "error", ctx.Err())
	}
	w.finishOnce.Do(w.finish)
	return w.verdict.Load()
}

// Count returns how many processes of the watched cgroup the OOM killer
// has killed since Watch, read from the counter now: an exec session in
// the same cgroup takes it before and after its process runs. ok is false
// when nothing is watched, the kernel has no oom_kill counter, or the
// counter can no longer be read (the cgroup is gone, Stop closed it); the
// difference of two counts is then unknown. Safe to call concurrently with
// everything, Stop included.
func (w *Watcher) Count() (n uint64, ok bool) {
	if w == nil || w.counter == nil || !w.counted {
		return 0, false
	}
	now, err := w.counter.readOOMKill()
	if err != nil {
		return 0, false
	}
	if now < w.baseline {
		return 0, true // cannot happen: the kernel's counter only grows
	}
	return now - w.baseline, true
}

// finish reads the counter a last time, publishes the verdict and closes
// every descriptor. It runs once, after the goroutine returned (or Stop's
// context ran out: closing then makes the goroutine's next read fail).
func (w *Watcher) finish() {
	defer w.closeFiles()
	switch {
	case w.counter == nil:
		// Nothing was watched.
	case !w.counted:
		// v1 without oom_kill: only an eventfd wake counts, as one kill.
		w.verdict.Store(w.kills.Load())
	default:
		now, err := w.counter.readOOMKill()
		if err != nil {
			// Typically ENODEV: the cgroup was removed after the process
			// exited (systemd scope teardown, runtime cleanup). The counter
			// is gone; what the goroutine saw before stands.
			w.logger.Debug("oom watch: cgroup vanished before the final read, keeping the kills seen so far",
				"kills", w.kills.Load(), "error", err)
			w.verdict.Store(w.kills.Load())
			return
		}
		w.markOOM(now)
		w.verdict.Store(w.kills.Load())
	}
}

func (w *Watcher) closeFiles() {
	if w.notify != nil {
		_ = w.notify.Close() // read-only use; nothing to flush
	}
	if w.counter != nil {
		_ = w.counter.f.Close()
	}
}

// markOOM records the counter value now (0 with no counter: one kill,
// from a v1 wake). It logs and publishes only growth beyond what was seen.
// Called from the goroutine and, after it returned, from finish.
func (w *Watcher) markOOM(now uint64) {
	kills := uint64(1)
	if w.counted {
		if now <= w.baseline {
			return
		}
		kills = now - w.baseline
	}
	for {
		old := w.kills.Load()
		if kills <= old {
			return
		}
		if w.kills.CompareAndSwap(old, kills) {
			break
		}
	}
	w.logger.Info("oom kill detected", "oom_kill", now, "baseline", w.baseline, "kills", kills)
	w.oomOnce.Do(func() { close(w.oomed) })
	w.runAfterKill()
}

// seenCount is the counter value of the last observed kill (the baseline
// when none).
func (w *Watcher) seenCount() uint64 { return w.baseline + w.kills.Load() }

// run is the watching goroutine: it waits on the notification descriptor
// and lets handle judge each wake, until handle is satisfied or Stop sets a
// read deadline.
//
// A panic in it ends the watching (recovered, logged, counted); Stop's
// final read of the counter still gives the verdict.
func (w *Watcher) run() {
	defer close(w.done)
	defer contain.Recover(w.logger, contain.OOMWatch, nil)
	buf := make([]byte, w.bufSize)
	for {
		_, err := w.notify.Read(buf)
		switch {
		case err == nil:
			if w.handle() {
				return
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Stop was called. A wake may still be pending; take it
			// without blocking so an eventfd-only verdict (v1 without
			// counter) cannot miss it.
			if w.pending(buf) {
				w.handle()
			}
			return
		default:
			// Closed by Stop after its context ran out, or a read error
			// that will not heal.
			if !errors.Is(err, os.ErrClosed) {
				w.logger.Debug("oom watch: read notification", "error", err)
			}
			return
		}
	}
}

// sleep waits for d and reports false if Stop was called meanwhile.
func (w *Watcher) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stopping:
		return false
	}
}

// pending reads the notification descriptor once without waiting.
func (w *Watcher) pending(buf []byte) bool {
	rc, err := w.notify.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) {
		n, _ = unix.Read(int(fd), buf) // EAGAIN: nothing pending
	}); err != nil {
		return false
	}
	return n > 0
}

// newPollable wraps a non-blocking descriptor in an *os.File registered
// with the runtime poller, so that reads park the goroutine instead of a
// thread and read deadlines work.
func newPollable(fd int, name string) (*os.File, error) {
	f := os.NewFile(uintptr(fd), name)
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("register %s with poller: %w", name, err)
	}
	return f, nil
}
