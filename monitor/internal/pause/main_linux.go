package pause

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// Main runs `gomon pause` with the parsed arguments and returns the exit
// code. Started by Create (its readiness descriptor named in the
// environment), it is the pause process itself: it reports ready and sleeps
// until SIGTERM, SIGINT or SIGQUIT, then returns 0. Run by hand, it acts
// like `conmonrs pause`: it creates the namespaces and files, starts the
// pause process, and returns 0 leaving that process running (1 on error).
// opts.Reaper is not used. A nil opts.Logger logs errors to stderr.
func Main(opts Options) int {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	if v, ok := os.LookupEnv(readyEnv); ok {
		fd, err := strconv.Atoi(v)
		if err != nil || fd < 0 {
			opts.Logger.Error("pause: bad readiness descriptor", "value", v)
			return 1
		}
		return hold(os.NewFile(uintptr(fd), "pause-ready"), opts.Logger)
	}
	opts.Reaper = detachedReaper{}
	inst, err := Create(context.Background(), opts)
	if err != nil {
		opts.Logger.Error("pause: init pause", "error", err)
		return 1
	}
	opts.Logger.Debug("pause process started", "pid", inst.PID())
	return 0
}

// hold is the pause process proper: it installs its handlers, reports
// ready, and sleeps, reaping orphans (as PID 1 of a PID namespace it
// inherits every orphan there), until a terminating signal arrives.
func hold(ready *os.File, logger *slog.Logger) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGCHLD)
	defer signal.Stop(sigs)
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)

	// Only now is it safe to report ready: PID 1 of a namespace ignores
	// signals it has no handler for.
	_, err := ready.Write([]byte{1})
	_ = ready.Close()
	if err != nil {
		logger.Error("pause: report ready", "error", err)
		return 1
	}
	reapOrphans()
	for sig := range sigs {
		if sig == unix.SIGCHLD {
			reapOrphans()
			continue
		}
		logger.Debug("pause: stopping", "signal", sig)
		return 0
	}
	return 0
}

// reapOrphans collects every exited child without blocking.
func reapOrphans() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}

// detachedReaper serves the stand-alone `gomon pause`, which is the only
// parent of its pause process and exits right after Create; the waiting
// goroutine ends with the pause process or with this short-lived one.
type detachedReaper struct{}

func (detachedReaper) Start(cmd *exec.Cmd) (<-chan int, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan int, 1)
	go func() {
		_ = cmd.Wait() // the status is read from ProcessState
		exited <- exitStatus(cmd.ProcessState)
	}()
	return exited, nil
}

// exitStatus maps a finished process to an exit code, 128+N for signal N.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
