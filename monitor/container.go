package monitor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
)

// containerState is where a container is in its lifecycle. Transitions
// only go forward, one named method each:
//
//	creating --created()--> running --exited()--> exited
//	creating --(create failed: removed from the monitor)
//
// "running" covers the runtime's "created" and "running" states alike: the
// monitor does not see `runtime start`, only the exit.
type containerState uint8

const (
	stateCreating containerState = iota // runtime create in progress
	stateRunning                        // init PID known, waiter running
	stateExited                         // exit files written, resources released
)

// The drain policy: after the container's init exited, the waiter lets
// each output stream run to EOF before it writes the exit files, so the
// log is complete when CRI-O sees the exit.
//
//   - drainTimeout bounds the time a stream may sit with nothing in its
//     pipe and no EOF: a leftover process (a leaked grandchild) holds the
//     write end. Time while the pipe holds data does not count: the read
//     loop is busy, or stuck in a slow log write (NFS, an fsync storm,
//     journald at its deadline), and that output is the container's.
//   - drainLimit bounds the whole drain: a stream still running then is
//     stopped (what its pipe still holds is read, counted and reported as
//     unread), and the exit files are written without waiting for a log
//     write that is stuck for good. The streams' ends are closed only
//     after their loops ended.
//
// Streams are stopped with a read deadline, so the loop counts what it
// leaves; a stream that cannot take a deadline is closed, after counting
// what its pipe holds.
const (
	drainTimeout = 5 * time.Second
	drainLimit   = time.Minute
	drainPoll    = 50 * time.Millisecond
)

// oomVerdictTimeout bounds the OOM watcher's final check.
const oomVerdictTimeout = 5 * time.Second

// container is one monitored container.
//
// Lifecycle and ownership: CreateContainer builds it in stateCreating,
// starts its read loops (one goroutine per stream, in c.streams) and the
// runtime, and on success moves it to stateRunning and starts its waiter
// goroutine (in Monitor.waiters). The waiter is the only code that moves
// it to stateExited: after the reaper reported the init's exit, the
// streams drained and the exit files were written. Only then is c.done
// closed, so Wait returning means the exit files exist (unless their
// filesystem refused them: those are retried in the background, see
// retryExitFiles).
//
// Thread safety: the immutable fields are set before the container is
// published in Monitor.containers; the rest is guarded by mu.
type container struct {
	id string
	// gen tells this container from an earlier or later one with the
	// same ID (set by reserve); its tombstone carries it.
	gen    uint64
	req    CreateRequest // exit/OOM paths, cleanup, cgroup, global args
	log    *ioloop.Log
	logger *slog.Logger
	// identity is the container's pod and name from its bundle's
	// annotations; settings are its io.gomon.* annotations, without the
	// prefix. Both are set by the create before anything reads them.
	identity bundle.Identity
	settings map[string]string
	// attrSet is identity as OpenTelemetry attributes (see attrs); set
	// with identity.
	attrSet []attribute.KeyValue
	// metrics are the container's instruments, nil unless
	// Config.Metrics; set before the container is published.
	metrics *containerMetrics
	tracer  trace.Tracer
	// traceCtx carries the create_container span (not its cancellation):
	// the parent of the read loops' spans.
	traceCtx context.Context
	// attach serves the container's attach sockets: its read loops tee
	// into it, attach clients' input goes to stdin. Closed by release
	// (or by a failed create's undo).
	attach *ioloop.AttachServer

	// runtimeSpawned is set by the create goroutine once `runtime
	// create` is running; read only by that goroutine.
	runtimeSpawned bool

	streams sync.WaitGroup // read loops
	// loopSpans are the read loops' read_loop spans by stream, each set
	// by startStream before its loop starts and then only read by that
	// loop (rate limit events, see ratelimit.go).
	loopSpans [ioloop.Stderr + 1]trace.Span
	// loops are the read loops' streams, appended by startStream in the
	// create goroutine before the waiter starts; read by drainOutput.
	loops    []streamLoop
	readEnds []io.Closer // pipe read ends or the console, closed after drain
	leak     []*os.File  // leakFds, held until exit
	// exitFiles are the exit paths with the space reserved for them; set
	// by the create, then used only by the waiter.
	exitFiles []exitFile
	input     sync.WaitGroup // the Input copier, if any
	done      chan struct{}  // closed on the move to stateExited
	// execOOMKills counts exec sessions whose process was OOM killed
	// (execOOM.judge): kills in the container's cgroup that are not its
	// init's.
	execOOMKills atomic.Uint64
	// oomSurvived counts kills in the container's cgroup that its init
	// outlived (trackOOMSurvivals): not its own either.
	oomSurvived atomic.Uint64

	// mu guards the fields below. Lock order: Monitor.mu before c.mu.
	mu      sync.Mutex
	state   containerState // guarded by mu
	init    *proc          // guarded by mu; nil until running
	oomw    oomWatcher     // guarded by mu; nil until running, or when the cgroup is not watched
	stdin   io.WriteCloser // guarded by mu; the container's stdin (pipe or pty), nil if none
	console console.Console
	status  ExitStatus // guarded by mu; valid in stateExited
}

// tombstone is what the monitor remembers of an exited container once
// its waiter retired it (Monitor.retire): enough to answer late calls as
// the container would have, and nothing it held (request, environment,
// log, attach server, logger), so that remembering maxExited of them
// costs a few hundred bytes each. The late calls get:
//
//   - Wait: the exit status, at once.
//   - Kill: nil (an exited container is nothing to signal).
//   - Start and Delete: the runtime's own answer, run with the
//     container's cgroup manager and global arguments; Delete then forgets
//     the tombstone.
//   - ExecSync: the runtime's answer too (ExitRuntimeFailed with its
//     message), as conmon-rs lets the runtime fail.
//   - ReopenLog, SetWindowSize, Attach, ServeExec, ServeAttach:
//     ErrNotFound ("has exited"), as for an exited container before.
//   - CreateContainer with the same ID: replaces the tombstone.
//
// It is immutable once made.
type tombstone struct {
	id         string
	gen        uint64
	status     ExitStatus
	cgroup     CgroupManager
	globalArgs []string
	// metrics are the container's instruments (nil unless
	// Config.Metrics): its series stay until the tombstone goes.
	metrics *containerMetrics
}

// tombstone returns c's tombstone; c must be in stateExited.
func (c *container) tombstone() *tombstone {
	_, st := c.snapshot()
	return &tombstone{
		id: c.id, gen: c.gen, status: st, cgroup: c.req.Cgroup,
		globalArgs: append([]string(nil), c.req.GlobalArgs...), metrics: c.metrics,
	}
}

// created moves the container to stateRunning with its init process and
// the OOM watcher of its cgroup (nil if none).
func (c *container) created(init *proc, oomw oomWatcher) {
	c.mu.Lock()
	c.state, c.init, c.oomw = stateRunning, init, oomw
	c.mu.Unlock()
	if oomw != nil {
		oomw.AfterKill(func() { c.trackOOMSurvivals(oomw) })
	}
}

// exited records the status, moves to stateExited and wakes Wait callers.
func (c *container) exited(st ExitStatus) {
	c.mu.Lock()
	c.state, c.status = stateExited, st
	c.mu.Unlock()
	close(c.done)
}

// snapshot returns the state and status.
func (c *container) snapshot() (containerState, ExitStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.status
}

// signal sends sig to the container's init through its pidfd, and first
// to its process group when killGroup (as conmon-rs does, so children of
// the init die too).
func (c *container) signal(sig unix.Signal, killGroup bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateRunning {
		return nil // nothing to signal (yet, or any more)
	}
	return c.init.signal(sig, killGroup)
}

// maxReadLoopPanics is how many panics of one stream's read loop are
// recovered by starting the loop again; after that the stream's output is
// read and discarded (counted, logged) until its end.
const maxReadLoopPanics = 3

// startStream runs one read loop over r as stream s. Attach clients get
// the output first (their writer never blocks), then the tee writers.
// When the loop ends the stream is marked ended for attach clients.
//
// A panic in the loop (a sink or a tee writer) is recovered, so the
// container is never left writing to a pipe nobody reads and the waiter's
// drain still ends: the loop starts again on the same pipe and
// destinations (the chunk in hand is lost), up to maxReadLoopPanics
// times; a panic that keeps coming back then makes the loop discard the
// stream's output.
func (c *container) startStream(r io.Reader, s ioloop.Stream, tee ...io.Writer) {
	as := c.attach.Stream(s)
	tee = append([]io.Writer{as}, tee...)
	ended := make(chan struct{})
	c.loops = append(c.loops, streamLoop{r: r, ended: ended})
	ctx, span := c.tracer.Start(c.traceCtx, "read_loop", trace.WithAttributes(c.attrs()...),
		trace.WithAttributes(attribute.String("stream", s.String())))
	c.loopSpans[s] = span
	c.streams.Add(1)
	go func() {
		defer c.streams.Done()
		defer close(ended)
		defer func() { _ = as.Close() }() // never fails
		stats, err := c.readLoop(r, s, tee)
		span.SetAttributes(
			attribute.Int64("bytes", int64(stats.Bytes)),
			attribute.Int64("chunks", int64(stats.Chunks)),
			attribute.Int64("lines", int64(stats.Lines)),
			attribute.Int64("partials", int64(stats.Partials)),
			attribute.Int64("write_errors", int64(stats.WriteErrors)),
			attribute.Int64("dropped_bytes", int64(stats.DroppedBytes)),
			attribute.Int64("unread_bytes", int64(stats.UnreadBytes)),
			attribute.Int64("rate_limited_bytes", int64(stats.RateLimitedBytes)),
			attribute.Int64("rate_limit_gaps", int64(stats.RateLimitGaps)),
			attribute.Int64("rate_limit_wait_ms", stats.RateLimitWait.Milliseconds()))
		if errors.Is(err, os.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ioloop.ErrHandedOff) {
			err = nil // the drain policy or an upgrade (adopt.go) stopped the stream: a normal stop
		}
		c.logger.DebugContext(ctx, "read loop ended", "stream", s, "stats", stats, "error", err)
		endSpan(span, err)
	}()
}

// loopSpan returns stream s's read_loop span (nil before its loop).
func (c *container) loopSpan(s ioloop.Stream) trace.Span {
	if int(s) >= len(c.loopSpans) {
		return nil
	}
	return c.loopSpans[s]
}

// readLoop runs ioloop.ReadLoop over r, again after each recovered
// panic, and discards the rest of r after maxReadLoopPanics of them (see
// startStream). The stats are those of the last run, plus what was
// discarded.
func (c *container) readLoop(r io.Reader, s ioloop.Stream, tee []io.Writer) (ioloop.Stats, error) {
	for range maxReadLoopPanics {
		stats, panicked, err := c.readLoopOnce(r, s, tee)
		if !panicked {
			return stats, err
		}
	}
	c.logger.Error("read loop keeps panicking; discarding this stream's output until it ends",
		"stream", s, "panics", maxReadLoopPanics)
	n := discard(r)
	c.logger.Warn("stream output discarded after read loop panics", "stream", s, "dropped_bytes", n)
	return ioloop.Stats{DroppedBytes: n}, nil
}

// readLoopOnce is one run of the read loop; panicked reports a recovered
// panic.
func (c *container) readLoopOnce(r io.Reader, s ioloop.Stream, tee []io.Writer) (stats ioloop.Stats, panicked bool, err error) {
	defer contain.Recover(c.logger.With("stream", s.String()), contain.ReadLoop,
		func(*contain.PanicError) { panicked = true })
	stats, err = ioloop.ReadLoopCounted(r, s, c.log, c.metrics.counters(s), c.logger, tee...)
	return stats, false, err
}

// streamLoop is one read loop: its stream and a channel closed when it
// ended.
type streamLoop struct {
	r     io.Reader
	ended chan struct{}
}

// containerStdin is the attach server's view of the container's stdin.
type containerStdin struct{ c *container }

// errNoStdin: the container has no stdin (any more).
var errNoStdin = errors.New("container stdin is closed or was never opened")

// Write writes to the current stdin without holding c.mu during the write
// (it may block while the container does not read); closeStdin or release
// closing the file ends a blocked write.
func (s containerStdin) Write(p []byte) (int, error) {
	s.c.mu.Lock()
	w := s.c.stdin
	s.c.mu.Unlock()
	if w == nil {
		return 0, errNoStdin
	}
	return w.Write(p)
}

// CloseStdin closes a non-terminal container's stdin (stop after stdin
// EOF); a terminal's master stays open, it is also the output.
func (s containerStdin) CloseStdin() { s.c.closeStdin() }

// startInput copies in into the container's stdin w.
func (c *container) startInput(in io.Reader, w io.WriteCloser, closeAtEOF bool) {
	c.input.Add(1)
	go func() {
		defer c.input.Done()
		defer contain.Recover(c.logger, contain.Input, nil) // no more input; the container runs on
		_, err := io.Copy(w, in)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
			c.logger.Debug("copy to container stdin ended", "error", err)
		}
		if closeAtEOF && err == nil {
			c.closeStdin()
		}
	}()
}

// closeStdin closes the container's stdin (non-terminal only: a pty's
// master is also its output).
func (c *container) closeStdin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stdin != nil && c.console == nil {
		_ = c.stdin.Close() // nothing to report: the reader may be gone
		c.stdin = nil
	}
}

// drain runs the drain policy of a failed create, which returns to its
// caller: idle bounds the whole wait, not only a stream held open, then the
// streams' read ends are closed.
func (c *container) drain(idle time.Duration) {
	c.drainOutput(idle, idle)
	c.closeStreams()
}

// drainOutput waits for the read loops to reach EOF under the drain
// policy. It reports whether they all ended; false means drainLimit passed
// with a loop still in a log write (each has been told to stop).
func (c *container) drainOutput(idle, limit time.Duration) bool {
	ended := make(chan struct{})
	go func() { // ends with the loops, which the code below stops
		c.streams.Wait()
		close(ended)
	}()
	empty := make([]time.Duration, len(c.loops)) // time seen with an empty pipe
	stopped := make([]bool, len(c.loops))
	start := time.Now()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		select {
		case <-ended:
			return true
		case <-tick.C:
		}
		over := time.Since(start) >= limit
		for i, l := range c.loops {
			if stopped[i] {
				continue
			}
			select {
			case <-l.ended:
				stopped[i] = true
				continue
			default:
			}
			queued, known := pipeQueued(l.r)
			if !known || queued == 0 {
				empty[i] += drainPoll
			}
			switch {
			case over:
				c.logger.Warn("container output still draining at the drain limit, stopping it; what is left is counted as unread",
					"limit", limit, "queued_bytes", queued)
			case empty[i] >= idle:
				c.logger.Warn("container output open but idle after the container exited, stopping it (a leftover process holds it)",
					"idle", idle)
			default:
				continue
			}
			stopped[i] = true
			c.stopStream(l.r, queued)
		}
		if over {
			select {
			case <-ended:
				return true
			case <-time.After(drainPoll):
				c.logger.Warn("container output not drained: a log write is stuck; exit files are written first")
				return false
			}
		}
	}
}

// stopStream makes the read loop of r stop at its next read, counting
// what is left; a read end without deadlines is closed, which loses the
// queued bytes, reported here.
func (c *container) stopStream(r io.Reader, queued int) {
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		if err := d.SetReadDeadline(time.Now()); err == nil {
			return
		}
	}
	if queued > 0 {
		c.logger.Warn("container output closed with output left unread", "unread_bytes", queued)
	}
	if cl, ok := r.(io.Closer); ok {
		_ = cl.Close() // a read end: the loop then ends with os.ErrClosed
	}
}

// pipeQueued reports how many bytes wait to be read in r (FIONREAD, which
// pipes and terminals answer), and whether that could be learnt.
func pipeQueued(r io.Reader) (int, bool) {
	var (
		n   int
		err = errors.ErrUnsupported
	)
	switch f := r.(type) {
	case syscall.Conn: // an *os.File: not Fd, which would make it blocking
		rc, cerr := f.SyscallConn()
		if cerr != nil {
			return 0, false
		}
		if cerr := rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); cerr != nil {
			return 0, false
		}
	case interface{ Fd() uintptr }: // the console
		n, err = unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ)
	}
	return n, err == nil
}

// closeStreams waits for the read loops and closes the read ends.
func (c *container) closeStreams() {
	c.streams.Wait()
	for _, r := range c.readEnds {
		_ = r.Close() // read ends: their loops have ended
	}
}

// release closes what the container held: stdin, the pidfd, leaked fds,
// the log. It also stops the Input copier where it can.
func (c *container) release() {
	if dl, ok := c.req.Input.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = dl.SetReadDeadline(time.Now()) // unblock the copier
	}
	c.mu.Lock()
	if c.stdin != nil {
		_ = c.stdin.Close()
		c.stdin = nil
	}
	if c.init != nil {
		c.init.close()
	}
	c.mu.Unlock()
	for _, f := range c.leak {
		_ = f.Close()
	}
	if c.log != nil {
		if err := c.log.Close(); err != nil {
			c.logger.Warn("close container log", "error", err)
		}
	}
	// After stdin is closed, so no attach client is stuck writing to it.
	_ = c.attach.Close() // never fails
	if c.req.Input != nil && !waitTimeout(&c.input, time.Second) {
		c.logger.Warn("stdin copier still blocked reading its input; it ends at the input's next read")
	}
}

// waitTimeout waits for wg up to d and reports whether it finished. On
// timeout the helper goroutine stays until wg finishes, which the caller
// then forces (drain closes the streams).
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	ch := make(chan struct{})
	go func() {
		wg.Wait()
		close(ch)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// waitExit is the container's waiter goroutine (conmon-rs's
// wait_for_exit_code): exit → drain → OOM verdict → OOM files → exit files
// → cleanup command → release. exit comes from the one reaper; the pidfd
// only serves to signal.
//
// ctx carries the wait_for_exit_code span, which ends here; then
// Config.OnContainerExit is told.
//
// A panic after the exit was reaped must not lose the exit code, nor
// leave Wait, the container's ID and its resources hanging: it is
// recovered, logged and counted, and finishAfterPanic does the steps the
// waiter had not done yet, with what is known (the exit code and signal;
// the OOM verdict if it came).
func (m *Monitor) waitExit(ctx context.Context, c *container, exit <-chan exitEvent, oomw oomWatcher) {
	defer m.waiters.Done()
	span := trace.SpanFromContext(ctx)
	defer func() {
		span.End()
		if m.cfg.OnContainerExit != nil {
			m.cfg.OnContainerExit(c.id) // after End, so this span is included
		}
	}()
	ev := <-exit
	st := ExitStatus{Code: ev.code(), Signal: ev.signal()}
	done := waitReaped // the steps below that have finished
	defer contain.Recover(c.logger, contain.Waiter, func(p *contain.PanicError) {
		span.RecordError(p)
		span.SetStatus(codes.Error, p.Error())
		m.finishAfterPanic(c, st, done)
	})
	c.logger.InfoContext(ctx, "container exited", "pid", ev.pid, "exit_code", st.Code)

	drained := c.drainOutput(drainTimeout, drainLimit)
	span.AddEvent("output drained", trace.WithAttributes(attribute.Bool("complete", drained)))

	if oomw != nil {
		octx, ospan := m.tracer.Start(ctx, "oom_handling")
		octx, cancel := context.WithTimeout(octx, oomVerdictTimeout)
		kills := oomw.Stop(octx)
		cancel()
		// Kills known not to be the init's: its exec sessions' and those
		// it outlived. The two overlap (an exec's kill the init outlived),
		// so the larger one, never their sum: that could take the init's
		// own kill for another's.
		st.OOMKills = splitOOMKills(kills, max(c.execOOMKills.Load(), c.oomSurvived.Load()), ev)
		st.OOMKilled = st.OOMKills.Init > 0
		ospan.SetAttributes(oomAttrs(st.OOMKills)...)
		// The exec sessions' own kills were counted when they ended.
		c.metrics.addOOM(oomInit, st.OOMKills.Init)
		c.metrics.addOOM(oomOther, st.OOMKills.Other-min(c.execOOMKills.Load(), st.OOMKills.Other))
		ospan.End()
	}
	span.SetAttributes(attribute.Int("exit_code", st.Code), attribute.Int("signal", int(st.Signal)))
	span.SetAttributes(oomAttrs(st.OOMKills)...)
	reportOtherOOMKills(ctx, span, c.logger, "container", st.OOMKills)
	// The OOM files must exist before any exit file: CRI-O reacts to the
	// exit file and then looks for the OOM file.
	fctx, fspan := m.tracer.Start(ctx, "write_exit_files", trace.WithAttributes(
		attribute.StringSlice("exit_paths", c.req.ExitPaths)))
	if st.OOMKilled {
		c.logger.InfoContext(fctx, "container was OOM killed")
		for _, p := range c.req.OOMExitPaths {
			if err := writeOOMFile(p); err != nil {
				c.logger.ErrorContext(fctx, "write oom file", "path", p, "error", err)
			}
		}
	}
	var retry []string
	for i := range c.exitFiles {
		if err := c.exitFiles[i].write(st.Code); err != nil {
			c.logger.ErrorContext(fctx, "write exit file, retrying in the background", "path", c.exitFiles[i].path,
				"exit_code", st.Code, "error", err)
			retry = append(retry, c.exitFiles[i].path)
		}
	}
	if len(retry) > 0 {
		// Not here: Wait and the cleanup command must not wait for a
		// full disk to get space back.
		m.retryExitFiles(c.logger, retry, st.Code)
	}
	done = waitFilesWritten
	fspan.End()
	// A log write stuck past drainLimit: its loop was told to stop and
	// ends when the write returns; the log is closed only after that.
	c.closeStreams()
	done = waitStreamsClosed
	if len(c.req.CleanupCmd) > 0 {
		m.startCleanup(c)
	}
	done = waitCleanupStarted
	c.release()
	done = waitReleased
	c.exited(st)
	done = waitExited
	m.retire(c)
}

// waitStep is how far a waiter got, for finishAfterPanic.
type waitStep int

const (
	waitReaped         waitStep = iota // the exit is known
	waitFilesWritten                   // OOM and exit files written (or retrying)
	waitStreamsClosed                  // read loops ended, read ends closed
	waitCleanupStarted                 // the cleanup command started, if any
	waitReleased                       // stdin, pidfd, log, attach released
	waitExited                         // stateExited, Wait answered
	waitRetired                        // moved to the monitor's exited list
)

// finishAfterPanic does what a waiter that panicked after step done had
// still to do, in the waiter's order, each step guarded on its own so
// that one that panics again does not skip the others. The output gets
// drainTimeout to end before the exit files are written, then the read
// ends are closed. The OOM verdict is st's: false if it had not come.
func (m *Monitor) finishAfterPanic(c *container, st ExitStatus, done waitStep) {
	step := func(after waitStep, f func()) {
		if done >= after {
			return
		}
		defer contain.Recover(c.logger, contain.Waiter, nil)
		f()
	}
	step(waitFilesWritten, func() {
		waitTimeout(&c.streams, drainTimeout)
		if st.OOMKilled {
			for _, p := range c.req.OOMExitPaths {
				if err := writeOOMFile(p); err != nil {
					c.logger.Error("write oom file", "path", p, "error", err)
				}
			}
		}
		var retry []string
		for i := range c.exitFiles {
			if err := c.exitFiles[i].write(st.Code); err != nil {
				retry = append(retry, c.exitFiles[i].path)
			}
		}
		if len(retry) > 0 {
			m.retryExitFiles(c.logger, retry, st.Code)
		}
		c.logger.Warn("exit files written after the waiter panicked", "exit_code", st.Code,
			"oom_killed", st.OOMKilled, "retrying", len(retry))
	})
	step(waitStreamsClosed, func() {
		for _, r := range c.readEnds {
			_ = r.Close() // ends a loop still reading (os.ErrClosed)
		}
		c.closeStreams()
	})
	step(waitCleanupStarted, func() {
		if len(c.req.CleanupCmd) > 0 {
			m.startCleanup(c)
		}
	})
	step(waitReleased, c.release)
	step(waitExited, func() { c.exited(st) })
	step(waitRetired, func() { m.retire(c) })
}

// startCleanup starts the cleanup command through the reaper, detached:
// its exit is reaped and logged, nobody waits for it.
func (m *Monitor) startCleanup(c *container) {
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		c.logger.Error("start cleanup command", "error", err)
		return
	}
	defer func() { _ = devNull.Close() }()
	cmd := newCmd(c.req.CleanupCmd, m.runtimeEnv(nil))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	ch, err := m.reaper.start(cmd, true)
	if err != nil {
		c.logger.Error("start cleanup command", "cmd", c.req.CleanupCmd, "error", err)
		return
	}
	_ = ch.cmd.Process.Release() // the reaper owns its exit
	c.logger.Debug("started cleanup command", "cmd", c.req.CleanupCmd, "pid", ch.pid)
}
