package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/internal/stream"
	"github.com/gomon-dev/gomon/monitor/internal/uuid"
)

// Streaming exec: the session's Run. Same machinery as ExecSync (see
// exec.go): `runtime exec -d --pid-file=<runDir>/exec_streaming<uuid>pid`
// through the one reaper, with pipes or a console socket as the process's
// stdio; then the process is subscribed by PID and awaited. Instead of
// being collected, its output is pumped to the client as it comes, and
// the client's stdin and terminal resizes go to the process.

// streamExecRun is one streaming exec.
type streamExecRun struct {
	m       *Monitor
	req     ServeExecRequest
	sio     stream.IO
	logger  *slog.Logger
	pidfile string

	pumps    sync.WaitGroup // output pumps
	readEnds []io.Closer    // closed by finishOutput
	stdin    io.Writer      // the process's stdin: pipe or pty master; nil if none
	stdinW   *os.File       // the stdin pipe's write end (closed at stdin EOF); nil for a pty
	con      console.Console

	input     sync.WaitGroup // stdin copier and resizer
	stopInput chan struct{}  // closed by endInput
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
	id := uuid.New()
	dir := m.cfg.RunDir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("create run dir: %w", err)
	}
	x := &streamExecRun{
		m: m, req: req, sio: sio, logger: c.logger.With("exec_id", id),
		pidfile:   filepath.Join(dir, "exec_streaming"+id+"pid"),
		stopInput: make(chan struct{}),
	}
	defer func() { _ = os.Remove(x.pidfile) }() // nothing reads it afterwards
	ctx, span := m.tracer.Start(ctx, "runtime_exec", trace.WithAttributes(
		attribute.String("container_id", req.ID), attribute.String("exec_id", id),
		attribute.StringSlice("command", req.Command), attribute.Bool("terminal", req.TTY),
		attribute.Bool("streaming", true)))
	code, err := x.run(ctx)
	span.SetAttributes(attribute.Int("exit_code", code))
	endSpan(span, err)
	return code, err
}

// run executes the exec; see streamExec.
func (x *streamExecRun) run(ctx context.Context) (int, error) {
	defer x.endInput()
	var err error
	if x.req.TTY {
		err = x.startTerminal(ctx)
	} else {
		err = x.startPipes(ctx)
	}
	if err != nil {
		x.killFromPidfile()
		x.finishOutput(failedDrainTimeout)
		return 0, err
	}
	pid, err := readPIDPath(x.pidfile)
	if err != nil {
		x.finishOutput(failedDrainTimeout)
		return 0, fmt.Errorf("runtime exec left no usable pidfile: %w", err)
	}
	// As for ExecSync: note the time, prove the process alive, subscribe.
	openedAt := time.Now()
	pidfd, perr := unix.PidfdOpen(pid, 0)
	alive := perr == nil
	exit := x.m.reaper.subscribePID(pid, openedAt, alive)
	if alive {
		defer func() { _ = unix.Close(pidfd) }()
	}
	x.startInput()

	var code int
	select {
	case ev := <-exit:
		code = ev.code()
	case <-ctx.Done():
		if alive {
			// The group first (the process's children), never ours; then
			// the process by pidfd.
			if pgid, err := unix.Getpgid(pid); err == nil && pgid > 1 && pgid != unix.Getpgrp() {
				_ = unix.Kill(-pgid, unix.SIGKILL) // best effort
			}
			_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0) // ESRCH: gone already
		}
		t := time.NewTimer(execKillWait)
		select {
		case <-exit:
		case <-t.C:
			x.m.reaper.unsubscribe(pid)
			x.logger.Warn("killed streaming exec not reaped in time", "pid", pid)
		}
		t.Stop()
		x.finishOutput(failedDrainTimeout)
		return 0, fmt.Errorf("streaming exec: %w", context.Cause(ctx))
	}
	if !x.finishOutput(drainTimeout) {
		x.logger.Debug("exec output still open after the process exited; closed it", "pid", pid)
	}
	x.logger.Debug("streaming exec exited", "pid", pid, "exit_code", code)
	return code, nil
}

// execArgs is the argv (without argv[0]) of `runtime exec -d`.
func (x *streamExecRun) execArgs(consoleSock string) []string {
	return x.m.execArgs(ExecSyncRequest{ID: x.req.ID, Command: x.req.Command, Terminal: x.req.TTY, Cgroup: x.req.Cgroup},
		consoleSock, x.pidfile)
}

// spawn starts the runtime with the given stdio through the reaper, in a
// new process group as ExecSync does (a kill reaches the command's
// children, never our group).
func (x *streamExecRun) spawn(ctx context.Context, consoleSock string, stdin, stdout, stderr *os.File) (*child, error) {
	cmd := x.m.runtimeCmd(x.execArgs(consoleSock), withTraceEnv(ctx, nil))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	ch, err := x.m.reaper.start(cmd, false)
	if err != nil {
		return nil, fmt.Errorf("spawn child process: {}: %w", err)
	}
	return ch, nil
}

// startPipes runs the runtime with pipes as the process's stdio (stdin a
// pipe only when the session has stdin) and waits for the runtime. A
// failed runtime is a RuntimeError with what it wrote on stderr (which the
// client also got on its stderr stream).
func (x *streamExecRun) startPipes(ctx context.Context) error {
	var theirs []*os.File
	defer func() { closeFiles(theirs) }() // the runtime holds its own copies
	stdout, err := newPipe(true)
	if err != nil {
		return err
	}
	theirs = append(theirs, stdout.theirs)
	x.readEnds = append(x.readEnds, stdout.ours)
	stderr, err := newPipe(true)
	if err != nil {
		return err
	}
	theirs = append(theirs, stderr.theirs)
	x.readEnds = append(x.readEnds, stderr.ours)
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	theirs = append(theirs, stdin)
	if x.sio.Stdin != nil {
		p, err := newPipe(false)
		if err != nil {
			return err
		}
		theirs = append(theirs, p.theirs)
		stdin = p.theirs
		x.stdin, x.stdinW = p.ours, p.ours
	}

	diag := &capture{}
	x.startPump(stdout.ours, x.sio.Stdout, nil)
	x.startPump(stderr.ours, x.sio.Stderr, diag)
	ch, err := x.spawn(ctx, "", stdin, stdout.theirs, stderr.theirs)
	if err != nil {
		return err
	}
	closeFiles(theirs) // now only the runtime and the process hold them
	theirs = nil
	ev, err := awaitChild(ctx, ch)
	if err == nil && ev.code() != 0 {
		waitTimeout(&x.pumps, failedDrainTimeout) // let the pump see what the runtime said
		err = &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: diag.String()}
	}
	diag.stop()
	return err
}

// startTerminal runs the runtime with a console socket; the pty master it
// sends is the process's stdin and its output (all of it on stdout).
func (x *streamExecRun) startTerminal(ctx context.Context) error {
	sock, err := newConsoleSocket()
	if err != nil {
		return err
	}
	defer sock.close()
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer func() { _ = devNull.Close() }()
	errFile, err := newScratchFile()
	if err != nil {
		return err
	}
	defer func() { _ = errFile.Close() }()

	ch, err := x.spawn(ctx, sock.path, devNull, errFile, errFile)
	if err != nil {
		return err
	}
	timer := time.NewTimer(consoleTimeout)
	defer timer.Stop()
	var connectErr error
	select {
	case r := <-sock.accepted:
		if r.err != nil {
			connectErr = r.err
			break
		}
		con, err := receiveConsole(r.conn, time.Now().Add(consoleTimeout))
		_ = r.conn.Close() // one message per connection
		if err != nil {
			connectErr = err
			break
		}
		x.con = con
		x.readEnds = append(x.readEnds, con)
		if x.sio.Stdin != nil {
			x.stdin = con
		}
		x.startPump(con, x.sio.Stdout, nil)
	case ev := <-ch.exit:
		_ = ch.cmd.Process.Release()
		if ev.code() == 0 {
			return errors.New("runtime exited without connecting to the console socket")
		}
		return &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: readScratch(errFile)}
	case <-timer.C:
		_ = ch.cmd.Process.Kill() // awaited below
		connectErr = fmt.Errorf("no console connection within %s", consoleTimeout)
	case <-ctx.Done():
		// awaitChild below kills the runtime and returns the error.
	}
	ev, err := awaitChild(ctx, ch)
	switch {
	case err != nil:
		return err
	case connectErr != nil:
		return fmt.Errorf("wait for terminal socket connection: %w", connectErr)
	case ev.code() != 0:
		return &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: readScratch(errFile)}
	}
	return nil
}

// startPump copies r to w (nil: discard) until r ends, chunk by chunk,
// and keeps a copy in diag while it is collecting. When w fails (the
// client is gone) the pump keeps draining r so the process never blocks
// on a full pipe.
func (x *streamExecRun) startPump(r io.Reader, w io.Writer, diag *capture) {
	x.pumps.Add(1)
	go func() {
		defer x.pumps.Done()
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
				return // EOF, EIO from a pty whose process exited, or closed by finishOutput
			}
		}
	}()
}

// execPumpPool holds the 32 KiB buffers of output pumps.
var execPumpPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// finishOutput waits up to d for the pumps to reach EOF, then closes the
// read ends (ending pumps still blocked) and waits for them. It reports
// whether they finished on their own.
func (x *streamExecRun) finishOutput(d time.Duration) bool {
	ok := waitTimeout(&x.pumps, d)
	for _, r := range x.readEnds {
		_ = r.Close() // read ends: nothing to flush
	}
	x.pumps.Wait()
	return ok
}

// startInput copies the client's stdin to the process (a pipe is closed
// at the client's stdin EOF; a terminal stays open, as its master is also
// the output) and applies the client's terminal sizes.
func (x *streamExecRun) startInput() {
	if x.sio.Stdin != nil && x.stdin != nil {
		x.input.Add(1)
		go func() {
			defer x.input.Done()
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

// killFromPidfile kills the exec'd process when the runtime got as far as
// writing the pidfile but the exec was abandoned before it was subscribed.
func (x *streamExecRun) killFromPidfile() { killPidfileProcess(x.pidfile) }
