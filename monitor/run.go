package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// RunOptions configures Run, the engine of "gomon run": one container in
// the foreground, for debugging and demos.
type RunOptions struct {
	Runtime string // OCI runtime binary; default "runc" from $PATH
	// RuntimeRoot is the runtime's state dir (--root). Empty means a fresh
	// temporary directory, removed afterwards, so a run never collides with
	// other containers (or leftovers) of the same ID.
	RuntimeRoot string
	Bundle      string // OCI bundle directory (required); relative to the working directory
	ID          string // container ID; default gomon-run-<random>
	Terminal    bool   // allocate a pty; its output goes to Stdout (with CRLF)
	Stdin       bool   // connect Stdin to the container
	// LogPath, when set, gets a CRI log of the output too; relative to the
	// working directory.
	LogPath string
	// SystemdCgroup passes --systemd-cgroup to the runtime.
	SystemdCgroup bool
	Stdout        io.Writer // default os.Stdout
	Stderr        io.Writer // default os.Stderr
	// Input is the container's stdin; default os.Stdin when Stdin is set.
	// It is forwarded through an attach socket, the path CRI-O's attach
	// takes: without Terminal its EOF closes the container's stdin; with
	// Terminal EOF is ignored (type the shell's exit), and when Input (or
	// else Stdout) is a terminal it is put in raw mode for the run and
	// its size is sent to the container at start and on every SIGWINCH.
	Input  io.Reader
	Logger *slog.Logger
}

// cleanupTimeout bounds delete and shutdown at the end of Run.
const cleanupTimeout = 10 * time.Second

// ErrOutputClosed: Run's Stdout or Stderr is a pipe whose reader went away
// (`gomon run … | head`), so Run killed the container.
var ErrOutputClosed = errors.New("output closed")

// Run creates, starts and waits for one container, streaming its output,
// then deletes it. It returns the container's exit code (128+signal when
// killed, e.g. 137). Cancelling ctx kills the container (SIGKILL); Run
// still cleans up and returns its exit code with ctx's error.
//
// A write to Stdout or Stderr failing with EPIPE (the reader of a pipe went
// away) ends the run the same way, with an error wrapping ErrOutputClosed:
// like the writer of a shell pipeline, the container stops once nobody
// reads its output, and it is not left running without its monitor. Other
// write errors (a full disk) only drop output, counted by the read loop.
func Run(ctx context.Context, opts RunOptions) (exitCode int, err error) {
	if opts.Bundle == "" {
		return ExitUnknown, fmt.Errorf("bundle is required: %w", ErrInvalidArgument)
	}
	// CreateContainer takes absolute paths only (a daemon's working
	// directory means nothing to its client); a run is in-process, so a
	// relative path means what the caller's shell meant.
	if opts.Bundle, err = filepath.Abs(opts.Bundle); err != nil {
		return ExitUnknown, fmt.Errorf("bundle path: %w", err)
	}
	if opts.LogPath != "" {
		if opts.LogPath, err = filepath.Abs(opts.LogPath); err != nil {
			return ExitUnknown, fmt.Errorf("log path: %w", err)
		}
	}
	if opts.Runtime == "" {
		opts.Runtime = "runc"
	}
	if opts.ID == "" {
		opts.ID = "gomon-run-" + randomSuffix()[:12]
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.Stdin && opts.Input == nil {
		opts.Input = os.Stdin
	}
	// waitCtx ends the wait for the container when the output goes away;
	// create and start are left to finish (the container is killed and
	// deleted after), so no runtime is interrupted halfway.
	waitCtx, endRun := context.WithCancelCause(ctx)
	defer endRun(nil)
	outputGone := func() { endRun(ErrOutputClosed) }
	stdout := &pipeOutput{w: opts.Stdout, gone: outputGone}
	stderr := &pipeOutput{w: opts.Stderr, gone: outputGone}
	root := opts.RuntimeRoot
	if root == "" {
		root, err = os.MkdirTemp("", "gomon-run-root-")
		if err != nil {
			return ExitUnknown, fmt.Errorf("create runtime root: %w", err)
		}
		defer func() { _ = os.RemoveAll(root) }() // best effort after delete
	}
	runtime, err := lookRuntime(opts.Runtime)
	if err != nil {
		return ExitUnknown, err
	}
	m, err := New(Config{Runtime: runtime, RuntimeRoot: root, Logger: opts.Logger})
	if err != nil {
		return ExitUnknown, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		err = errors.Join(err, m.Shutdown(sctx))
	}()

	req := CreateRequest{
		ID:         opts.ID,
		BundlePath: opts.Bundle,
		Terminal:   opts.Terminal,
		Stdin:      opts.Stdin,
		Cgroup:     Cgroupfs,
		Stdout:     stdout,
		Stderr:     stderr,
	}
	if opts.SystemdCgroup {
		req.Cgroup = Systemd
	}
	if opts.LogPath != "" {
		req.LogDrivers = []LogDriver{{Type: LogCRI, Path: opts.LogPath}}
	}
	if _, err := m.CreateContainer(ctx, req); err != nil {
		return ExitUnknown, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		err = errors.Join(err, m.Delete(dctx, opts.ID))
	}()
	// Input and resizes go through the attach socket and SetWindowSize,
	// set up before start so nothing the container reads or prints early
	// is missed (the output itself comes losslessly through Stdout and
	// Stderr, not through the attach socket, which may drop for a slow
	// reader).
	fwd, err := startForwarding(ctx, m, opts)
	if err != nil {
		return ExitUnknown, err
	}
	defer fwd.stop()
	if err := m.Start(ctx, opts.ID); err != nil {
		return ExitUnknown, err
	}
	st, werr := m.Wait(waitCtx, opts.ID)
	if werr == nil {
		return st.Code, nil
	}
	// ctx ended or the output went away: kill the container and report
	// how it ended anyway.
	_ = m.Kill(context.WithoutCancel(ctx), opts.ID, sigKill)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	st, err = m.Wait(wctx, opts.ID)
	if err != nil {
		return ExitUnknown, err
	}
	return st.Code, fmt.Errorf("run interrupted: %w", context.Cause(waitCtx))
}

// pipeOutput is one of Run's outputs: once a write fails with EPIPE it
// calls gone and stops writing there (later writes fail at once, counted
// as dropped by the read loop).
type pipeOutput struct {
	w    io.Writer
	gone func()

	mu     sync.Mutex // guards closed; writes of one stream come from its read loop
	closed bool
}

func (p *pipeOutput) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, ErrOutputClosed
	}
	n, err := p.w.Write(b)
	if errors.Is(err, syscall.EPIPE) {
		p.closed = true
		p.gone()
	}
	return n, err
}

// lookRuntime resolves the runtime binary like a shell would.
func lookRuntime(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find runtime %s: %w", name, err)
	}
	return p, nil
}
