package monitor

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
)

// consoleTimeout bounds the wait for the runtime to send the pty master.
// conmon-rs waits forever; a hung RPC helps nobody. A variable only so
// tests can shorten it.
var consoleTimeout = 30 * time.Second

// failedDrainTimeout bounds the wait for the output of a failed create.
const failedDrainTimeout = 2 * time.Second

// DefaultCreateTimeout bounds a runtime create that does not end by
// itself (the client's deadline does not: see CreateContainer). CRI-O gives
// up on a create after 4 minutes; kubelet's runtime request timeout is 2.
const DefaultCreateTimeout = 2 * time.Minute

// sigKill is SIGKILL as a unix.Signal.
const sigKill = unix.SIGKILL

// cleanup collects undo steps of a multi-step setup; run undoes them in
// reverse unless release was called. Registering each step as soon as its
// resource exists means a failure at any later step releases exactly what
// was acquired (docs/architecture.md, "Undo steps").
type cleanup struct{ fns []func() }

func (c *cleanup) add(f func()) { c.fns = append(c.fns, f) }
func (c *cleanup) release()     { c.fns = nil }
func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// CreateContainer creates a container with the runtime and monitors it. It
// returns the container's init PID once the runtime's create has finished
// (the container is in the runtime's "created" state; the caller starts
// it, e.g. with Start).
//
// Order: open the log drivers; set up stdio (pipes, or a console socket
// for a terminal); run `runtime create` through the reaper, with its stdio
// being the container's; read <bundle>/pidfile; subscribe to the init's
// exit and start its OOM watcher and waiter. Any failure undoes every
// earlier step: no process, goroutine, fd or socket is left.
func (m *Monitor) CreateContainer(ctx context.Context, req CreateRequest) (uint32, error) {
	if err := validateCreate(req); err != nil {
		return 0, err
	}
	// The create goes on when the client hangs up or times out (CRI-O
	// may retry and find the container): a container the runtime created
	// must be monitored, or its exit code is lost. Only Shutdown cancels.
	// A runtime that hangs is bounded by createTimeout instead.
	ctx, done, err := m.beginOp(context.WithoutCancel(ctx))
	if err != nil {
		return 0, err
	}
	defer done()
	timeout := cmp.Or(m.cfg.CreateTimeout, DefaultCreateTimeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		fmt.Errorf("runtime create did not finish within %s: %w", timeout, context.DeadlineExceeded))
	defer cancel()

	logger := m.log.With("container_id", req.ID)
	c := &container{
		id:       req.ID,
		req:      req,
		logger:   logger,
		tracer:   m.tracer,
		traceCtx: detached(ctx),
		pidfd:    -1,
		done:     make(chan struct{}),
	}
	c.attach = ioloop.NewAttachServer(ioloop.AttachOptions{Logger: logger, Stdin: containerStdin{c}})
	if err := m.reserve(c); err != nil {
		return 0, err
	}
	var undo cleanup
	defer undo.run()
	undo.add(func() { m.forget(c) })
	undo.add(func() { _ = c.attach.Close() }) // runs after the streams' undo

	c.exitFiles = reserveExitFiles(req.ExitPaths, logger)
	undo.add(func() {
		for i := range c.exitFiles {
			c.exitFiles[i].release()
		}
	})

	l, err := openLog(req.LogDrivers, req.ID, logger)
	if err != nil {
		return 0, err
	}
	c.log = l
	undo.add(func() { _ = l.Close() })

	extra, err := m.takeFDs(req.AdditionalFDs)
	if err != nil {
		return 0, err
	}
	defer closeFiles(extra) // the runtime has its copies once started
	leak, err := m.takeFDs(req.LeakFDs)
	if err != nil {
		return 0, err
	}
	c.leak = leak
	undo.add(func() { closeFiles(leak) })

	// A stale pidfile from an earlier create in this bundle must not be
	// mistaken for this one's (the runtime replaces it on success).
	if err := os.Remove(filepath.Join(req.BundlePath, "pidfile")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("remove stale pidfile: %w", err)
	}
	var pid int
	rctx, rspan := m.tracer.Start(ctx, "runtime_create", trace.WithAttributes(
		attribute.String("container_id", req.ID), attribute.String("runtime.path", m.cfg.Runtime),
		attribute.StringSlice("runtime.args", m.createArgs(req, "")), attribute.Bool("terminal", req.Terminal)))
	if req.Terminal {
		pid, err = m.createTerminal(rctx, c, extra, &undo)
	} else {
		pid, err = m.createPipes(rctx, c, extra, &undo)
	}
	rspan.SetAttributes(attribute.Int("pid", pid))
	endSpan(rspan, err)
	if err != nil && c.runtimeSpawned && !refusedByRuntime(err) {
		// The runtime may have created the container (it was killed
		// after doing so, or its pidfile was unusable): remove it, or it
		// would linger in the runtime's state, unmonitored.
		m.forceDelete(ctx, req, logger)
	}
	if err != nil {
		logger.ErrorContext(ctx, "create container", "error", err)
		return 0, err
	}

	// The init was re-parented to us when the runtime exited, and may
	// already have exited and been reaped. Note the time, then prove it
	// alive with a pidfd: an early exit reaped after this moment is its.
	openedAt := time.Now()
	pidfd, perr := unix.PidfdOpen(pid, 0)
	alive := perr == nil
	if !alive {
		pidfd = -1
		logger.Debug("container init already gone at create", "pid", pid, "error", perr)
	}
	exit := m.reaper.subscribePID(pid, openedAt, alive)
	var oomw oomWatcher
	if alive {
		if oomw, err = watchOOM(pid, logger); err != nil {
			logger.Warn("no OOM detection for container", "pid", pid, "error", err)
			oomw = nil
		}
	}
	c.created(pid, pidfd)
	// The waiter outlives this call; its span is a child of the create.
	wctx, _ := m.tracer.Start(detached(ctx), "wait_for_exit_code", trace.WithAttributes(
		attribute.String("container_id", req.ID), attribute.Int("pid", pid)))
	m.waiters.Add(1)
	go m.waitExit(wctx, c, exit, oomw)
	undo.release()
	logger.InfoContext(ctx, "container created", "pid", pid)
	return uint32(pid), nil
}

// reserve publishes c under its ID in stateCreating. An ID whose container
// is still monitored is ErrAlreadyExists; an exited one is replaced.
func (m *Monitor) reserve(c *container) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return ErrShutdown
	}
	if old, ok := m.containers[c.id]; ok {
		if st, _ := old.snapshot(); st != stateExited {
			return fmt.Errorf("container %s: %w", c.id, ErrAlreadyExists)
		}
		for i, e := range m.exited {
			if e == old {
				m.exited = append(m.exited[:i], m.exited[i+1:]...)
				break
			}
		}
	}
	m.containers[c.id] = c
	return nil
}

// openLog opens every log driver now (CRI and JSON files are created and
// truncated) and combines them. A missing journal is a warning, not an
// error: the container runs without that sink.
func openLog(drivers []LogDriver, id string, logger interface {
	Warn(string, ...any)
}) (*ioloop.Log, error) {
	var sinks []ioloop.Sink
	fail := func(err error) (*ioloop.Log, error) {
		for _, s := range sinks {
			_ = s.Close()
		}
		return nil, err
	}
	for _, d := range drivers {
		switch d.Type {
		case LogCRI, LogJSON:
			if d.Path == "" {
				return fail(fmt.Errorf("log driver without a path: %w", ErrInvalidArgument))
			}
			var s ioloop.Sink
			var err error
			if d.Type == LogCRI {
				s, err = ioloop.OpenCRILog(d.Path, d.MaxSize)
			} else {
				s, err = ioloop.OpenJSONLog(d.Path, d.MaxSize)
			}
			if err != nil {
				return fail(fmt.Errorf("open log file path '%s': %w", d.Path, err))
			}
			sinks = append(sinks, s)
		case LogJournald:
			s, err := ioloop.NewJournald(id)
			if errors.Is(err, ioloop.ErrNoJournal) {
				logger.Warn("journald log driver skipped", "error", err)
				continue
			}
			if err != nil {
				return fail(fmt.Errorf("open journald log: %w", err))
			}
			sinks = append(sinks, s)
		default:
			return fail(fmt.Errorf("unknown log driver type %d: %w", d.Type, ErrInvalidArgument))
		}
	}
	return ioloop.NewLog(sinks...), nil
}

// takeFDs takes the fds of slots out of the fd store.
func (m *Monitor) takeFDs(slots []uint64) ([]*os.File, error) {
	var files []*os.File
	for _, s := range slots {
		var f *os.File
		var err error
		if m.cfg.FDs != nil {
			f, err = m.cfg.FDs.Take(s)
		}
		if f == nil || err != nil {
			closeFiles(files)
			if err == nil {
				err = ErrNoFD
			}
			return nil, fmt.Errorf("%w %d: %w", ErrNoFD, s, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// closeFiles closes fs, ignoring errors (they are our copies).
func closeFiles(fs []*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// pipePair is one stdio pipe: the runtime's end and ours.
type pipePair struct{ theirs, ours *os.File }

// newPipe returns a pipe; forRead means we read (stdout, stderr).
func newPipe(forRead bool) (pipePair, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return pipePair{}, fmt.Errorf("create pipe: %w", err)
	}
	if forRead {
		return pipePair{theirs: w, ours: r}, nil
	}
	return pipePair{theirs: r, ours: w}, nil
}

// capture keeps what the runtime wrote to the container's stderr pipe
// while `runtime create` ran, for the error message (the pipe is both the
// runtime's stderr and the container's). It stops keeping at stop().
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

// teeFor returns the read-loop tee writers for a stream.
func teeFor(w io.Writer, more ...io.Writer) []io.Writer {
	var out []io.Writer
	if w != nil {
		out = append(out, w)
	}
	return append(out, more...)
}

// createPipes runs `runtime create` for a non-terminal container: the
// runtime's stdout, stderr (and stdin iff req.Stdin) are pipes that the
// container inherits, so the read loops start right away.
func (m *Monitor) createPipes(ctx context.Context, c *container, extra []*os.File, undo *cleanup) (int, error) {
	req := c.req
	var theirs []*os.File
	defer func() { closeFiles(theirs) }() // the runtime holds its own copies

	stdout, err := newPipe(true)
	if err != nil {
		return 0, err
	}
	theirs = append(theirs, stdout.theirs)
	stderr, err := newPipe(true)
	if err != nil {
		_ = stdout.ours.Close()
		return 0, err
	}
	theirs = append(theirs, stderr.theirs)
	c.readEnds = []io.Closer{stdout.ours, stderr.ours}
	// Undo of the read loops: once the runtime is gone, its (and the
	// failed container's) ends are closed, so the loops reach EOF; the
	// drain bound covers a straggler holding them.
	undo.add(func() { c.drain(failedDrainTimeout) })

	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	theirs = append(theirs, stdin)
	if req.Stdin {
		p, err := newPipe(false)
		if err != nil {
			return 0, err
		}
		theirs = append(theirs, p.theirs)
		stdin = p.theirs
		c.stdin = p.ours
		undo.add(c.closeStdin)
	}

	diag := &capture{}
	c.startStream(stdout.ours, ioloop.Stdout, teeFor(req.Stdout)...)
	c.startStream(stderr.ours, ioloop.Stderr, teeFor(req.Stderr, diag)...)

	cmd := m.runtimeCmd(m.createArgs(req, ""), withTraceEnv(ctx, req.Env))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout.theirs, stderr.theirs
	cmd.ExtraFiles = extra
	ch, err := m.reaper.start(cmd, false)
	if err != nil {
		return 0, fmt.Errorf("spawn child process: {}: %w", err)
	}
	c.runtimeSpawned = true
	closeFiles(theirs)
	theirs = nil

	ev, err := awaitChild(ctx, ch)
	if err == nil && ev.code() != 0 {
		// Let the read loops see everything the runtime wrote before it
		// exited; a failed create leaves nobody holding the pipes.
		waitTimeout(&c.streams, failedDrainTimeout)
		err = &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: diag.String()}
	}
	diag.stop()
	if err != nil {
		return 0, err
	}
	if req.Stdin && req.Input != nil {
		c.startInput(req.Input, c.stdin, true)
	}
	return readPIDFile(req.BundlePath)
}

// createTerminal runs `runtime create` for a terminal container: the
// runtime connects to a console socket and sends the pty master, whose one
// read loop logs everything as stdout. The runtime's own stderr goes to a
// scratch file for the error message.
func (m *Monitor) createTerminal(ctx context.Context, c *container, extra []*os.File, undo *cleanup) (int, error) {
	req := c.req
	sock, err := newConsoleSocket()
	if err != nil {
		return 0, err
	}
	defer sock.close()

	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer func() { _ = devNull.Close() }()
	errFile, err := newScratchFile()
	if err != nil {
		return 0, err
	}
	defer func() { _ = errFile.Close() }()

	cmd := m.runtimeCmd(m.createArgs(req, sock.path), withTraceEnv(ctx, req.Env))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, errFile, errFile
	cmd.ExtraFiles = extra
	ch, err := m.reaper.start(cmd, false)
	if err != nil {
		return 0, fmt.Errorf("spawn child process: {}: %w", err)
	}
	c.runtimeSpawned = true
	// From here on the runtime must be awaited on every path.
	var (
		ev      exitEvent
		exited  bool
		waitErr error
	)
	awaitRuntime := func() {
		if !exited {
			ev, waitErr = awaitChild(ctx, ch)
			exited = true
		}
	}
	defer awaitRuntime()

	bound := consoleTimeout
	deadline := time.Now().Add(bound)
	timer := time.NewTimer(bound)
	defer timer.Stop()
	var con console.Console
	select {
	case r := <-sock.accepted:
		if r.err != nil {
			return 0, fmt.Errorf("wait for terminal socket connection: %w", r.err)
		}
		con, err = receiveConsole(r.conn, deadline)
		_ = r.conn.Close() // one message per connection
		if err != nil {
			return 0, fmt.Errorf("wait for terminal socket connection: %w", err)
		}
	case e := <-ch.exit:
		_ = ch.cmd.Process.Release()
		ev, exited = e, true
		if ev.code() != 0 {
			return 0, &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: readScratch(errFile)}
		}
		return 0, errors.New("wait for terminal socket connection: runtime exited without connecting")
	case <-timer.C:
		_ = ch.cmd.Process.Kill() // awaited by the deferred awaitRuntime
		return 0, fmt.Errorf("wait for terminal socket connection: no connection within %s", bound)
	case <-ctx.Done():
		return 0, fmt.Errorf("wait for terminal socket connection: %w", context.Cause(ctx))
	}

	c.mu.Lock()
	c.console = con
	if req.Stdin {
		c.stdin = con
	}
	c.mu.Unlock()
	c.readEnds = []io.Closer{con}
	undo.add(func() {
		c.drain(failedDrainTimeout)
		c.mu.Lock()
		c.console, c.stdin = nil, nil
		c.mu.Unlock()
	})
	c.startStream(con, ioloop.Stdout, teeFor(req.Stdout)...)

	awaitRuntime()
	if waitErr != nil {
		return 0, waitErr
	}
	if ev.code() != 0 {
		return 0, &RuntimeError{Code: ev.code(), Signal: ev.signal(), Stderr: readScratch(errFile)}
	}
	if req.Stdin && req.Input != nil {
		c.startInput(req.Input, con, false)
	}
	return readPIDFile(req.BundlePath)
}

// readPIDFile reads the init PID the runtime wrote to <bundle>/pidfile.
func readPIDFile(bundle string) (int, error) {
	return readPIDPath(filepath.Join(bundle, "pidfile"))
}

// readPIDPath reads a PID the runtime wrote to the pidfile p.
func readPIDPath(p string) (int, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("grandchild pid read error %s: %w", p, err)
	}
	// conmon-rs parses without trimming; runc writes no newline, but a
	// trailing newline from another runtime is harmless.
	pid, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 31)
	if err != nil || pid == 0 {
		if err == nil {
			err = errZeroPID
		}
		return 0, fmt.Errorf("grandchild pid parse error %s: %w", p, err)
	}
	if err := checkOwnChild(int(pid)); err != nil {
		return 0, fmt.Errorf("grandchild pid %s: %w", p, err)
	}
	return int(pid), nil
}

// consoleSize is a WinSize of width columns and height rows.
func consoleSize(width, height uint16) console.WinSize {
	return console.WinSize{Width: width, Height: height}
}

// refusedByRuntime reports whether err is the runtime failing a create on
// its own: it then removed its own state, and a container of the same ID
// that it refused to replace may belong to someone else, so nothing is
// deleted. Killed by a signal (our cancellation) does not count.
func refusedByRuntime(err error) bool {
	var re *RuntimeError
	return errors.As(err, &re) && re.Signal == 0
}

// forceDelete runs `runtime delete --force <id>`, best effort, on a context
// of its own: it runs while undoing a create, possibly during Shutdown.
func (m *Monitor) forceDelete(ctx context.Context, req CreateRequest, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	args := append(m.globalArgs(req.ID, req.Cgroup, req.GlobalArgs), "delete", "--force", req.ID)
	if err := m.runRuntime(ctx, args); err != nil {
		logger.Debug("delete after failed create", "error", err)
	}
}
