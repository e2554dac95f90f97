package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/uuid"
)

// Exec sync (docs/contract.md, "ExecSyncContainer").
//
// Order: `runtime exec -d --pid-file=<runDir>/exec_sync<uuid>pid <id>
// <cmd…>` runs through the one reaper (never exec.Cmd.Wait) with its stdio
// being the exec'd process's (pipes, or a console socket for a terminal),
// so the output is collected from the moment the runtime starts. When the
// runtime has exited, the exec'd process has been re-parented to us (we
// are the subreaper): read its PID from the pidfile, prove it alive with a
// pidfd, subscribe to its exit (an exit reaped before the subscription is
// kept by the reaper, as for container inits), then wait for the exit, the
// deadline or the caller. Output is never logged.
//
// Exec sessions are not registered under the container's ID (conmon-rs
// does, so an attach or resize during an exec may reach the exec); they
// are owned by the ExecSync call, which Shutdown cancels and waits for.

const (
	// execOutputLimit bounds each collected stream (CVE-2022-1708).
	execOutputLimit = 16 << 20
	// execKillWait bounds the wait for the reaper to report a killed exec
	// (a process in uninterruptible sleep dies late).
	execKillWait = 10 * time.Second
)

// execCapture keeps one exec output stream as conmon-rs does: a chunk is
// kept only while the total stays below execOutputLimit; from the first
// chunk that would reach it on, nothing more is kept (so the result is a
// prefix of the output), but the stream is still drained so the process
// never blocks on a full pipe. Only its read loop writes to it; the result
// is read after the loop ended.
type execCapture struct {
	buf     []byte
	full    bool
	dropped uint64
}

// Write keeps or counts p; it never fails.
func (b *execCapture) Write(p []byte) (int, error) {
	if !b.full && len(b.buf)+len(p) < execOutputLimit {
		b.buf = append(b.buf, p...)
	} else {
		b.full = true
		b.dropped += uint64(len(p))
	}
	return len(p), nil
}

// execRun is one ExecSync call.
type execRun struct {
	m       *Monitor
	req     ExecSyncRequest
	logger  *slog.Logger
	pidfile string

	stdout, stderr execCapture
	loops          sync.WaitGroup // read loops
	readEnds       []io.Closer    // closed by finishOutput
}

// ExecSync runs req.Command in the running container req.ID and returns
// its exit code and output (at most 16 MiB per stream; a terminal's output
// is all on Stdout, with CRLF line ends).
//
// Failures of the runtime's exec (container stopped, runc cannot start the
// command) are not errors: the result has ExitCode ExitRuntimeFailed and,
// unlike conmon-rs (which returns empty output), Stderr holds what the
// runtime said, so a caller can tell why. With TimeoutSec > 0 the process
// (and its process group) is killed TimeoutSec after the runtime's exec
// returned; the result then has TimedOut and ExitCode ExitTimedOut, and
// the process has been reaped. If the output is still held open at the
// deadline by a leftover background process, TimedOut is set too, with
// the command's own exit code (conmon-rs's "read timed out").
//
// An unknown container is a runtime failure too (ExitRuntimeFailed, the
// reason in Stderr), not an error: conmon-rs never looks the container up
// and lets the runtime fail, and CRI-O relies on that. Cancelling ctx (or Shutdown) kills
// the process, reaps it and returns the context's error.
func (m *Monitor) ExecSync(ctx context.Context, req ExecSyncRequest) (ExecSyncResult, error) {
	if len(req.Command) == 0 {
		return ExecSyncResult{}, fmt.Errorf("exec command is required: %w", ErrInvalidArgument)
	}
	c, err := m.lookup(req.ID)
	if errors.Is(err, ErrNotFound) {
		return ExecSyncResult{ExitCode: ExitRuntimeFailed, Stderr: []byte(err.Error() + "\n")}, nil
	}
	if err != nil {
		return ExecSyncResult{}, err
	}
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return ExecSyncResult{}, err
	}
	defer done()

	id := uuid.New()
	dir := m.cfg.RunDir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ExecSyncResult{}, fmt.Errorf("create run dir: %w", err)
	}
	x := &execRun{
		m: m, req: req, logger: c.logger.With("exec_id", id),
		pidfile: filepath.Join(dir, "exec_sync"+id+"pid"),
	}
	// conmon-rs never deletes exec pidfiles; nothing reads them after
	// the exec, so gomon does not let them pile up in the run dir.
	defer func() { _ = os.Remove(x.pidfile) }()
	ctx, span := m.tracer.Start(ctx, "runtime_exec", trace.WithAttributes(
		attribute.String("container_id", req.ID), attribute.String("exec_id", id),
		attribute.StringSlice("command", req.Command), attribute.Bool("terminal", req.Terminal)))
	res, err := x.run(ctx)
	span.SetAttributes(attribute.Int("exit_code", int(res.ExitCode)), attribute.Bool("timed_out", res.TimedOut),
		attribute.Int("stdout_bytes", len(res.Stdout)), attribute.Int("stderr_bytes", len(res.Stderr)))
	endSpan(span, err)
	return res, err
}

// execArgs is the argv (without argv[0]) of `runtime exec -d`.
func (m *Monitor) execArgs(req ExecSyncRequest, consoleSock, pidfile string) []string {
	args := m.globalArgs(req.ID, req.Cgroup, nil)
	args = append(args, "exec", "-d")
	if consoleSock != "" {
		args = append(args, "--console-socket="+consoleSock, "--tty")
	}
	args = append(args, "--pid-file="+pidfile, req.ID)
	return append(args, req.Command...)
}

// run executes the exec; see ExecSync.
func (x *execRun) run(ctx context.Context) (ExecSyncResult, error) {
	var (
		failed bool
		diag   string
		err    error
	)
	if x.req.Terminal {
		failed, diag, err = x.execTerminal(ctx)
	} else {
		failed, err = x.execPipes(ctx)
	}
	returnedAt := time.Now()
	if err != nil {
		x.killFromPidfile()
		x.finishOutput(failedDrainTimeout)
		return ExecSyncResult{}, err
	}
	if failed {
		x.finishOutput(failedDrainTimeout)
		if !x.req.Terminal {
			diag = string(x.stderr.buf) // the runtime's stderr is the pipe
		}
		x.logger.Debug("runtime exec failed", "stderr", diag)
		return ExecSyncResult{ExitCode: ExitRuntimeFailed, Stderr: []byte(diag)}, nil
	}
	pid, err := readPIDPath(x.pidfile)
	if err != nil {
		x.finishOutput(failedDrainTimeout)
		x.logger.Warn("runtime exec left no usable pidfile", "error", err)
		return ExecSyncResult{ExitCode: ExitRuntimeFailed, Stderr: []byte(err.Error())}, nil
	}

	// As for a container's init (CreateContainer): note the time, prove
	// the process alive, then subscribe; an exit reaped after openedAt is
	// this process's.
	openedAt := time.Now()
	pidfd, perr := unix.PidfdOpen(pid, 0)
	alive := perr == nil
	exit := x.m.reaper.subscribePID(pid, openedAt, alive)
	pgid := 0
	if alive {
		defer func() { _ = unix.Close(pidfd) }()
		if g, err := unix.Getpgid(pid); err == nil {
			pgid = g
		}
	}
	kill := func() {
		if !alive {
			return
		}
		// The group first, so children of the command die too; never our
		// own group. Then the process itself, by pidfd (no PID reuse).
		if pgid > 1 && pgid != unix.Getpgrp() {
			_ = unix.Kill(-pgid, unix.SIGKILL) // best effort
		}
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0) // ESRCH: gone already
	}

	var deadline time.Time
	var timeout <-chan time.Time
	if x.req.TimeoutSec > 0 {
		deadline = returnedAt.Add(time.Duration(x.req.TimeoutSec) * time.Second)
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	res := ExecSyncResult{}
	select {
	case ev := <-exit:
		res.ExitCode = int32(ev.code())
	case <-timeout:
		x.logger.Debug("exec timed out, killing it", "pid", pid, "timeout_sec", x.req.TimeoutSec)
		kill()
		if !x.awaitKilled(pid, exit) {
			x.logger.Warn("killed exec not reaped in time", "pid", pid)
		}
		res.TimedOut, res.ExitCode = true, ExitTimedOut
		x.finishOutput(failedDrainTimeout)
		return x.result(res), nil
	case <-ctx.Done():
		kill()
		x.awaitKilled(pid, exit)
		x.finishOutput(failedDrainTimeout)
		return ExecSyncResult{}, fmt.Errorf("exec sync: %w", context.Cause(ctx))
	}

	// The process exited; its output may still be in flight, or held open
	// by a background process it left behind. Wait for EOF, bounded.
	drain := drainTimeout
	if !deadline.IsZero() {
		drain = min(drain, max(time.Until(deadline), 0))
	}
	if !x.finishOutput(drain) {
		x.logger.Debug("exec output still open after the process exited; closed it", "pid", pid)
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			res.TimedOut = true
		}
	}
	return x.result(res), nil
}

// result fills in the collected output.
func (x *execRun) result(res ExecSyncResult) ExecSyncResult {
	res.Stdout, res.Stderr = x.stdout.buf, x.stderr.buf
	if x.stdout.full || x.stderr.full {
		x.logger.Info("exec output over the limit, kept a prefix",
			"limit", execOutputLimit, "stdout_dropped", x.stdout.dropped, "stderr_dropped", x.stderr.dropped)
	}
	return res
}

// awaitKilled waits, bounded, for the reaper to report the killed process.
// On timeout the subscription is dropped (a later exit is kept by the
// reaper for a while and then forgotten).
func (x *execRun) awaitKilled(pid int, exit <-chan exitEvent) bool {
	t := time.NewTimer(execKillWait)
	defer t.Stop()
	select {
	case <-exit:
		return true
	case <-t.C:
		x.m.reaper.unsubscribe(pid)
		return false
	}
}

// killFromPidfile kills the exec'd process, if the runtime got as far as
// writing its pidfile, when the call is abandoned before the process was
// subscribed. The reaper reaps it (as an unknown process).
func (x *execRun) killFromPidfile() { killPidfileProcess(x.pidfile) }

// killPidfileProcess SIGKILLs, by pidfd, the process a runtime named in
// the pidfile p, best effort: nothing is there when the runtime never wrote
// it or the process is gone.
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

// startLoop collects r into w until EOF.
func (x *execRun) startLoop(r io.Reader, s ioloop.Stream, w *execCapture) {
	x.loops.Add(1)
	go func() {
		defer x.loops.Done()
		stats, err := ioloop.ReadLoop(r, s, nil, x.logger, w)
		x.logger.Debug("exec read loop ended", "stream", s, "bytes", stats.Bytes, "error", err)
	}()
}

// finishOutput waits up to d for the read loops to reach EOF, then closes
// the read ends (ending loops still blocked) and waits for them. It
// reports whether they finished on their own.
func (x *execRun) finishOutput(d time.Duration) bool {
	ok := waitTimeout(&x.loops, d)
	for _, r := range x.readEnds {
		_ = r.Close() // read ends: nothing to flush
	}
	x.loops.Wait()
	return ok
}

// runtimeExecCmd builds the runtime command in a new process group: the
// exec'd process inherits it (unless it gets a terminal, which makes it a
// session leader), so a timeout kill reaches its children too, and never
// our own group.
func (x *execRun) runtimeExecCmd(ctx context.Context, consoleSock string) *exec.Cmd {
	cmd := x.m.runtimeCmd(x.m.execArgs(x.req, consoleSock, x.pidfile), withTraceEnv(ctx, x.req.Env))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// execPipes runs the runtime with pipes as the process's stdout and
// stderr (stdin is /dev/null) and waits for it. failed reports a runtime
// that exited non-zero; err a spawn failure or ctx ending.
func (x *execRun) execPipes(ctx context.Context) (failed bool, err error) {
	var theirs []*os.File
	defer func() { closeFiles(theirs) }() // the runtime holds its own copies
	stdout, err := newPipe(true)
	if err != nil {
		return false, err
	}
	theirs = append(theirs, stdout.theirs)
	x.readEnds = append(x.readEnds, stdout.ours)
	stderr, err := newPipe(true)
	if err != nil {
		return false, err
	}
	theirs = append(theirs, stderr.theirs)
	x.readEnds = append(x.readEnds, stderr.ours)
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	theirs = append(theirs, devNull)

	x.startLoop(stdout.ours, ioloop.Stdout, &x.stdout)
	x.startLoop(stderr.ours, ioloop.Stderr, &x.stderr)
	cmd := x.runtimeExecCmd(ctx, "")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, stdout.theirs, stderr.theirs
	ch, err := x.m.reaper.start(cmd, false)
	if err != nil {
		return false, fmt.Errorf("spawn child process: {}: %w", err)
	}
	closeFiles(theirs) // now only the runtime and the process hold them
	theirs = nil
	ev, err := awaitChild(ctx, ch)
	if err != nil {
		return false, err
	}
	return ev.code() != 0, nil
}

// execTerminal runs the runtime with a console socket: it sends the pty
// master, whose one read loop collects everything as stdout. The runtime's
// own stderr goes to a scratch file, returned as diag when it failed.
func (x *execRun) execTerminal(ctx context.Context) (failed bool, diag string, err error) {
	sock, err := newConsoleSocket()
	if err != nil {
		return false, "", err
	}
	defer sock.close()
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return false, "", fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer func() { _ = devNull.Close() }()
	errFile, err := newScratchFile()
	if err != nil {
		return false, "", err
	}
	defer func() { _ = errFile.Close() }()

	cmd := x.runtimeExecCmd(ctx, sock.path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, errFile, errFile
	ch, err := x.m.reaper.start(cmd, false)
	if err != nil {
		return false, "", fmt.Errorf("spawn child process: {}: %w", err)
	}
	timer := time.NewTimer(consoleTimeout)
	defer timer.Stop()
	connectErr := ""
	select {
	case r := <-sock.accepted:
		if r.err != nil {
			connectErr = r.err.Error()
			break
		}
		con, err := receiveConsole(r.conn, time.Now().Add(consoleTimeout))
		_ = r.conn.Close() // one message per connection
		if err != nil {
			connectErr = err.Error()
			break
		}
		x.readEnds = append(x.readEnds, con)
		x.startLoop(con, ioloop.Stdout, &x.stdout)
	case ev := <-ch.exit:
		_ = ch.cmd.Process.Release()
		if ev.code() == 0 {
			return true, "runtime exited without connecting to the console socket", nil
		}
		return true, readScratch(errFile), nil
	case <-timer.C:
		_ = ch.cmd.Process.Kill() // awaited below
		connectErr = fmt.Sprintf("no console connection within %s", consoleTimeout)
	case <-ctx.Done():
		// awaitChild below kills the runtime and returns the error.
	}
	ev, err := awaitChild(ctx, ch)
	switch {
	case err != nil:
		return false, "", err
	case connectErr != "":
		return true, "wait for terminal socket connection: " + connectErr, nil
	case ev.code() != 0:
		return true, readScratch(errFile), nil
	}
	return false, "", nil
}
