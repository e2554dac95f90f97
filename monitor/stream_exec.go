package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/monitor/internal/stream"
)

// Streaming exec: the session's Run. Same machinery as ExecSync (startExec
// in exec.go): `runtime exec -d --pid-file=<runDir>/exec_streaming<uuid>pid`
// through the one reaper, with pipes or a console socket as the process's
// stdio (runtimeIO); then the process is adopted by PID and awaited (proc). Instead of
// being collected, its output is pumped to the client as it comes, and
// the client's stdin and terminal resizes go to the process.

// streamExecRun is one streaming exec.
type streamExecRun struct {
	m       *Monitor
	c       *container
	req     ServeExecRequest
	sio     stream.IO
	logger  *slog.Logger
	pidfile string

	out    outputs   // output pumps
	stdin  io.Writer // the process's stdin: pipe or pty master; nil if none
	stdinW *os.File  // the stdin pipe's write end (closed at stdin EOF); nil for a pty
	con    console.Console

	input     sync.WaitGroup // stdin copier and resizer
	stopInput chan struct{}  // closed by endInput

	oomKills OOMKills // the process's OOM verdict, when oomKnown
	oomKnown bool
	reaped   bool // the process's exit was received (by run's goroutine)
}

// streamExec runs one streaming exec of req once its client connected. It
// returns the command's exit code; ctx ending (client gone, Shutdown)
// kills the command.
func (m *Monitor) streamExec(ctx context.Context, req ServeExecRequest, sio stream.IO) (int, error) {
	c, err := m.running(req.ID)
	if err != nil {
		return 0, err
	}
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	id, pidfile, err := m.newExecPidfile("exec_streaming")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.Remove(pidfile) }()
	x := &streamExecRun{
		m: m, c: c, req: req, sio: sio, logger: c.logger.With("exec_id", id),
		pidfile: pidfile, stopInput: make(chan struct{}),
	}
	ctx, span := m.tracer.Start(ctx, "runtime_exec", trace.WithAttributes(c.attrs()...), trace.WithAttributes(
		attribute.String("exec_id", id),
		attribute.StringSlice("command", req.Command), attribute.Bool("terminal", req.TTY),
		attribute.Bool("streaming", true)))
	code, err := x.run(ctx)
	span.SetAttributes(attribute.Int("exit_code", code))
	if x.oomKnown {
		span.SetAttributes(oomAttrs(x.oomKills)...)
		reportOtherOOMKills(ctx, span, x.logger, "exec", x.oomKills)
	}
	endSpan(span, err)
	return code, err
}

// run executes the exec; see streamExec.
func (x *streamExecRun) run(ctx context.Context) (int, error) {
	defer x.endInput()
	rio, err := newRuntimeIO(x.req.TTY, x.sio.Stdin != nil)
	if err != nil {
		return 0, err
	}
	defer rio.close()
	if !x.req.TTY {
		if rio.stdinW != nil {
			x.stdin, x.stdinW = rio.stdinW, rio.stdinW
		}
		// A failed runtime's error has what it wrote on stderr (which the
		// client also got on its stderr stream).
		x.startPump(rio.stdout, x.sio.Stdout, nil)
		x.startPump(rio.stderr, x.sio.Stderr, rio.diag)
		rio.readers = &x.out.loops
	}
	// The pty master is the process's stdin and its output (all of it on
	// stdout).
	rio.onConsole = func(con console.Console) {
		x.con = con
		if x.sio.Stdin != nil {
			x.stdin = con
		}
		x.startPump(con, x.sio.Stdout, nil)
	}
	req := ExecSyncRequest{ID: x.req.ID, Command: x.req.Command, Terminal: x.req.TTY, Cgroup: x.req.Cgroup}
	oomc := x.c.startExecOOM()
	p, err := x.m.startExec(ctx, req, x.pidfile, rio, &x.out)
	if err != nil {
		return 0, err
	}
	defer p.close()
	// A panic from here on ends the session (the streaming server
	// recovers it).
	returned := false
	defer abandonOnPanic(p, &x.out, &returned, &x.reaped)()
	code, err := x.wait(ctx, p, oomc)
	returned = true
	return code, err
}

// wait waits for the exec'd process p and its output, and judges its OOM
// kills from oomc; see streamExec.
func (x *streamExecRun) wait(ctx context.Context, p *proc, oomc execOOM) (int, error) {
	x.startInput()

	var code int
	select {
	case ev := <-p.exit:
		x.reaped = true
		code = ev.code()
		x.oomKills, x.oomKnown = oomc.judge(ev)
		if x.oomKills.Init > 0 {
			x.logger.InfoContext(ctx, "streaming exec process was OOM killed", "pid", p.pid)
		}
	case <-ctx.Done():
		p.killGroup()
		if !p.await(execKillWait) {
			x.logger.Warn("killed streaming exec not reaped in time", "pid", p.pid)
		}
		x.out.finish(failedDrainTimeout)
		return 0, fmt.Errorf("streaming exec: %w", context.Cause(ctx))
	}
	if !x.out.finish(drainTimeout) {
		x.logger.Debug("exec output still open after the process exited; closed it", "pid", p.pid)
	}
	x.logger.Debug("streaming exec exited", "pid", p.pid, "exit_code", code)
	return code, nil
}

// startPump copies r to w (nil: discard) until r ends, chunk by chunk,
// and keeps a copy in diag while it is collecting. When w fails (the
// client is gone) the pump keeps draining r so the process never blocks
// on a full pipe.
func (x *streamExecRun) startPump(r io.ReadCloser, w io.Writer, diag *capture) {
	x.out.start(r, x.logger, func() {
		bp := execPumpPool.Get().(*[]byte)
		defer execPumpPool.Put(bp)
		buf := *bp
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if diag != nil {
					_, _ = diag.Write(buf[:n]) // never fails
				}
				if w != nil {
					if _, werr := w.Write(buf[:n]); werr != nil {
						x.logger.Debug("streaming client not writable, discarding exec output", "error", werr)
						w = nil
					}
				}
			}
			if err != nil {
				return // EOF, EIO from a pty whose process exited, or closed by finish
			}
		}
	})
}

// execPumpPool holds the 32 KiB buffers of output pumps.
var execPumpPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// startInput copies the client's stdin to the process (a pipe is closed
// at the client's stdin EOF; a terminal stays open, as its master is also
// the output) and applies the client's terminal sizes.
func (x *streamExecRun) startInput() {
	if x.sio.Stdin != nil && x.stdin != nil {
		x.input.Add(1)
		go func() {
			defer x.input.Done()
			defer contain.Recover(x.logger, contain.Stream, func(*contain.PanicError) {
				if x.stdinW != nil {
					_ = x.stdinW.Close() // EOF for the process
				}
			})
			_, err := io.Copy(x.stdin, x.sio.Stdin)
			if err != nil && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, os.ErrClosed) {
				x.logger.Debug("copy to exec stdin ended", "error", err)
			}
			if x.stdinW != nil {
				_ = x.stdinW.Close() // EOF for the process
			}
		}()
	}
	if x.con != nil && x.sio.Resize != nil {
		x.input.Add(1)
		go func() {
			defer x.input.Done()
			defer contain.Recover(x.logger, contain.Stream, nil) // no more resizes for this session
			for {
				select {
				case sz := <-x.sio.Resize:
					if err := x.con.Resize(consoleSize(sz.Width, sz.Height)); err != nil {
						x.logger.Debug("resize exec terminal", "error", err)
					}
				case <-x.stopInput:
					return
				}
			}
		}()
	}
}

// endInput stops the stdin copier and the resizer and waits for them.
func (x *streamExecRun) endInput() {
	close(x.stopInput)
	if x.sio.Stdin != nil {
		_ = x.sio.Stdin.Close() // ends a pending read of the client's stdin
	}
	if x.stdinW != nil {
		_ = x.stdinW.Close() // ends a write blocked on a process not reading
	}
	x.input.Wait()
}
