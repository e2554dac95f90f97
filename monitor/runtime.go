package monitor

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"
)

// maxRuntimeStderr bounds how much of a runtime's stderr goes into an
// error message.
const maxRuntimeStderr = 64 << 10

// isCrun reports whether the runtime is crun, which gets --log flags
// (conmon-rs tests the file name exactly).
func (m *Monitor) isCrun() bool { return filepath.Base(m.cfg.Runtime) == "crun" }

// globalArgs returns the runtime arguments that go before the subcommand:
// [crun: --log=journald:<id> [--log-level=…]] [--root=<root>]
// [--systemd-cgroup] <extra…>.
//
// conmon-rs emits --root and --systemd-cgroup twice (once from its default
// arguments helper, once again); nothing depends on the duplicate, so gomon
// passes each once.
func (m *Monitor) globalArgs(id string, cg CgroupManager, extra []string) []string {
	var args []string
	if m.isCrun() {
		args = append(args, "--log=journald:"+id)
		if lvl := crunLogLevel(m.cfg.LogLevel); lvl != "" {
			args = append(args, "--log-level="+lvl)
		}
	}
	if m.cfg.RuntimeRoot != "" {
		args = append(args, "--root="+m.cfg.RuntimeRoot)
	}
	if cg == Systemd {
		args = append(args, "--systemd-cgroup")
	}
	return append(args, extra...)
}

// createArgs is the full argv (without argv[0]) of "runtime create".
func (m *Monitor) createArgs(req CreateRequest, consoleSock string) []string {
	args := m.globalArgs(req.ID, req.Cgroup, req.GlobalArgs)
	args = append(args, "create", "--bundle", req.BundlePath,
		"--pid-file", bundlePidfile(req.BundlePath))
	args = append(args, req.CommandArgs...)
	if consoleSock != "" {
		args = append(args, "--console-socket="+consoleSock)
	}
	return append(args, req.ID)
}

// runtimeEnv is the environment of runtime processes: the configured base
// (or ours) plus extra.
func (m *Monitor) runtimeEnv(extra map[string]string) []string {
	env := m.cfg.Env
	if env == nil {
		env = os.Environ()
	}
	env = append([]string(nil), env...)
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// runtimeCmd builds an exec.Cmd for the runtime. It has no Context and the
// caller sets only *os.File stdio, so exec starts no goroutines; it is
// started through the reaper and never waited for by exec.
func (m *Monitor) runtimeCmd(args []string, env map[string]string) *exec.Cmd {
	return &exec.Cmd{
		Path: m.cfg.Runtime,
		Args: append([]string{m.cfg.Runtime}, args...),
		Env:  m.runtimeEnv(env),
	}
}

// awaitChild waits for a child started through the reaper. If ctx ends
// first the child is killed and still awaited, so it never lingers as a
// zombie or an orphan; the context error is then returned with the exit.
func awaitChild(ctx context.Context, c *child) (exitEvent, error) {
	defer func() { _ = c.cmd.Process.Release() }() // frees Go's pidfd handle
	select {
	case ev := <-c.exit:
		return ev, nil
	case <-ctx.Done():
	}
	// Process.Signal goes through Go's pidfd for the child, so it cannot
	// hit a reused PID even if the reaper already reaped it.
	_ = c.cmd.Process.Signal(syscall.SIGKILL) // fails only if already gone
	ev := <-c.exit
	return ev, fmt.Errorf("runtime killed: %w", context.Cause(ctx))
}

// runRuntime runs one short runtime command (start, delete, kill) to
// completion. Its stdout is discarded, its stderr kept in an unlinked temp
// file (no copy goroutine) for the error message.
func (m *Monitor) runRuntime(ctx context.Context, args []string) (err error) {
	ctx, span := m.tracer.Start(ctx, "runtime_"+verb(args), trace.WithAttributes(
		attribute.String("runtime.path", m.cfg.Runtime), attribute.StringSlice("runtime.args", args)))
	defer func() { endSpan(span, err) }()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return fmt.Errorf("open %s: %w", os.DevNull, err)
	}
	defer func() { _ = devNull.Close() }()
	errFile, err := newScratchFile()
	if err != nil {
		return err
	}
	defer func() { _ = errFile.Close() }()
	cmd := m.runtimeCmd(args, traceEnv(ctx))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, errFile
	c, err := m.reaper.start(cmd, false)
	if err != nil {
		m.metrics.runtimeFailed(verb(args))
		return fmt.Errorf("spawn child process: %w", err)
	}
	ev, err := awaitChild(ctx, c)
	if err != nil {
		m.metrics.runtimeFailed(verb(args))
		return err
	}
	if ev.code() != 0 {
		m.metrics.runtimeFailed(verb(args))
		return runtimeFailure(ev, readScratch(errFile))
	}
	return nil
}

// RunChild runs cmd to completion while the monitor runs: the monitor
// reaps every child of the process, so a child started and waited for
// with exec.Cmd alone would be reaped behind its back. cmd's stdio must be
// *os.File or nil (no copy goroutines) and it must have no Context: ctx
// ending (or Shutdown) kills it. It returns nil when cmd exited 0. (The
// upgrade's first dry run, made before the monitor is disturbed, runs
// this way.)
func (m *Monitor) RunChild(ctx context.Context, cmd *exec.Cmd) error {
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return err
	}
	defer done()
	c, err := m.reaper.start(cmd, false)
	if err != nil {
		return err
	}
	ev, err := awaitChild(ctx, c)
	switch {
	case err != nil:
		return err
	case ev.signal() != 0:
		return fmt.Errorf("killed by signal %d (%v)", ev.signal(), ev.signal())
	case ev.code() != 0:
		return fmt.Errorf("exit status %d", ev.code())
	}
	return nil
}

// newScratchFile returns an unlinked read-write temporary file.
func newScratchFile() (*os.File, error) {
	fd, err := unix.Open(os.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), "runtime-stderr"), nil
	}
	// Filesystems without O_TMPFILE: create and unlink.
	f, err := os.CreateTemp("", "gomon-stderr-")
	if err != nil {
		return nil, fmt.Errorf("create scratch file: %w", err)
	}
	_ = os.Remove(f.Name()) // best effort; the open file stays usable
	return f, nil
}

// readScratch returns up to maxRuntimeStderr bytes of f from its start,
// trimmed of surrounding whitespace.
func readScratch(f *os.File) string {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, maxRuntimeStderr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// verb is the runtime subcommand in args (start, kill, delete…): the first
// argument that is not a flag; global flags are always joined (--root=…).
func verb(args []string) string {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			return a
		}
	}
	return "command"
}
