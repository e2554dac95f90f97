package monitor

import (
	"context"
	"fmt"
	"syscall"
)

// The methods in this file serve Go programs that embed the monitor (and
// "gomon run"). CRI-O runs start, kill and delete against the runtime
// itself; over RPC only CreateContainer and the I/O methods are used.

// Start runs `runtime start <id>` through the reaper, moving a created
// container to running.
func (m *Monitor) Start(ctx context.Context, id string) error {
	c, t, err := m.lookup(id)
	if err != nil {
		return err
	}
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return err
	}
	defer done()
	args := append(m.runtimeArgs(c, t), "start", id)
	if err := m.runRuntime(ctx, args); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// Wait blocks until the container has exited and its exit files are
// written, and returns how it ended. It works for containers that exited
// recently too (the monitor remembers the last few hundred).
func (m *Monitor) Wait(ctx context.Context, id string) (ExitStatus, error) {
	c, t, err := m.lookup(id)
	if err != nil {
		return ExitStatus{}, err
	}
	if t != nil {
		return t.status, nil
	}
	select {
	case <-c.done:
		_, st := c.snapshot()
		return st, nil
	case <-ctx.Done():
		return ExitStatus{}, fmt.Errorf("wait for container %s: %w", id, ctx.Err())
	}
}

// Kill sends sig to the container's init process through its pidfd (no
// PID-reuse risk). A container that has exited already is not an error.
func (m *Monitor) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	c, _, err := m.lookup(id)
	if err != nil {
		return err
	}
	if c == nil {
		return nil // a tombstone: exited
	}
	if err := c.signal(sig, false); err != nil {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	return nil
}

// Delete runs `runtime delete --force <id>` (which kills a running
// container), waits for the monitor to see the exit and forgets the
// container; Wait and ReopenLog then report ErrNotFound.
func (m *Monitor) Delete(ctx context.Context, id string) error {
	c, t, err := m.lookup(id)
	if err != nil {
		return err
	}
	opCtx, done, err := m.beginOp(ctx)
	if err != nil {
		return err
	}
	defer done()
	args := append(m.runtimeArgs(c, t), "delete", "--force", id)
	if err := m.runRuntime(opCtx, args); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if t != nil {
		m.mu.Lock()
		m.dropTomb(t)
		m.mu.Unlock()
		return nil
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for deleted container %s: %w", id, ctx.Err())
	}
	m.forget(c)
	return nil
}

// runtimeArgs are the runtime's global arguments for a container or its
// tombstone (one of them is nil).
func (m *Monitor) runtimeArgs(c *container, t *tombstone) []string {
	if t != nil {
		return m.globalArgs(t.id, t.cgroup, t.globalArgs)
	}
	return m.globalArgs(c.id, c.req.Cgroup, c.req.GlobalArgs)
}
