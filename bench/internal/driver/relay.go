package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// Relay runs containers like Bare, but their stdout and stderr go into a
// pipe that a relay process outside the container copies to a file with
// plain read(2) and write(2) (loggen -relay): what any monitor holding a
// container's stdio must at least do, without record format, timestamps
// or anything else. It is the log benchmark's floor for a monitor, where
// bare runc (the container writing the file itself) is the ceiling for
// the container.
type Relay struct {
	Env *Env
	// Loggen is the host path of the loggen binary, run with -relay.
	Loggen string
}

var _ Driver = (*Relay)(nil)

// Name implements Driver.
func (*Relay) Name() string { return "relay" }

// NewPod implements Driver.
func (d *Relay) NewPod(context.Context, string) (Pod, error) {
	return &relayPod{d: d, ctrs: map[string]*relayCtr{}}, nil
}

type relayCtr struct {
	c     *Container
	init  *child
	relay *child
}

// relayPod tracks the container inits and relays the harness adopted.
type relayPod struct {
	d    *Relay
	ctrs map[string]*relayCtr
	// gone are the relays of removed containers, kept for their CPU time.
	gone []*child
}

var _ Pod = (*relayPod)(nil)

// Create implements Pod: it starts the relay on a new pipe's read end,
// then `runc create` with the write end as the container's stdout and
// stderr. c.LogPath is <dir>/relay.log.
func (p *relayPod) Create(ctx context.Context, c *Container) error {
	c.Root = filepath.Join(c.Dir, "root")
	c.LogPath = filepath.Join(c.Dir, "relay.log")
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return fmt.Errorf("create runc root: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("relay pipe: %w", err)
	}
	defer func() { _ = w.Close() }() // the container holds its own copy
	proc, err := os.StartProcess(p.d.Loggen, []string{p.d.Loggen, "-relay", "-o", c.LogPath},
		&os.ProcAttr{Files: []*os.File{r, os.Stderr, os.Stderr}})
	_ = r.Close() // the relay holds its own copy
	if err != nil {
		return fmt.Errorf("start relay: %w", err)
	}
	rc := &relayCtr{c: c, relay: adoptLeaf(proc.Pid)}
	_ = proc.Release() // adopt reaps it
	p.ctrs[c.ID] = rc
	if err := runcCreate(ctx, p.d.Env, c, w); err != nil {
		return err
	}
	rc.init = adopt(c.PID) // runc create has exited: the init is our child
	return nil
}

// WaitExit implements Pod: the init has been reaped and the relay has
// copied everything (it exits at the pipe's EOF).
func (p *relayPod) WaitExit(ctx context.Context, c *Container) error {
	rc := p.ctrs[c.ID]
	if rc == nil || rc.init == nil {
		return fmt.Errorf("unknown container %s", c.ID)
	}
	for _, ch := range []*child{rc.init, rc.relay} {
		if err := ch.waitCtx(ctx); err != nil {
			return err
		}
		if ch.err != nil {
			return ch.err
		}
	}
	if rc.relay.status.ExitStatus() != 0 {
		return fmt.Errorf("relay exited with %d", rc.relay.status.ExitStatus())
	}
	return nil
}

// ExecSync implements Pod with a foreground `runc exec`.
func (p *relayPod) ExecSync(ctx context.Context, c *Container, cmd []string) (ExecResult, error) {
	return runcExec(ctx, p.d.Env, c, cmd)
}

// Remove implements Pod.
func (p *relayPod) Remove(ctx context.Context, c *Container) error {
	rc := p.ctrs[c.ID]
	if rc == nil {
		return nil
	}
	var err error
	if rc.init != nil {
		err = p.d.Env.Runc.Delete(ctx, c.Root, c.ID)
		rc.init.kill(5 * time.Second)
	}
	rc.relay.kill(5 * time.Second)
	delete(p.ctrs, c.ID)
	p.gone = append(p.gone, rc.relay)
	return err
}

// MonitorPIDs implements Pod: the running relays.
func (p *relayPod) MonitorPIDs() []int {
	var pids []int
	for _, rc := range p.ctrs {
		if !rc.relay.exited() {
			pids = append(pids, rc.relay.pid)
		}
	}
	return pids
}

// MonitorCPU implements Pod: the relays' CPU time, exited ones included.
func (p *relayPod) MonitorCPU() (procfs.CPU, error) {
	relays := append([]*child(nil), p.gone...)
	for _, rc := range p.ctrs {
		relays = append(relays, rc.relay)
	}
	return sumCPU(relays)
}

// Close implements Pod.
func (p *relayPod) Close(ctx context.Context) error {
	var errs []error
	for _, rc := range p.ctrs {
		if err := p.Remove(ctx, rc.c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
