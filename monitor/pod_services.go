package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/gomon-dev/gomon/monitor/internal/fdstore"
	"github.com/gomon-dev/gomon/monitor/internal/pause"
)

// Pod-level services: the pause process that holds the pod's namespaces
// (CreateNamespaces) and the fd-passing socket (StartFdSocket). Each is
// started at most once per Monitor, on first request, and stopped by
// Shutdown after the containers are gone.

// FDSocketName is the fd-passing socket's name in the run directory.
const FDSocketName = "conmon-fd.sock"

// podStopTimeout bounds stopping the pause process during Shutdown.
const podStopTimeout = 5 * time.Second

// ErrNoPodID is returned by CreateNamespaces without a pod ID; its text is
// the one the conmon-rs client and CRI-O know.
var ErrNoPodID = pause.ErrNoPodID

// podServices holds the pod-wide singletons.
type podServices struct {
	mu    sync.Mutex
	pause *pause.Instance // guarded by mu; nil until CreateNamespaces
	fds   *fdstore.Server // guarded by mu; nil until StartFdSocket
}

// CreateNamespaces starts the pod's pause process in the requested
// namespaces and returns the five namespace files (ipc, pid, net, user,
// uts; unrequested ones are the host's). As in conmon-rs there is one
// pause process per monitor: later calls return the first one's files,
// whatever they ask for.
func (m *Monitor) CreateNamespaces(ctx context.Context, req NamespacesRequest) ([]NamespacePath, error) {
	if req.PodID == "" {
		return nil, fmt.Errorf("create namespaces: %w", ErrNoPodID)
	}
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	m.pod.mu.Lock()
	defer m.pod.mu.Unlock()
	if m.pod.pause == nil {
		opts := pause.Options{
			Binary:      m.cfg.PauseBinary,
			BasePath:    req.BasePath,
			PodID:       req.PodID,
			UIDMappings: req.UIDMappings,
			GIDMappings: req.GIDMappings,
			Reaper:      pauseReaper{m.reaper},
			Logger:      m.log.With("pod_id", req.PodID),
		}
		for _, ns := range req.Namespaces {
			switch ns {
			case NamespaceIPC:
				opts.IPC = true
			case NamespacePID:
				opts.PID = true
			case NamespaceNet:
				opts.Net = true
			case NamespaceUser:
				opts.User = true
			case NamespaceUTS:
				opts.UTS = true
			}
		}
		inst, err := pause.Create(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("init pause: %w", err)
		}
		m.pod.pause = inst
	}
	paths := m.pod.pause.Namespaces()
	out := make([]NamespacePath, len(paths))
	for i, p := range paths {
		// pause.Namespace has the same order as Namespace.
		out[i] = NamespacePath{Type: Namespace(p.Type), Path: p.Path}
	}
	return out, nil
}

// StartFdSocket starts the fd-passing socket in the run directory, once,
// and returns its path. Clients send fds over it and name the returned
// slots in CreateRequest.AdditionalFDs and LeakFDs.
func (m *Monitor) StartFdSocket(ctx context.Context) (string, error) {
	_, done, err := m.beginOp(ctx)
	if err != nil {
		return "", err
	}
	defer done()
	m.pod.mu.Lock()
	defer m.pod.mu.Unlock()
	if m.pod.fds == nil {
		s, err := fdstore.Listen(filepath.Join(m.runDir(), FDSocketName), m.log.With("component", "fd_socket"))
		if err != nil {
			return "", fmt.Errorf("start fd socket: %w", err)
		}
		m.pod.fds = s
	}
	return m.pod.fds.Path(), nil
}

// Take implements FDSource with the monitor's own fd socket.
func (p *podServices) Take(slot uint64) (*os.File, error) {
	p.mu.Lock()
	s := p.fds
	p.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("%w %d: no fd socket started", ErrNoFD, slot)
	}
	f, err := s.Take(slot)
	if err != nil {
		return nil, fmt.Errorf("%w %d: %w", ErrNoFD, slot, err)
	}
	return f, nil
}

// stop stops the pause process (unmounting its namespace files) and the
// fd socket (closing every fd not handed out).
func (p *podServices) stop(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	if p.pause != nil {
		if err := p.pause.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop pause: %w", err))
		}
	}
	if p.fds != nil {
		if err := p.fds.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close fd socket: %w", err))
		}
	}
	return errors.Join(errs...)
}

// pauseReaper starts the pause process through the monitor's single
// reaper and reports its exit code.
type pauseReaper struct{ r *reaper }

func (p pauseReaper) Start(cmd *exec.Cmd) (<-chan int, error) {
	c, err := p.r.start(cmd, false)
	if err != nil {
		return nil, err
	}
	out := make(chan int, 1)
	// Ends when the pause process exits; pause.Instance.Stop waits for it.
	go func() {
		out <- (<-c.exit).code()
		close(out)
	}()
	return out, nil
}

// adopt subscribes to the exit of a pause process handed over by an
// upgrade (a child of this process, proven alive by a pidfd as a
// container's init is) and reports its exit code.
func (p pauseReaper) adopt(pid int) <-chan int {
	pr := p.r.adopt(pid)
	out := make(chan int, 1)
	// Ends when the pause process exits; pause.Instance.Stop waits for it.
	go func() {
		ev := <-pr.exit
		pr.close()
		out <- ev.code()
		close(out)
	}()
	return out
}

// PauseMain is the body of `gomon pause`: the pause process itself when
// started by CreateNamespaces, or a standalone namespace holder like
// `conmonrs pause` when run by hand. It returns the process exit code.
func PauseMain(o PauseOptions) int {
	return pause.Main(pause.Options{
		BasePath:    o.BasePath,
		PodID:       o.PodID,
		IPC:         o.IPC,
		PID:         o.PID,
		Net:         o.Net,
		User:        o.User,
		UTS:         o.UTS,
		UIDMappings: o.UIDMappings,
		GIDMappings: o.GIDMappings,
		Logger:      o.Logger,
	})
}
