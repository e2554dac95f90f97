package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// child is an adopted child process: one goroutine waits for it to exit,
// reads its CPU time from the zombie, then reaps it.
type child struct {
	pid  int
	done chan struct{}

	// Valid after done is closed.
	cpu    procfs.CPU // CPU time at exit, read from the zombie
	cpuErr error      // reading it failed: cpu is not a figure to use
	status unix.WaitStatus
	err    error // the wait failed (not our child, …)

	// leaf is set for a process that has no children of its own (the
	// relay): the rusage of its reaping is then its CPU alone, every
	// thread counted, where the zombie's schedstat holds only the threads
	// still there (a Go process's others are gone). A monitor's rusage
	// would include the containers it reaped.
	leaf bool
}

// adopt starts watching pid, which must be our child (directly or as the
// subreaper it was re-parented to).
func adopt(pid int) *child {
	c := &child{pid: pid, done: make(chan struct{})}
	go c.wait()
	return c
}

// adoptLeaf is adopt for a process without children of its own: its run
// time at exit is taken from the rusage of its reaping (see child.leaf).
func adoptLeaf(pid int) *child {
	c := &child{pid: pid, done: make(chan struct{}), leaf: true}
	go c.wait()
	return c
}

func (c *child) wait() {
	defer close(c.done)
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, c.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.err = fmt.Errorf("waitid %d: %w", c.pid, err)
			return
		}
		break
	}
	c.cpu, c.cpuErr = procfs.ReadCPU(c.pid)
	var ru unix.Rusage
	for {
		_, err := unix.Wait4(c.pid, &c.status, 0, &ru)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			c.err = fmt.Errorf("wait4 %d: %w", c.pid, err)
		} else if c.leaf {
			c.cpu.Run = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		return
	}
}

// exited reports whether the process is gone.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// cpuNow returns the CPU time so far: at exit once it exited, else live.
func (c *child) cpuNow() (procfs.CPU, error) {
	if c.exited() {
		return c.atExit()
	}
	cpu, err := procfs.ReadCPU(c.pid)
	if err != nil {
		if c.exited() { // raced with the exit
			return c.atExit()
		}
		return procfs.CPU{}, fmt.Errorf("cpu of %d: %w", c.pid, err)
	}
	return cpu, nil
}

// atExit is the CPU time read from the zombie, or why there is none.
func (c *child) atExit() (procfs.CPU, error) {
	if c.cpuErr != nil {
		return procfs.CPU{}, fmt.Errorf("cpu of %d at exit: %w", c.pid, c.cpuErr)
	}
	return c.cpu, nil
}

// sumCPU is the CPU time of cs so far, exited ones included (cpuNow).
func sumCPU(cs []*child) (procfs.CPU, error) {
	var sum procfs.CPU
	for _, c := range cs {
		d, err := c.cpuNow()
		if err != nil {
			return procfs.CPU{}, err
		}
		sum = sum.Add(d)
	}
	return sum, nil
}

// waitCtx waits for the exit or ctx.
func (c *child) waitCtx(ctx context.Context) error {
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for pid %d: %w", c.pid, ctx.Err())
	}
}

// kill sends SIGKILL (unless it is gone) and waits up to d for the reap.
func (c *child) kill(d time.Duration) {
	if c.exited() {
		return
	}
	_ = unix.Kill(c.pid, unix.SIGKILL) // best effort: may have just exited
	select {
	case <-c.done:
	case <-time.After(d):
	}
}
