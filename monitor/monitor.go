// Package monitor is gomon's embeddable engine: one Monitor per pod runs
// containers through an OCI runtime, holds their stdio, reaps them and writes
// their exit files. It knows nothing of Cap'n Proto; package rpc adapts it.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
	"github.com/gomon-dev/gomon/monitor/internal/oom"
)

// Config configures a Monitor.
type Config struct {
	Runtime     string       // path of the OCI runtime binary (runc, crun)
	RuntimeRoot string       // passed as --root=; empty for the runtime's default
	RunDir      string       // state directory: exec pidfiles and sockets; "" is os.TempDir()
	LogLevel    slog.Level   // the server's log level; mapped to crun's --log-level
	Logger      *slog.Logger // nil discards
	Env         []string     // base environment of runtime processes; nil = os.Environ()
	// FDs serves CreateRequest.AdditionalFDs and LeakFDs; nil means the
	// monitor's own fd socket (StartFdSocket).
	FDs FDSource
	// PauseBinary is the gomon executable that CreateNamespaces re-runs
	// as `gomon pause`; empty means this process's own executable, whose
	// main must then dispatch "pause" to PauseMain.
	PauseBinary string
	// CreateTimeout bounds a runtime create (0: DefaultCreateTimeout).
	// The caller's context does not cancel a create: see CreateContainer.
	CreateTimeout time.Duration
	// LogRateLimit is the node's default log rate limit for every
	// container (zero: none); a container's bundle annotations
	// io.gomon.log.rate-limit, io.gomon.log.rate-burst and
	// io.gomon.log.rate-policy override it (see logRateLimit). Exec
	// sessions and attach clients are never limited.
	LogRateLimit ioloop.RateLimit
	// TracerProvider makes the monitor's spans; nil means the global one
	// (a no-op unless package exporter installed an SDK).
	TracerProvider trace.TracerProvider
	// OnContainerExit, if set, is called with a container's ID once its
	// exit is recorded: exit files written, its read_loop and
	// wait_for_exit_code spans ended. It runs on the container's waiter
	// goroutine and must not block. The daemon uses it to export the
	// container's spans at once: the kubelet may SIGKILL every process in
	// the pod's cgroup a second or two after the last container stops.
	OnContainerExit func(id string)
	// Metrics makes the monitor record metrics for CollectMetrics
	// (metrics.go); without it none are kept and recording costs nothing.
	Metrics bool
	// LogMaxLine > 0 joins a line that the container wrote over several
	// reads into one record of up to LogMaxLine bytes in its CRI and JSON
	// logs (and one journald entry), cutting only longer lines; 0 writes
	// each read's trailing piece as its own partial record, as conmon-rs
	// does. It costs up to LogMaxLine bytes per stream of a container in
	// the middle of a long line. See ioloop.LogOptions.MaxLine.
	LogMaxLine int
}

// maxExited bounds how many exited containers are remembered (as
// tombstones) for late calls such as Wait.
const maxExited = 256

// Monitor monitors the containers of one pod.
//
// New makes the whole process a child subreaper and shares the process's
// single reaper goroutine (see reaper_linux.go); nothing else in the
// process may wait for children while a Monitor lives.
type Monitor struct {
	cfg    Config
	log    *slog.Logger
	reaper *reaper
	tracer trace.Tracer
	// metrics are the monitor-level instruments; nil unless
	// Config.Metrics.
	metrics *monitorMetrics

	// waiters holds one waitExit goroutine per running container.
	waiters sync.WaitGroup
	// ops counts CreateContainer, Start and Delete calls in flight;
	// Shutdown cancels them through opCtx and waits for them.
	ops       sync.WaitGroup
	opCtx     context.Context
	cancelOps context.CancelFunc

	// retries holds the goroutines retrying exit files that could not
	// be written (retryExitFiles); stopRetries makes them try a last time.
	retries     sync.WaitGroup
	stopRetries chan struct{}

	shutdownOnce sync.Once
	closed       chan struct{} // closed when Shutdown has finished

	// mu guards the fields below. Lock order: mu before container.mu.
	mu sync.Mutex
	// containers maps IDs to containers in stateCreating or stateRunning,
	// and to exited ones until their waiter retires them: then the
	// container is replaced by its tombstone, in tombs, and listed in
	// exited (oldest first, at most maxExited).
	containers map[string]*container // guarded by mu
	tombs      map[string]*tombstone // guarded by mu
	exited     []*tombstone          // guarded by mu
	shutdown   bool                  // guarded by mu; no new work
	// podIdentity is the pod's identity as the first container that
	// named one had it (PodLabels).
	podIdentity bundle.Identity // guarded by mu
	gen         uint64          // guarded by mu; the last container.gen

	pod    podServices   // the pause process and the fd socket
	stream streamService // the streaming server (stream.go)

	// oomWatch starts a container's OOM watcher: watchOOM, or a fake in
	// tests (set before the first create).
	oomWatch func(pid int, log *slog.Logger) (oomWatcher, error)
}

// New returns a Monitor for cfg and starts (or joins) the process's reaper.
func New(cfg Config) (*Monitor, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Runtime == "" {
		return nil, fmt.Errorf("runtime must be specified: %w", ErrInvalidArgument)
	}
	if err := cfg.LogRateLimit.Validate(); err != nil {
		return nil, fmt.Errorf("log rate limit: %w: %w", err, ErrInvalidArgument)
	}
	r, err := acquireReaper(log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	tp := cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := &Monitor{
		cfg:         cfg,
		log:         log,
		reaper:      r,
		tracer:      tp.Tracer(tracerName),
		opCtx:       ctx,
		cancelOps:   cancel,
		closed:      make(chan struct{}),
		stopRetries: make(chan struct{}),
		containers:  make(map[string]*container),
		oomWatch:    watchOOM,
		tombs:       make(map[string]*tombstone),
	}
	if m.cfg.FDs == nil {
		m.cfg.FDs = &m.pod
	}
	if cfg.Metrics {
		m.metrics = newMonitorMetrics()
	}
	return m, nil
}

// runDir is the directory of exec pidfiles and sockets: Config.RunDir, or
// the temporary directory when that is empty.
func (m *Monitor) runDir() string {
	if m.cfg.RunDir == "" {
		return os.TempDir()
	}
	return m.cfg.RunDir
}

// beginOp registers an operation unless shutting down. The returned
// context ends with ctx or with Shutdown; call the returned func when done.
func (m *Monitor) beginOp(ctx context.Context) (context.Context, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutdown {
		return nil, nil, ErrShutdown
	}
	m.ops.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.opCtx, cancel)
	return ctx, func() {
		stop()
		cancel()
		m.ops.Done()
	}, nil
}

// lookup returns the container with id while it is monitored, or the
// tombstone of a recently exited one: exactly one of the two is non-nil.
// A container whose create is still in progress is not found yet (as in
// conmon-rs, which registers a child only once its create succeeded).
func (m *Monitor) lookup(id string) (*container, *tombstone, error) {
	m.mu.Lock()
	c, ok := m.containers[id]
	t := m.tombs[id]
	m.mu.Unlock()
	if ok {
		if st, _ := c.snapshot(); st != stateCreating {
			return c, nil, nil
		}
	} else if t != nil {
		return nil, t, nil
	}
	return nil, nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
}

// retire replaces an exited container by its tombstone, in the bounded
// list of exited ones, so that nothing the container held (its request,
// log, attach server, logger) stays reachable from the monitor.
func (m *Monitor) retire(c *container) {
	t := c.tombstone()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.containers[c.id] != c {
		return // deleted meanwhile
	}
	delete(m.containers, c.id)
	m.tombs[c.id] = t
	m.exited = append(m.exited, t)
	if len(m.exited) > maxExited {
		old := m.exited[0]
		m.exited[0] = nil
		m.exited = m.exited[1:]
		if m.tombs[old.id] == old {
			delete(m.tombs, old.id)
		}
	}
}

// forget removes c from the monitor (failed create, Delete), or its
// tombstone if it was retired meanwhile.
func (m *Monitor) forget(c *container) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.containers[c.id] == c {
		delete(m.containers, c.id)
		return
	}
	if t := m.tombs[c.id]; t != nil && t.gen == c.gen {
		m.dropTomb(t)
	}
}

// dropTomb removes t from tombs and exited. Call with mu held.
func (m *Monitor) dropTomb(t *tombstone) {
	if m.tombs[t.id] == t {
		delete(m.tombs, t.id)
	}
	for i, e := range m.exited {
		if e == t {
			m.exited = append(m.exited[:i], m.exited[i+1:]...)
			break
		}
	}
}

// ReopenLog reopens the log files of a running container (kubelet renamed
// them first). An unknown or exited container is ErrNotFound.
func (m *Monitor) ReopenLog(ctx context.Context, id string) error {
	c, err := m.running(id)
	if err != nil {
		return err
	}
	if err := c.log.Reopen(); err != nil {
		return fmt.Errorf("reopen log: %w", err)
	}
	return nil
}

// SetWindowSize resizes a container's terminal (rows = height, cols =
// width).
func (m *Monitor) SetWindowSize(ctx context.Context, id string, width, height uint16) error {
	c, err := m.running(id)
	if err != nil {
		return err
	}
	if !c.req.Terminal {
		return fmt.Errorf("container has no terminal: %w", ErrFailedPrecondition)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.console == nil {
		return fmt.Errorf("terminal not connected: %w", ErrFailedPrecondition)
	}
	if err := c.console.Resize(consoleSize(width, height)); err != nil {
		return fmt.Errorf("set window size: %w", err)
	}
	return nil
}

// Shutdown kills every monitored container, waits for their exit files and
// releases the monitor's resources. It refuses new work at once, cancels
// runtime commands in flight, sends SIGKILL to each container's process
// group and init (exit files then say 137), and waits for the waiters
// within ctx. It is idempotent: a call after a timed-out one waits again.
func (m *Monitor) Shutdown(ctx context.Context) error {
	m.shutdownOnce.Do(func() {
		m.mu.Lock()
		m.shutdown = true
		live := m.containersLocked()
		m.mu.Unlock()
		m.cancelOps()
		for _, c := range live {
			if err := c.signal(sigKill, true); err != nil {
				c.logger.Warn("kill container", "error", err)
			}
		}
		go m.finishShutdown()
	})
	select {
	case <-m.closed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for containers to exit: %w", ctx.Err())
	}
}

// containersLocked returns the monitored containers (running or
// exited, not yet retired); m.mu is held.
func (m *Monitor) containersLocked() []*container {
	cs := make([]*container, 0, len(m.containers))
	for _, c := range m.containers {
		cs = append(cs, c)
	}
	return cs
}

// finishShutdown waits for operations in flight, then kills what they
// created, waits for all waiters and releases the reaper.
func (m *Monitor) finishShutdown() {
	m.ops.Wait()
	// A create that finished while Shutdown started may have published a
	// container after the first kill round.
	m.mu.Lock()
	live := m.containersLocked()
	m.mu.Unlock()
	for _, c := range live {
		_ = c.signal(sigKill, true) // no-op for exited ones
	}
	m.waiters.Wait()
	close(m.stopRetries)
	m.retries.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), podStopTimeout)
	if err := m.stream.stop(ctx); err != nil {
		m.log.Warn("stop streaming server", "error", err)
	}
	if err := m.pod.stop(ctx); err != nil {
		m.log.Warn("stop pod services", "error", err)
	}
	cancel()
	releaseReaper(m.reaper)
	close(m.closed)
}

// watchOOM starts the OOM watcher of pid.
func watchOOM(pid int, log *slog.Logger) (oomWatcher, error) {
	w, err := oom.Watch(pid, log)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// newCmd builds an exec.Cmd for argv without a Context (which would start
// a goroutine that waits for it).
func newCmd(argv []string, env []string) *exec.Cmd {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	return cmd
}

// crunLogLevel maps the server's level to crun's --log-level as conmon-rs
// does: debug, error and warning; other levels add nothing.
func crunLogLevel(l slog.Level) string {
	switch l {
	case slog.LevelDebug:
		return "debug"
	case slog.LevelWarn:
		return "warning"
	case slog.LevelError:
		return "error"
	default:
		return ""
	}
}

// errZeroPID: the pidfile holds 0, which is no process.
var errZeroPID = errors.New("pid 0 in pidfile")
