package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// Bare runs containers with runc alone: `runc create` with stdio on a
// file, no monitor. It is the lower bound for latency and the upper bound
// for log throughput (the container writes straight to a file).
type Bare struct {
	Env *Env
}

var _ Driver = (*Bare)(nil)

// Name implements Driver.
func (*Bare) Name() string { return "runc" }

// NewPod implements Driver.
func (d *Bare) NewPod(context.Context, string) (Pod, error) {
	return &barePod{env: d.Env, ctrs: map[string]*bareCtr{}}, nil
}

type bareCtr struct {
	c    *Container
	init *child
}

// barePod tracks the container inits the harness adopted.
type barePod struct {
	env  *Env
	ctrs map[string]*bareCtr
}

var _ Pod = (*barePod)(nil)

// Create implements Pod. The container's stdout and stderr go to
// <dir>/stdio.log; c.LogPath is <rootfs>/out.bin, where the log benchmark's
// writer is told to write.
func (p *barePod) Create(ctx context.Context, c *Container) error {
	c.Root = filepath.Join(c.Dir, "root")
	c.LogPath = filepath.Join(c.Bundle, "rootfs", "out.bin")
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return fmt.Errorf("create runc root: %w", err)
	}
	stdio, err := os.OpenFile(filepath.Join(c.Dir, "stdio.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open stdio file: %w", err)
	}
	defer func() { _ = stdio.Close() }()
	if err := runcCreate(ctx, p.env, c, stdio); err != nil {
		return err
	}
	// runc create has exited, so the init is now our child (we are a
	// subreaper).
	p.ctrs[c.ID] = &bareCtr{c: c, init: adopt(c.PID)}
	return nil
}

// runcCreate runs `runc create` for c with stdio as its stdout and stderr
// and sets c.PID from the pid file.
func runcCreate(ctx context.Context, env *Env, c *Container, stdio *os.File) error {
	pidfile := filepath.Join(c.Bundle, "pidfile")
	if err := env.Runc.Create(ctx, c.Root, c.ID, c.Bundle, pidfile, stdio); err != nil {
		return err
	}
	raw, err := os.ReadFile(pidfile)
	if err != nil {
		return fmt.Errorf("read pidfile: %w", err)
	}
	c.PID, err = strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("parse pidfile: %w", err)
	}
	return nil
}

// WaitExit implements Pod.
func (p *barePod) WaitExit(ctx context.Context, c *Container) error {
	bc := p.ctrs[c.ID]
	if bc == nil {
		return fmt.Errorf("unknown container %s", c.ID)
	}
	if err := bc.init.waitCtx(ctx); err != nil {
		return err
	}
	return bc.init.err
}

// ExecSync implements Pod with a foreground `runc exec`.
func (p *barePod) ExecSync(ctx context.Context, c *Container, cmd []string) (ExecResult, error) {
	return runcExec(ctx, p.env, c, cmd)
}

// runcExec runs cmd in c with a foreground `runc exec`.
func runcExec(ctx context.Context, env *Env, c *Container, cmd []string) (ExecResult, error) {
	out, err := env.Runc.Exec(ctx, c.Root, c.ID, cmd...)
	if err != nil {
		return ExecResult{}, err
	}
	return ExecResult{Stdout: out}, nil
}

// Remove implements Pod.
func (p *barePod) Remove(ctx context.Context, c *Container) error {
	err := p.env.Runc.Delete(ctx, c.Root, c.ID)
	if bc := p.ctrs[c.ID]; bc != nil {
		bc.init.kill(5 * time.Second)
		delete(p.ctrs, c.ID)
	}
	return err
}

// MonitorPIDs implements Pod: there is no monitor.
func (*barePod) MonitorPIDs() []int { return nil }

// MonitorCPU implements Pod: there is no monitor.
func (*barePod) MonitorCPU() (procfs.CPU, error) { return procfs.CPU{}, nil }

// Close implements Pod.
func (p *barePod) Close(ctx context.Context) error {
	var errs []error
	for _, bc := range p.ctrs {
		if err := p.Remove(ctx, bc.c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
