package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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
	c       *container
	req     ExecSyncRequest
	logger  *slog.Logger
	pidfile string

	stdout, stderr execCapture
	out            outputs // the collectors
	oomKnown       bool    // the result's OOM fields were taken
	reaped         bool    // the process's exit was received (by run's goroutine)
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
	c, _, err := m.lookup(req.ID)
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

	id, pidfile, err := m.newExecPidfile("exec_sync")
	if err != nil {
		return ExecSyncResult{}, err
	}
	defer func() { _ = os.Remove(pidfile) }()
	// A tombstone (c == nil) has no logger or identity: the runtime
	// refuses the exec.
	logger, attrs := m.log.With("container_id", req.ID), []attribute.KeyValue{attribute.String("container_id", req.ID)}
	if c != nil {
		logger, attrs = c.logger, c.attrs()
	}
	x := &execRun{m: m, c: c, req: req, logger: logger.With("exec_id", id), pidfile: pidfile}
	trace.SpanFromContext(ctx).SetAttributes(attrs...) // the exec_sync_container RPC's
	ctx, span := m.tracer.Start(ctx, "runtime_exec", trace.WithAttributes(attrs...), trace.WithAttributes(
		attribute.String("exec_id", id),
		attribute.StringSlice("command", req.Command), attribute.Bool("terminal", req.Terminal)))
	begun := time.Now()
	res, err := x.run(ctx)
	if o := execOutcomeOf(res, err); c != nil && c.metrics != nil {
		c.metrics.recordExec(o, time.Since(begun))
		if o == execRuntimeError {
			m.metrics.runtimeFailed("exec")
		}
	}
	span.SetAttributes(attribute.Int("exit_code", int(res.ExitCode)), attribute.Bool("timed_out", res.TimedOut),
		attribute.Int("stdout_bytes", len(res.Stdout)), attribute.Int("stderr_bytes", len(res.Stderr)))
	if x.oomKnown {
		span.SetAttributes(oomAttrs(res.OOMKills)...)
		reportOtherOOMKills(ctx, span, x.logger, "exec", res.OOMKills)
	}
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

// newExecPidfile returns a new exec's ID and the path of its pidfile,
// <run dir>/<kind><id>pid as conmon-rs names it, and makes sure the run dir
// exists. conmon-rs never deletes exec pidfiles; nothing reads them after
// the exec, so the caller removes it rather than let them pile up.
func (m *Monitor) newExecPidfile(kind string) (id, path string, err error) {
	id = uuid.New()
	dir := m.runDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("create run dir: %w", err)
	}
	return id, filepath.Join(dir, kind+id+"pid"), nil
}

// errExecNoPID: `runtime exec` succeeded but left no usable pidfile.
var errExecNoPID = errors.New("runtime exec left no usable pidfile")

// startExec runs `runtime exec -d` for req (its Env, TimeoutSec ignored)
// with rio as the process's stdio, in a new process group: the exec'd
// process inherits it (unless it gets a terminal, which makes it a session
// leader), so a kill reaches its children too, and never our own group.
// It returns the exec'd process, adopted. On error the output in out is
// finished (bounded) and a process the runtime may have left is killed.
func (m *Monitor) startExec(ctx context.Context, req ExecSyncRequest, pidfile string, rio *runtimeIO, out *outputs) (*proc, error) {
	cmd := m.runtimeCmd(m.execArgs(req, rio.socketPath(), pidfile), withTraceEnv(ctx, req.Env))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The runtime outlives its caller by up to execCancelGrace: killed
	// between starting the process and writing the pidfile, it would leave
	// the exec'd process running where nothing can find it (runc makes
	// that process a session leader, so no group kill reaches it). Once the
	// runtime is done the pidfile names the process, and the caller's
	// cancellation kills it through the handle (or killPidfileProcess).
	runCtx, stop := withGrace(ctx, execCancelGrace)
	defer stop()
	if err := rio.run(runCtx, m.reaper, cmd); err != nil {
		killPidfileProcess(pidfile)
		out.finish(failedDrainTimeout)
		return nil, err
	}
	pid, err := readPIDPath(pidfile)
	if err != nil {
		out.finish(failedDrainTimeout)
		return nil, fmt.Errorf("%w: %w", errExecNoPID, err)
	}
	return m.reaper.adopt(pid), nil
}

// execCancelGrace bounds how long `runtime exec` may run on after its
// caller went away (see startExec).
const execCancelGrace = 5 * time.Second

// withGrace returns a context that ends grace after ctx does, with ctx's
// cause, or when stop is called.
func withGrace(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, func() { cancel(context.Cause(ctx)) })
		context.AfterFunc(gctx, func() { t.Stop() })
	})
	return gctx, func() {
		unhook()
		cancel(context.Canceled)
	}
}

// run executes the exec; see ExecSync.
func (x *execRun) run(ctx context.Context) (ExecSyncResult, error) {
	rio, err := newRuntimeIO(x.req.Terminal, false)
	if err != nil {
		return ExecSyncResult{}, err
	}
	defer rio.close()
	if !x.req.Terminal {
		x.collect(rio.stdout, ioloop.Stdout, &x.stdout)
		x.collect(rio.stderr, ioloop.Stderr, &x.stderr)
	}
	// A terminal's output is all on stdout.
	rio.onConsole = func(con console.Console) { x.collect(con, ioloop.Stdout, &x.stdout) }
	oomc := x.c.startExecOOM()
	p, err := x.m.startExec(ctx, x.req, x.pidfile, rio, &x.out)
	returnedAt := time.Now()
	var re *RuntimeError
	switch {
	case errors.Is(err, errExecNoPID):
		x.logger.Warn("runtime exec left no usable pidfile", "error", err)
		return ExecSyncResult{ExitCode: ExitRuntimeFailed, Stderr: []byte(err.Error())}, nil
	case errors.As(err, &re) || errors.Is(err, errNoConsole):
		// A runtime failure is the result, not an error.
		diag := err.Error()
		switch {
		case re != nil && x.req.Terminal:
			diag = re.Stderr
		case re != nil:
			diag = string(x.stderr.buf) // the runtime's stderr is the pipe
		}
		x.logger.Debug("runtime exec failed", "stderr", diag)
		return ExecSyncResult{ExitCode: ExitRuntimeFailed, Stderr: []byte(diag)}, nil
	case err != nil:
		return ExecSyncResult{}, err
	}
	defer p.close()
	// A panic from here on fails the call (the RPC layer recovers it).
	returned := false
	defer abandonOnPanic(p, &x.out, &returned, &x.reaped)()
	res, err := x.wait(ctx, p, oomc, returnedAt)
	returned = true
	return res, err
}

// wait waits for the exec'd process p, which the runtime's exec left at
// returnedAt, and for its output, and judges its OOM kills from oomc;
// see ExecSync.
func (x *execRun) wait(ctx context.Context, p *proc, oomc execOOM, returnedAt time.Time) (ExecSyncResult, error) {
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
	case ev := <-p.exit:
		x.reaped = true
		res.ExitCode = int32(ev.code())
		res.OOMKills, x.oomKnown = oomc.judge(ev)
		res.OOMKilled = res.OOMKills.Init > 0
		if res.OOMKilled {
			x.logger.InfoContext(ctx, "exec process was OOM killed", "pid", p.pid)
		}
	case <-timeout:
		x.logger.Debug("exec timed out, killing it", "pid", p.pid, "timeout_sec", x.req.TimeoutSec)
		p.killGroup()
		if !p.await(execKillWait) {
			x.logger.Warn("killed exec not reaped in time", "pid", p.pid)
		}
		res.TimedOut, res.ExitCode = true, ExitTimedOut
		x.out.finish(failedDrainTimeout)
		return x.result(res), nil
	case <-ctx.Done():
		p.killGroup()
		p.await(execKillWait)
		x.out.finish(failedDrainTimeout)
		return ExecSyncResult{}, fmt.Errorf("exec sync: %w", context.Cause(ctx))
	}

	// The process exited; its output may still be in flight, or held open
	// by a background process it left behind. Wait for EOF, bounded.
	drain := drainTimeout
	if !deadline.IsZero() {
		drain = min(drain, max(time.Until(deadline), 0))
	}
	if !x.out.finish(drain) {
		x.logger.Debug("exec output still open after the process exited; closed it", "pid", p.pid)
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

// collect collects r into w until EOF.
func (x *execRun) collect(r io.ReadCloser, s ioloop.Stream, w *execCapture) {
	x.out.start(r, x.logger, func() {
		stats, err := ioloop.ReadLoop(r, s, nil, x.logger, w)
		x.logger.Debug("exec read loop ended", "stream", s, "bytes", stats.Bytes, "error", err)
	})
}
