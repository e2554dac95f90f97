// Package upgrade is the daemon's side of an upgrade in place
// (docs/upgrade.md): the control socket that `gomon upgrade` and SIGHUP
// drive, the gates that hold new connections and calls during the
// handoff, the dry run of the new binary and the exec; and in the new
// process, the answer to whoever asked.
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc"
)

// Gate is the RPC backend with a gate in front of every call: while it is
// closed, new calls wait at it (on connections accepted before the
// upgrade began), and Close waits for the calls already inside. After the
// exec those waiting calls' connections are gone with the old process:
// their clients see the connection end and dial again.
type Gate struct {
	b rpc.Backend

	mu       sync.Mutex
	cond     *sync.Cond
	closed   bool // guarded by mu
	inflight int  // guarded by mu
}

var _ rpc.Backend = (*Gate)(nil)

// NewGate returns an open gate in front of b.
func NewGate(b rpc.Backend) *Gate {
	g := &Gate{b: b}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// ErrBusy is a gate that could not close in time: calls were still
// running.
var ErrBusy = errors.New("calls still running")

// Close closes the gate and waits, until ctx ends, for the calls inside
// to finish. On ErrBusy the gate is open again.
func (g *Gate) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.inflight > 0 {
		if ctx.Err() != nil {
			n := g.inflight
			g.closed = false
			g.cond.Broadcast()
			return fmt.Errorf("%w: %d call(s) still running: %w", ErrBusy, n, ctx.Err())
		}
		g.cond.Wait()
	}
	return nil
}

// Open lets calls through again.
func (g *Gate) Open() {
	g.mu.Lock()
	g.closed = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *Gate) enter() {
	g.mu.Lock()
	for g.closed {
		g.cond.Wait()
	}
	g.inflight++
	g.mu.Unlock()
}

func (g *Gate) exit() {
	g.mu.Lock()
	g.inflight--
	g.cond.Broadcast()
	g.mu.Unlock()
}

// The Backend methods: each passes the gate.

func (g *Gate) CreateContainer(ctx context.Context, req monitor.CreateRequest) (uint32, error) {
	g.enter()
	defer g.exit()
	return g.b.CreateContainer(ctx, req)
}

func (g *Gate) ExecSync(ctx context.Context, req monitor.ExecSyncRequest) (monitor.ExecSyncResult, error) {
	g.enter()
	defer g.exit()
	return g.b.ExecSync(ctx, req)
}

func (g *Gate) Attach(ctx context.Context, req monitor.AttachRequest) error {
	g.enter()
	defer g.exit()
	return g.b.Attach(ctx, req)
}

func (g *Gate) ReopenLog(ctx context.Context, id string) error {
	g.enter()
	defer g.exit()
	return g.b.ReopenLog(ctx, id)
}

func (g *Gate) SetWindowSize(ctx context.Context, id string, width, height uint16) error {
	g.enter()
	defer g.exit()
	return g.b.SetWindowSize(ctx, id, width, height)
}

func (g *Gate) CreateNamespaces(ctx context.Context, req monitor.NamespacesRequest) ([]monitor.NamespacePath, error) {
	g.enter()
	defer g.exit()
	return g.b.CreateNamespaces(ctx, req)
}

func (g *Gate) StartFdSocket(ctx context.Context) (string, error) {
	g.enter()
	defer g.exit()
	return g.b.StartFdSocket(ctx)
}

func (g *Gate) ServeExec(ctx context.Context, req monitor.ServeExecRequest) (string, error) {
	g.enter()
	defer g.exit()
	return g.b.ServeExec(ctx, req)
}

func (g *Gate) ServeAttach(ctx context.Context, req monitor.ServeAttachRequest) (string, error) {
	g.enter()
	defer g.exit()
	return g.b.ServeAttach(ctx, req)
}

func (g *Gate) ServePortForward(ctx context.Context, netNsPath string) (string, error) {
	g.enter()
	defer g.exit()
	return g.b.ServePortForward(ctx, netNsPath)
}

// Listener is conmon.sock's listener with a pause: while paused, Accept
// does not take connections, which queue in the socket's backlog (the
// listener stays open, so a client's connect succeeds and its call is
// answered after the upgrade, by the new process).
type Listener struct {
	*net.UnixListener

	mu        sync.Mutex
	cond      *sync.Cond
	paused    bool // guarded by mu
	accepting bool // guarded by mu; an Accept is in the kernel
}

// NewListener wraps l.
func NewListener(l *net.UnixListener) *Listener {
	pl := &Listener{UnixListener: l}
	pl.cond = sync.NewCond(&pl.mu)
	return pl
}

// Accept waits while the listener is paused, then accepts.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		for l.paused {
			l.cond.Wait()
		}
		l.accepting = true
		l.mu.Unlock()
		c, err := l.UnixListener.Accept()
		l.mu.Lock()
		l.accepting = false
		paused := l.paused
		l.cond.Broadcast()
		l.mu.Unlock()
		var ne net.Error
		if err != nil && paused && errors.As(err, &ne) && ne.Timeout() {
			continue // Pause's deadline: wait for Resume
		}
		return c, err
	}
}

// Pause stops accepting: an Accept in progress returns (through a
// deadline) and the next waits for Resume. A connection accepted just
// before is served as usual.
func (l *Listener) Pause() {
	l.mu.Lock()
	l.paused = true
	_ = l.SetDeadline(time.Now()) // a closed listener: Accept fails anyway
	for l.accepting {
		l.cond.Wait()
	}
	l.mu.Unlock()
}

// Resume accepts again.
func (l *Listener) Resume() {
	l.mu.Lock()
	l.paused = false
	_ = l.SetDeadline(time.Time{})
	l.cond.Broadcast()
	l.mu.Unlock()
}
