package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/containerd/console"

	"github.com/gomon-dev/gomon/internal/contain"
)

// The one stdio seam of the runtime processes that start something we
// monitor: `runtime create` (a container's init) and `runtime exec -d` (an
// exec'd process, sync or streaming). Such a runtime hands its own stdio
// down to the process it starts, so deciding the runtime's stdio decides
// the process's:
//
//   - without a terminal, stdout and stderr are pipes whose read ends are
//     ours, and stdin is a pipe when the caller wants one, else /dev/null.
//     The caller starts its readers before the runtime runs, so nothing
//     the process writes early is missed; what the runtime itself writes
//     on stderr is kept (bounded) for its error.
//   - with a terminal, the runtime gets /dev/null as stdin, one scratch
//     file as stdout and stderr (read for its error), and a console socket
//     on which it sends the pty master: the process's stdin and its only
//     output.
//
// runtimeIO.run spawns the runtime through the reaper and waits for it:
// for the console (terminal), then for the runtime's exit, bounded by
// consoleTimeout and by ctx. A runtime that exits non-zero is a
// *RuntimeError; a terminal that never arrives wraps errNoConsole.

// consoleTimeout bounds the wait for the runtime to send the pty master.
// conmon-rs waits forever; a hung RPC helps nobody. A variable only so
// tests can shorten it.
var consoleTimeout = 30 * time.Second

// failedDrainTimeout bounds the wait for the output of a failed runtime.
const failedDrainTimeout = 2 * time.Second

// errNoConsole: the runtime did not hand over the terminal (it exited
// without connecting, or the connection or its message failed, or it did
// not come within consoleTimeout).
var errNoConsole = errors.New("wait for terminal socket connection")

// runtimeIO is the stdio of one runtime process; see the comment above.
//
// Ownership: newRuntimeIO opens everything; the caller owns stdout,
// stderr, stdinW and (once delivered to onConsole) the console; the
// runtime's ends, the console socket and the scratch file stay with the
// runtimeIO and are closed by close, which every caller defers.
type runtimeIO struct {
	// Our ends, without a terminal: the read ends of stdout and stderr and
	// the write end of stdin (nil unless asked for).
	stdout, stderr, stdinW *os.File
	// diag keeps what the runtime writes on stderr until run returns; the
	// caller tees the stderr reader into it. Nil with a terminal.
	diag *capture

	// readers, if set, are the caller's readers of stdout and stderr: a
	// failed runtime's error waits (bounded) for them to see its output.
	readers *sync.WaitGroup
	// onConsole receives the pty master as soon as it arrives, before the
	// runtime has exited; the caller owns it from then on.
	onConsole func(console.Console)
	// spawned is set once the runtime was started.
	spawned bool

	theirs  []*os.File     // the runtime's stdin, stdout, stderr
	sock    *consoleSocket // terminal only
	errFile *os.File       // terminal only: the runtime's stdout and stderr
}

// newRuntimeIO prepares the runtime's stdio: a console socket when
// terminal, else pipes (with a stdin pipe when stdin). On error nothing is
// left open.
func newRuntimeIO(terminal, stdin bool) (_ *runtimeIO, err error) {
	// The cleanup uses its own variable: every error return sets the
	// result to nil before deferred calls run.
	rio := &runtimeIO{}
	defer func() {
		if err != nil {
			rio.close()
			closeFiles([]*os.File{rio.stdout, rio.stderr, rio.stdinW})
		}
	}()
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	rio.theirs = append(rio.theirs, devNull)
	if terminal {
		if rio.errFile, err = newScratchFile(); err != nil {
			return nil, err
		}
		rio.theirs = append(rio.theirs, rio.errFile, rio.errFile)
		rio.sock, err = newConsoleSocket()
		return rio, err
	}
	if stdin {
		var r *os.File
		if r, rio.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("create pipe: %w", err)
		}
		rio.theirs[0] = r
		_ = devNull.Close()
	}
	for _, ours := range []**os.File{&rio.stdout, &rio.stderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("create pipe: %w", err)
		}
		*ours = r
		rio.theirs = append(rio.theirs, w)
	}
	rio.diag = &capture{}
	return rio, nil
}

// socketPath is the --console-socket argument, or "" without a terminal.
func (rio *runtimeIO) socketPath() string {
	if rio.sock == nil {
		return ""
	}
	return rio.sock.path
}

// close releases what the runtimeIO keeps (not the caller's ends). It is
// idempotent.
func (rio *runtimeIO) close() {
	if rio.diag != nil {
		rio.diag.stop()
	}
	if rio.sock != nil {
		rio.sock.close()
	}
	for _, f := range rio.theirs {
		if f != nil {
			_ = f.Close() // a second close of errFile only fails
		}
	}
	rio.theirs = nil
}

// run starts cmd (built without stdio) through the reaper with the
// prepared stdio and waits for it; see the comment at the top of the file.
// ctx ending kills the runtime, which is still awaited.
func (rio *runtimeIO) run(ctx context.Context, r *reaper, cmd *exec.Cmd) error {
	defer rio.close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = rio.theirs[0], rio.theirs[1], rio.theirs[2]
	ch, err := r.start(cmd, false)
	if err != nil {
		// The literal "{}" is in conmon-rs's message (a placeholder its
		// format string never fills); clients may match that text.
		return fmt.Errorf("spawn child process: {}: %w", err)
	}
	rio.spawned = true
	for _, f := range rio.theirs[:3] {
		if f != rio.errFile {
			_ = f.Close() // now only the runtime (and the process) hold them
		}
	}
	rio.theirs = []*os.File{rio.errFile}

	var connectErr error
	if rio.sock != nil {
		var exited bool
		if exited, connectErr = rio.awaitConsole(ctx, ch); exited {
			return connectErr
		}
	}
	ev, err := awaitChild(ctx, ch)
	switch {
	case err != nil:
		return err
	case connectErr != nil:
		return connectErr
	case ev.code() != 0:
		return rio.failed(ev)
	}
	return nil
}

// awaitConsole waits for the runtime to send the pty master and hands it
// to onConsole. exited reports that the runtime exited first (err is then
// the whole outcome); otherwise the runtime is still to be awaited, and
// err, if any, wraps errNoConsole. On timeout the runtime is killed.
func (rio *runtimeIO) awaitConsole(ctx context.Context, ch *child) (exited bool, err error) {
	timer := time.NewTimer(consoleTimeout)
	defer timer.Stop()
	select {
	case a := <-rio.sock.accepted:
		if a.err != nil {
			return false, fmt.Errorf("%w: %w", errNoConsole, a.err)
		}
		con, err := receiveConsole(a.conn, time.Now().Add(consoleTimeout))
		_ = a.conn.Close() // one message per connection
		if err != nil {
			return false, fmt.Errorf("%w: %w", errNoConsole, err)
		}
		rio.onConsole(con)
		return false, nil
	case ev := <-ch.exit:
		_ = ch.cmd.Process.Release()
		if ev.code() == 0 {
			return true, fmt.Errorf("%w: runtime exited without connecting to the console socket", errNoConsole)
		}
		return true, rio.failed(ev)
	case <-timer.C:
		_ = ch.cmd.Process.Kill() // awaited by the caller
		return false, fmt.Errorf("%w: no connection within %s", errNoConsole, consoleTimeout)
	case <-ctx.Done():
		return false, nil // the caller's awaitChild kills the runtime
	}
}

// failed is the error of a runtime that exited with ev, with what it said
// on stderr (after its readers saw all of it, bounded).
func (rio *runtimeIO) failed(ev exitEvent) *RuntimeError {
	var said string
	if rio.errFile != nil {
		said = readScratch(rio.errFile)
	} else {
		if rio.readers != nil {
			waitTimeout(rio.readers, failedDrainTimeout)
		}
		said = rio.diag.String()
	}
	return runtimeFailure(ev, said)
}

// runtimeFailure is the error of a runtime that exited with ev after
// saying stderr: the one way a *RuntimeError is built.
func runtimeFailure(ev exitEvent, stderr string) *RuntimeError {
	return &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: stderr}
}

// capture keeps what the runtime writes on a stderr pipe while it runs,
// for the error message (the pipe is both the runtime's stderr and the
// process's). It stops keeping at stop.
type capture struct {
	mu   sync.Mutex
	buf  bytes.Buffer // guarded by mu
	done bool         // guarded by mu
}

// Write keeps p until stop or the bound is reached; it never fails.
func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done && c.buf.Len() < maxRuntimeStderr {
		c.buf.Write(p[:min(len(p), maxRuntimeStderr-c.buf.Len())])
	}
	return len(p), nil
}

func (c *capture) stop() {
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.buf.String())
}

// closeFiles closes fs, ignoring errors (they are our copies) and nils.
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

// outputs are the read ends of a process's output and the goroutines
// reading them (an exec's collectors or pumps).
type outputs struct {
	loops sync.WaitGroup
	ends  []io.Closer
}

// start runs read in a goroutine over the read end r until it returns. A
// panic in read is recovered and logged on log; the rest of r is then read
// and discarded, so the process never blocks on a full pipe and finish
// still ends.
func (o *outputs) start(r io.ReadCloser, log *slog.Logger, read func()) {
	o.ends = append(o.ends, r)
	o.loops.Go(func() {
		defer contain.Recover(log, contain.ReadLoop, func(*contain.PanicError) { discard(r) })
		read()
	})
}

// discard reads r to its end (EOF, or the error of a closed read end or
// an expired read deadline) and returns how many bytes it dropped. It is
// what is left of a read loop that panicked: the writer must never block.
func discard(r io.Reader) uint64 {
	var buf [32 << 10]byte
	var n uint64
	for {
		m, err := r.Read(buf[:])
		n += uint64(max(m, 0))
		if err != nil {
			return n
		}
	}
}

// finish waits up to d for the readers to reach EOF, then closes the read
// ends (ending readers still blocked) and waits for them. It reports
// whether they finished on their own.
func (o *outputs) finish(d time.Duration) bool {
	ok := waitTimeout(&o.loops, d)
	for _, r := range o.ends {
		_ = r.Close() // read ends: nothing to flush
	}
	o.loops.Wait()
	return ok
}
