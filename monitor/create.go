package monitor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/console"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
	"github.com/gomon-dev/gomon/monitor/internal/undo"
)

// DefaultCreateTimeout bounds a runtime create that does not end by
// itself (the client's deadline does not: see CreateContainer). CRI-O gives
// up on a create after 4 minutes; kubelet's runtime request timeout is 2.
const DefaultCreateTimeout = 2 * time.Minute

// sigKill is SIGKILL as a unix.Signal.
const sigKill = unix.SIGKILL

// cleanupTimeout bounds the `runtime delete --force` after a failed create.
const cleanupTimeout = 10 * time.Second

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
func (m *Monitor) CreateContainer(ctx context.Context, req CreateRequest) (_ uint32, err error) {
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
	begun := time.Now()
	defer func() { m.metrics.recordCreate(time.Since(begun), err) }()
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
		done:     make(chan struct{}),
	}
	// Read before the container is published: CollectMetrics reads its
	// labels from then on.
	c.identity, c.settings = readBundle(req.BundlePath, logger)
	c.attrSet = identityAttrs(req.ID, c.identity)
	// The caller's span (the create_container RPC) gets them too.
	trace.SpanFromContext(ctx).SetAttributes(c.attrSet...)
	if m.metrics != nil {
		c.metrics = newContainerMetrics(req.ID, c.identity)
	}
	c.attach = ioloop.NewAttachServer(ioloop.AttachOptions{Logger: logger, Stdin: containerStdin{c}})
	if err := m.reserve(c); err != nil {
		return 0, err
	}
	var undo undo.Stack
	defer undo.Run()
	undo.Add(func() { m.forget(c) })
	undo.Add(func() { _ = c.attach.Close() }) // runs after the streams' undo

	c.exitFiles = reserveExitFiles(req.ExitPaths, logger)
	undo.Add(func() {
		for i := range c.exitFiles {
			c.exitFiles[i].release()
		}
	})

	l, err := openLog(req.LogDrivers, journalFields(req.ID, c.identity, c.settings),
		ioloop.LogOptions{MaxLine: m.cfg.LogMaxLine}, false, logger)
	if err != nil {
		return 0, err
	}
	c.log = l
	undo.Add(func() { _ = l.Close() })
	c.setRateLimit(m.logRateLimit(c.settings, logger))

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
	undo.Add(func() { closeFiles(leak) })

	// A stale pidfile from an earlier create in this bundle must not be
	// mistaken for this one's (the runtime replaces it on success).
	if err := os.Remove(bundlePidfile(req.BundlePath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("remove stale pidfile: %w", err)
	}
	var pid int
	rctx, rspan := m.tracer.Start(ctx, "runtime_create", trace.WithAttributes(c.attrs()...), trace.WithAttributes(
		attribute.String("runtime.path", m.cfg.Runtime),
		attribute.StringSlice("runtime.args", m.createArgs(req, "")), attribute.Bool("terminal", req.Terminal)))
	pid, err = m.runCreate(rctx, c, extra, &undo)
	rspan.SetAttributes(attribute.Int("pid", pid))
	endSpan(rspan, err)
	if err != nil && c.runtimeSpawned && !refusedByRuntime(err) {
		// The runtime may have created the container (it was killed
		// after doing so, or its pidfile was unusable): remove it, or it
		// would linger in the runtime's state, unmonitored.
		m.forceDelete(ctx, req, logger)
	}
	if err != nil {
		if c.runtimeSpawned {
			m.metrics.runtimeFailed("create")
		}
		logger.ErrorContext(ctx, "create container", "error", err)
		return 0, err
	}
	// The runtime created the container. No error return follows, but a
	// panic before the waiter owns it (the RPC layer recovers it) must not
	// leave it in the runtime's state, unmonitored: this undo step, run
	// first, removes it (docs/reliability.md, "Panics").
	undo.Add(func() { m.forceDelete(ctx, req, logger) })

	// The init was re-parented to us when the runtime exited, and may
	// already have exited and been reaped. Note the time, then prove it
	// alive with a pidfd: an early exit reaped after this moment is its.
	initProc := m.reaper.adopt(pid)
	var oomw oomWatcher
	if initProc.alive() {
		if oomw, err = m.oomWatch(pid, logger); err != nil {
			logger.Warn("no OOM detection for container", "pid", pid, "error", err)
			oomw = nil
		}
	} else {
		logger.Debug("container init already gone at create", "pid", pid)
	}
	c.created(initProc, oomw)
	// The waiter outlives this call; its span is a child of the create.
	wctx, _ := m.tracer.Start(detached(ctx), "wait_for_exit_code", trace.WithAttributes(c.attrs()...),
		trace.WithAttributes(attribute.Int("pid", pid)))
	m.waiters.Add(1)
	go m.waitExit(wctx, c, initProc.exit, oomw)
	undo.Release()
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
		// Exited but not retired yet: its waiter's retire finds it
		// replaced and leaves no tombstone.
	}
	if t := m.tombs[c.id]; t != nil {
		m.dropTomb(t)
	}
	m.gen++
	c.gen = m.gen
	m.containers[c.id] = c
	m.namePod(c.identity)
	return nil
}

// namePod takes the pod's identity from id, a container's, unless the
// pod is named already or id names no pod. Call with mu held.
func (m *Monitor) namePod(id bundle.Identity) {
	if m.podIdentity.PodUID == "" && id.PodUID != "" {
		m.podIdentity = id
		m.podIdentity.ContainerName = ""
	}
}

// logTagSetting is the container setting (annotation io.gomon.log.tag)
// whose value becomes its journal entries' CONTAINER_TAG and
// SYSLOG_IDENTIFIER.
const logTagSetting = "log.tag"

// journalFields are the fields of the container's journal entries: its
// ID, its and its pod's Kubernetes names, its tag.
func journalFields(id string, who bundle.Identity, settings map[string]string) ioloop.JournalFields {
	return ioloop.JournalFields{
		ContainerID:   id,
		ContainerName: who.ContainerName,
		Tag:           settings[logTagSetting],
		PodName:       who.PodName,
		PodNamespace:  who.PodNamespace,
		PodUID:        who.PodUID,
	}
}

// openLog opens every log driver now (CRI and JSON files are created and
// truncated) and combines them. A missing journal is a warning, not an
// error: the container runs without that sink.
func openLog(drivers []LogDriver, jf ioloop.JournalFields, opts ioloop.LogOptions, keep bool, logger interface {
	Warn(string, ...any)
},
) (*ioloop.Log, error) {
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
			switch {
			case d.Type == LogCRI && keep:
				s, err = ioloop.AppendCRILog(d.Path, d.MaxSize)
			case d.Type == LogCRI:
				s, err = ioloop.OpenCRILog(d.Path, d.MaxSize)
			case keep:
				s, err = ioloop.AppendJSONLog(d.Path, d.MaxSize)
			default:
				s, err = ioloop.OpenJSONLog(d.Path, d.MaxSize)
			}
			if err != nil {
				return fail(fmt.Errorf("open log file path '%s': %w", d.Path, err))
			}
			sinks = append(sinks, s)
		case LogJournald:
			s, err := ioloop.NewJournaldWith(jf)
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
	return ioloop.NewLogWith(opts, sinks...), nil
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

// teeFor returns the read-loop tee writers for a stream.
func teeFor(w io.Writer, more ...io.Writer) []io.Writer {
	var out []io.Writer
	if w != nil {
		out = append(out, w)
	}
	return append(out, more...)
}

// runCreate runs `runtime create` with the container's stdio (see
// runtimeIO): without a terminal, the read loops start on the pipes right
// away; with one, the pty master's one read loop logs everything as
// stdout, and the master is the container's stdin when it has one.
func (m *Monitor) runCreate(ctx context.Context, c *container, extra []*os.File, undo *undo.Stack) (int, error) {
	req := c.req
	rio, err := newRuntimeIO(req.Terminal, req.Stdin)
	if err != nil {
		return 0, err
	}
	defer rio.close()
	var stdin io.WriteCloser // what Input is copied to
	if !req.Terminal {
		c.readEnds = []io.Closer{rio.stdout, rio.stderr}
		// Undo of the read loops: once the runtime is gone, its (and the
		// failed container's) ends are closed, so the loops reach EOF; the
		// drain bound covers a straggler holding them.
		undo.Add(func() { c.drain(failedDrainTimeout) })
		if rio.stdinW != nil {
			c.stdin, stdin = rio.stdinW, rio.stdinW
			undo.Add(c.closeStdin)
		}
		c.startStream(rio.stdout, ioloop.Stdout, teeFor(req.Stdout)...)
		c.startStream(rio.stderr, ioloop.Stderr, teeFor(req.Stderr, rio.diag)...)
		rio.readers = &c.streams
	}
	rio.onConsole = func(con console.Console) {
		c.mu.Lock()
		c.console, stdin = con, con
		if req.Stdin {
			c.stdin = con
		}
		c.mu.Unlock()
		c.readEnds = []io.Closer{con}
		undo.Add(func() {
			c.drain(failedDrainTimeout)
			c.mu.Lock()
			c.console, c.stdin = nil, nil
			c.mu.Unlock()
		})
		c.startStream(con, ioloop.Stdout, teeFor(req.Stdout)...)
	}
	cmd := m.runtimeCmd(m.createArgs(req, rio.socketPath()), withTraceEnv(ctx, req.Env))
	cmd.ExtraFiles = extra
	err = rio.run(ctx, m.reaper, cmd)
	c.runtimeSpawned = rio.spawned
	if err != nil {
		return 0, err
	}
	if req.Stdin && req.Input != nil {
		c.startInput(req.Input, stdin, !req.Terminal)
	}
	return readPIDFile(req.BundlePath)
}

// bundlePidfile is where `runtime create` writes the container's init PID,
// <bundle>/pidfile, as conmon-rs asks it to; CRI-O reads it there too.
func bundlePidfile(bundle string) string { return filepath.Join(bundle, "pidfile") }

// readPIDFile reads the init PID the runtime wrote to bundlePidfile.
func readPIDFile(bundle string) (int, error) {
	return readPIDPath(bundlePidfile(bundle))
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

// gomonAnnotationPrefix names the bundle annotations that tune gomon for
// one container (e.g. io.gomon.log.rate-limit); they are kept without it.
const gomonAnnotationPrefix = "io.gomon."

// readBundle reads the container's Kubernetes identity and its gomon
// settings from its bundle's annotations, once. A config that cannot be
// read leaves both empty: the runtime reports a broken bundle, and the
// monitor works without them.
func readBundle(dir string, logger *slog.Logger) (bundle.Identity, map[string]string) {
	ann, err := bundle.ReadAnnotations(dir)
	if err != nil {
		logger.Warn("bundle annotations unreadable, going on without them", "error", err)
		return bundle.Identity{}, nil
	}
	return bundle.IdentityOf(ann), bundle.WithPrefix(ann, gomonAnnotationPrefix)
}
