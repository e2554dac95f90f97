// Package driver runs containers through the three contenders the
// benchmark compares: gomon (one daemon per pod, driven through the
// conmon-rs Go client as CRI-O main does), C conmon (one process per
// container, driven through its CLI and pipes as CRI-O's runtime_oci.go
// does) and bare runc (no monitor at all).
//
// The harness is sequential: a Pod is used by one goroutine at a time.
// Each Pod owns the goroutines that reap the processes it adopts (the
// harness is a child subreaper, so daemonised monitors and bare container
// inits become its children) and stops them in Close.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/oci"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// Env is what every driver needs.
type Env struct {
	Runc    oci.Runc
	Conmon  string // path of C conmon
	Gomon   string // path of gomon
	WorkDir string // scratch space, removed by the harness
	Logger  *slog.Logger
}

// Container is one container of a run. The harness fills ID, Name, Bundle
// and Dir (an empty directory for the container's files); Pod.Create fills
// the rest.
type Container struct {
	ID     string
	Name   string
	Bundle string
	Dir    string

	Root     string // runc --root to use for start/state/delete
	LogPath  string // CRI log; for bare, the file the container writes
	ExitFile string // written by the monitor when the container exits
	PID      int    // container init
}

// ExecResult is the outcome of an exec sync.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// ErrUnsupported marks an operation the contender does not offer (yet).
var ErrUnsupported = errors.New("not supported by this monitor")

// Driver starts pods of one contender.
type Driver interface {
	// Name is the label in the results ("gomon", "conmon", "runc").
	Name() string
	// NewPod starts a pod: for gomon its daemon, for the others nothing.
	NewPod(ctx context.Context, name string) (Pod, error)
}

// Pod is one pod of a contender.
type Pod interface {
	// Create asks the monitor to create c (runc create has finished when it
	// returns; the container is "created" and c.PID is set).
	Create(ctx context.Context, c *Container) error
	// WaitExit blocks until the monitor has recorded c's exit: the exit
	// file exists (gomon, conmon; both drain the log first) or, for bare
	// runc, the init process has been reaped.
	WaitExit(ctx context.Context, c *Container) error
	// ExecSync runs cmd in c and returns its output, like CRI ExecSync.
	ExecSync(ctx context.Context, c *Container, cmd []string) (ExecResult, error)
	// Remove force-deletes c and waits until its monitor (if it has one of
	// its own) is gone.
	Remove(ctx context.Context, c *Container) error
	// MonitorPIDs lists the live monitor processes of the pod.
	MonitorPIDs() []int
	// MonitorCPU is the CPU time spent so far by every monitor process of
	// the pod, including ones that have exited.
	MonitorCPU() (procfs.CPU, error)
	// Close stops the pod's monitors and reaps them. It is idempotent.
	Close(ctx context.Context) error
}

// waitFile polls for path to exist.
func waitFile(ctx context.Context, path string) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}
