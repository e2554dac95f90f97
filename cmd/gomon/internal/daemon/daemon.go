// Package daemon runs gomon as conmon-rs's server: it prepares the run
// directory, daemonizes the way the conmon-rs Go client expects, and serves
// the Cap'n Proto API until SIGINT or SIGTERM.
//
// Start-up, as the client sees it (docs/contract.md, "Start-up handshake"):
//
//	launcher (started by the client)          daemon (re-exec of the same binary)
//	validate, create dirs, remove stale sockets
//	listen on <run-dir>/conmon.sock
//	re-exec with the listener as fd 3 ───────▶ close-on-exec everything inherited
//	write <run-dir>/pidfile (daemon PID)       subreaper, logger, monitor
//	exit 0                                     accept on fd 3
//
// The socket listens before the launcher exits, so the client's first
// Version call succeeds however slowly the daemon starts: the kernel queues
// the connection until the daemon accepts it. Go cannot fork, hence the
// re-exec; it happens before the launcher starts any goroutine of its own.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/cmd/gomon/internal/upgrade"
	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/internal/atomicfile"
	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc"
)

// Options configure the server. They come from the command line (package
// cli) and are validated there.
type Options struct {
	Runtime     string
	RunDir      string
	RuntimeRoot string
	LogLevel    string // trace|debug|info|warn|error|off
	LogDriver   string // none|stdout|systemd
	SkipFork    bool
	Version     rpc.VersionInfo
	// CreateTimeout bounds a runtime create; 0 means the monitor's default.
	CreateTimeout time.Duration
	// Tracing: OTLP export of spans when enabled (--enable-tracing).
	EnableTracing                 bool
	TracingEndpoint               string
	TracingSamplingRatePerMillion int
	// Args are the command-line arguments to hand to the daemon process.
	Args []string

	// logMaxLine is GOMON_LOG_MAX_LINE, read by Run.
	logMaxLine int
}

const (
	socketName  = "conmon.sock"
	pidfileName = "pidfile"

	// daemonEnv marks the re-exec'd daemon; it names the fd of the
	// listener. It is removed from the environment as soon as it is read,
	// so runtimes and containers never see it.
	daemonEnv = "_GOMON_DAEMON_LISTENER_FD"

	// upgradeFlush bounds the export of queued spans right before an
	// upgrade's exec (part of the pause, only with tracing on).
	upgradeFlush = time.Second

	// shutdownGrace bounds the whole shutdown; the conmon-rs client waits
	// 10 s for the process to disappear.
	shutdownGrace = 8 * time.Second
)

// Run starts the server: in the launcher it daemonizes and returns once the
// daemon is listening; in the daemon (or with SkipFork) it serves until a
// terminating signal and returns nil after a clean shutdown.
func Run(opts Options) error {
	// Checked in the launcher too, so a bad value fails the start at once.
	maxLine, err := logMaxLine(os.LookupEnv)
	if err != nil {
		return err
	}
	opts.logMaxLine = maxLine
	// After an upgrade in place this process is the new binary, exec'd by
	// the daemon it replaces (docs/upgrade.md).
	in, err := upgrade.TakeOver()
	if in != nil || err != nil {
		if in == nil || in.Listener == nil {
			res := upgrade.Result{PID: os.Getpid(), To: opts.Version.Version,
				Error: fmt.Sprintf("the new process cannot take over: %v", err)}
			if in != nil && in.Control != nil {
				_ = upgrade.Answer(in.Control, res)
			}
			return fmt.Errorf("take over after upgrade: %w", err)
		}
		return serve(opts, in.Listener, in)
	}
	if fd, ok := os.LookupEnv(daemonEnv); ok {
		_ = os.Unsetenv(daemonEnv)
		n, err := strconv.Atoi(fd)
		if err != nil {
			return fmt.Errorf("bad %s=%q: %w", daemonEnv, fd, err)
		}
		f := os.NewFile(uintptr(n), socketName)
		l, err := net.FileListener(f) // a dup; the inherited fd is not needed after
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("adopt listener: %w", err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			_ = l.Close()
			return fmt.Errorf("adopt listener: a %T, not a unix socket", l)
		}
		return serve(opts, ul, nil)
	}

	if err := cloexecInherited(); err != nil {
		return fmt.Errorf("protect inherited fds: %w", err)
	}
	for _, name := range []string{socketName, monitor.FDSocketName} {
		if err := removeIfExists(filepath.Join(opts.RunDir, name)); err != nil {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	processInit()
	l, err := listenUnix(filepath.Join(opts.RunDir, socketName))
	if err != nil {
		return err
	}
	if opts.SkipFork {
		return serve(opts, l, nil)
	}
	return launch(opts, l)
}

// processInit sets what conmon-rs sets before it forks: a predictable umask
// and an OOM score that keeps the monitor alive longer than its containers.
// Lowering the score needs CAP_SYS_RESOURCE; without it this is best effort.
func processInit() {
	unix.Umask(0o022)
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0o644); err != nil {
		// conmon-rs prints this to stdout too; CRI-O ignores it.
		fmt.Println("Missing sufficient privileges to adjust OOM score")
	}
}

// launch re-executes gomon as the daemon, hands it the listener, writes the
// pidfile and returns, so the caller can exit 0.
func launch(opts Options, l *net.UnixListener) error {
	lf, err := l.File()
	if err != nil {
		return fmt.Errorf("listener fd: %w", err)
	}
	defer func() { _ = lf.Close() }()
	_ = l.Close() // the daemon owns the socket now; our dup is closed above

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(invokedPath(self), opts.Args...)
	// argv[0] as we were given it, as a forking daemon keeps it.
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), daemonEnv+"=3")
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	// With the stdout driver the daemon logs to the client's stdout and
	// stderr; otherwise it holds none of the launcher's stdio, so a caller
	// waiting for those pipes to close is not kept waiting by the daemon.
	// systemd falls back to stderr when no journal is reachable (a
	// socket file nobody listens on counts as none), or to
	// <run-dir>/gomon.log when stderr is /dev/null.
	if opts.LogDriver == "stdout" {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	} else if opts.LogDriver == "systemd" && journalReachable() != nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	pid := cmd.Process.Pid
	// The daemon outlives us; nobody waits for it here (it is re-parented).
	_ = cmd.Process.Release()
	if err := writePidfile(filepath.Join(opts.RunDir, pidfileName), pid); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return err
	}
	return nil
}

// invokedPath returns the path gomon was started through when it is the
// running binary, else self (the binary itself, from /proc/self/exe).
// Executing that path keeps the daemon's name what the user started: the
// kernel takes a process's comm (ps, /proc/<pid>/comm, journald's _COMM)
// from the basename of the path given to execve, so a gomon installed as
// a conmonrs symlink stays "conmonrs", like a forking daemon would. The
// path is checked to be the same file as self, so the daemon is the same
// binary as the launcher.
func invokedPath(self string) string {
	p, err := exec.LookPath(os.Args[0]) // as a shell found it; a path with a slash is taken as is
	if err != nil {
		return self
	}
	pi, err := os.Stat(p)
	if err != nil {
		return self
	}
	si, err := os.Stat(self)
	if err != nil || !os.SameFile(pi, si) {
		return self
	}
	return p
}

// startPath is invokedPath(self) made absolute (argv[0] may be relative
// to the working directory): the path the daemon was started through, kept
// as the default binary of its upgrades.
func startPath(self string) string {
	p := invokedPath(self)
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// writePidfile writes pid in decimal without a newline (the client parses
// it strictly), atomically: a reader never sees a partial file.
func writePidfile(path string, pid int) error {
	if err := atomicfile.WriteFile(path, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write pidfile: %w", err)
	}
	return nil
}

// serve runs the daemon proper until SIGINT or SIGTERM. in is what an
// upgrade in place handed over (nil at a normal start).
func serve(opts Options, l *net.UnixListener, in *upgrade.Inherited) error {
	tuner := tuneRuntime(os.LookupEnv)
	defer tuner.Stop()
	// Register before anything can need them; buffered so no signal is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// The path this binary was started from, read before a package update
	// replaces the file: the default new binary of an upgrade. It is the
	// path as invoked (a conmonrs symlink), not the file it resolves to,
	// so that an upgrade execs it as launch did and the daemon keeps its
	// name (comm) across upgrades.
	self, _ := os.Executable()
	self = startPath(strings.TrimSuffix(self, " (deleted)"))
	if in != nil && in.State.StartPath != "" {
		self = in.State.StartPath // the first start's, carried by the upgrades since
	}

	log, closeLog := newLogger(opts.LogDriver, opts.LogLevel, opts.RunDir)
	defer closeLog()
	log.Info("gomon starting", "version", opts.Version.Version, "pid", os.Getpid(),
		"runtime", opts.Runtime, "run_dir", opts.RunDir, "tracing", opts.EnableTracing,
		"upgraded_from", upgradedFrom(in))

	mode := exporter.ModeOff
	if opts.EnableTracing {
		mode = exporter.ModeOTLP
	}
	tracing, err := exporter.Setup(context.Background(), exporter.Config{
		Mode:                   mode,
		Endpoint:               opts.TracingEndpoint,
		SamplingRatePerMillion: opts.TracingSamplingRatePerMillion,
		Version:                opts.Version.Version,
		Logger:                 log,
	})
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("set up tracing: %w", err)
	}
	defer flushTracing(tracing, log)
	// Log records inside a span also become events on it, whatever the
	// log level (as conmon-rs does).
	log = slog.New(exporter.LogHandler(log.Handler()))

	mcfg, problems := metricsFromEnv(opts.EnableTracing, os.LookupEnv)
	for _, p := range problems {
		log.Warn("metrics setting in the environment ignored", "reason", p)
	}
	mon, err := monitor.New(monitor.Config{
		LogRateLimit:  logRateLimitFromEnv(os.Getenv, log),
		Runtime:       opts.Runtime,
		RuntimeRoot:   opts.RuntimeRoot,
		RunDir:        opts.RunDir,
		LogLevel:      slogLevel(opts.LogLevel),
		CreateTimeout: opts.CreateTimeout,
		LogMaxLine:    opts.logMaxLine,
		Logger:        log,
		// Export a container's spans as soon as it exits: the kubelet may
		// SIGKILL the pod's processes, gomon included, soon after.
		OnContainerExit: func(string) { tracing.FlushSoon(); tuner.Poke() },
		Metrics:         mcfg.on(),
	})
	if err != nil {
		_ = l.Close()
		return fmt.Errorf("start monitor: %w", err)
	}
	var adopted upgrade.Result
	if in != nil {
		adopted = adopt(mon, in, versionTag(opts.Version), log)
	}

	gate := upgrade.NewGate(mon)
	srv := rpc.NewServer(gate, opts.Version, log)
	srv.AfterEachCall(tuner.Poke)
	// An export runs code and leaves garbage, as a call does.
	reader, err := startMetrics(mcfg, opts, mon, srv, tuner.Poke, log)
	if err != nil {
		_ = l.Close()
		_ = mon.Shutdown(context.Background())
		return fmt.Errorf("set up metrics: %w", err)
	}
	defer stopMetrics(reader, log)
	pl := upgrade.NewListener(l)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pl) }()

	var requests <-chan upgrade.Pending
	control, err := upgrade.Listen(opts.RunDir, log)
	if err != nil {
		log.Warn("no upgrade socket: upgrades only through SIGHUP", "error", err)
	} else {
		defer func() { _ = control.Close() }()
		requests = control.Requests()
	}
	if in != nil {
		pausedAt := time.Unix(0, in.State.PausedAt)
		adopted.PauseMicros = time.Since(pausedAt).Microseconds()
		// The upgrade's span covers the pause: from the old process's
		// stop to serving here. It is a child of the asker's span when
		// the request carried one (the asker waits for the answer, sent
		// after this span ends, so its span encloses this one), a root
		// span otherwise (SIGHUP, or an asker without a trace).
		_, span := tracing.TracerProvider().Tracer("gomon").Start(upgrade.ParentContext(in.State.TraceParent), "upgrade",
			trace.WithTimestamp(pausedAt), trace.WithAttributes(
				attribute.String("from", adopted.From), attribute.String("to", adopted.To),
				attribute.Int64("pause_us", adopted.PauseMicros), attribute.Int("containers", adopted.Containers),
				attribute.Int("pid", os.Getpid()), attribute.String("run_dir", opts.RunDir),
				attribute.Int("handed_over", len(in.State.Containers))))
		if adopted.Warning != "" {
			span.SetStatus(codes.Error, adopted.Warning)
		}
		span.End()
		tracing.FlushSoon() // an operator waits for it, not for the next batch
		log.Info("upgrade complete", "from", adopted.From, "to", adopted.To, "pause", time.Duration(adopted.PauseMicros)*time.Microsecond,
			"containers", adopted.Containers, "warning", adopted.Warning)
		if err := upgrade.Answer(in.Control, adopted); err != nil {
			log.Warn("answer upgrade", "error", err)
		}
	}
	tuner.Started()
	up := &upgrade.Daemon{
		RunDir: opts.RunDir, Version: versionTag(opts.Version), Binary: self, Argv: os.Args,
		Listener: pl, Gate: gate, Monitor: mon, Log: log,
		BeforeExec: func() {
			if mode == exporter.ModeOff {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), upgradeFlush)
			defer cancel()
			if err := tracing.ForceFlush(ctx); err != nil {
				log.Warn("upgrade: spans not exported before the exec are lost", "error", err)
			}
		},
	}

	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				dumpStacks(log)
				continue
			case syscall.SIGHUP:
				res := up.Upgrade(upgrade.Request{}, nil) // returns only when refused
				log.Warn("upgrade on SIGHUP refused", "error", res.Error)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			return shutdown(opts, srv, mon, log, served)
		case p := <-requests:
			res := up.Upgrade(p.Request, p.Conn) // returns only when refused
			if err := upgrade.Answer(p.Conn, res); err != nil {
				log.Warn("answer upgrade", "error", err)
			}
		case err := <-served:
			// The listener failed under us; stop everything all the same.
			log.Error("rpc server stopped", "error", err)
			_ = shutdown(opts, srv, mon, log, nil)
			return err
		}
	}
}

// The environment variables of the node's default log rate limit, which
// gomon inherits from CRI-O (e.g. through its systemd unit).
const (
	envLogRateLimit  = "GOMON_LOG_RATE_LIMIT"  // e.g. 1MiB/s; unset, 0 or off: no limit
	envLogRateBurst  = "GOMON_LOG_RATE_BURST"  // e.g. 4MiB; unset: one second of the limit
	envLogRatePolicy = "GOMON_LOG_RATE_POLICY" // drop (default) or block
)

// logRateLimitFromEnv reads the node's default log rate limit. A value
// that does not parse is logged and ignored, that setting keeping its
// default: a typo must not keep every pod of the node from starting.
func logRateLimitFromEnv(getenv func(string) string, log *slog.Logger) ioloop.RateLimit {
	lim, err := ioloop.ParseRateLimit(ioloop.RateLimit{},
		getenv(envLogRateLimit), getenv(envLogRateBurst), getenv(envLogRatePolicy))
	if err != nil {
		log.Error("bad log rate limit in the environment, ignoring the bad setting", "error", err)
	}
	if lim.Enabled() {
		log.Info("log rate limit for every container", "limit", lim.String())
	}
	return lim
}

// adopt takes over the containers an upgrade handed over and returns the
// answer for whoever asked.
func adopt(mon *monitor.Monitor, in *upgrade.Inherited, version string, log *slog.Logger) upgrade.Result {
	res := upgrade.Result{OK: true, PID: os.Getpid(), From: in.State.From, To: version}
	n, err := mon.Adopt(in.State)
	res.Containers = n
	if err != nil {
		res.Warning = err.Error()
		log.Error("upgrade: containers taken over in part", "taken_over", n, "handed_over", len(in.State.Containers), "error", err)
	}
	return res
}

// versionTag is the version an upgrade reports: the semantic version and
// the build's tag, which tells two builds of one version apart.
func versionTag(v rpc.VersionInfo) string {
	if v.Tag == "" || v.Tag == "none" {
		return v.Version
	}
	return v.Version + " (" + v.Tag + ")"
}

func upgradedFrom(in *upgrade.Inherited) string {
	if in == nil {
		return ""
	}
	return in.State.From
}

// shutdown kills the pod's containers (their exit files get 137), stops
// the RPC server and removes the sockets, within shutdownGrace.
func shutdown(opts Options, srv *rpc.Server, mon *monitor.Monitor, log *slog.Logger, served <-chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var errs []error
	if err := mon.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop monitor: %w", err))
	}
	if err := srv.Close(); err != nil {
		errs = append(errs, fmt.Errorf("stop rpc server: %w", err))
	}
	if served != nil {
		if err := <-served; err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("rpc server: %w", err))
		}
	}
	for _, name := range []string{socketName, monitor.FDSocketName} {
		if err := removeIfExists(filepath.Join(opts.RunDir, name)); err != nil {
			errs = append(errs, fmt.Errorf("remove socket: %w", err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		log.Error("shutdown", "error", err)
	} else {
		log.Info("shutdown complete")
	}
	return err
}

// flushTracing exports the spans still queued, within a bound.
func flushTracing(t *exporter.Tracing, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("flush spans", "error", err, "dropped", t.Dropped())
	}
}

// dumpStacks logs every goroutine's stack (SIGUSR1), for debugging a
// stuck monitor without stopping it.
func dumpStacks(log *slog.Logger) {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	log.Info("goroutine dump", "stacks", string(buf[:n]))
}
