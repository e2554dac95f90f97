package monitor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gomon-dev/gomon/monitor/internal/stream"
)

// Streaming (docs/contract.md, "Streaming"): ServeExec, ServeAttach and
// ServePortForward register a single-use session with the monitor's
// streaming server and return its URL; the client (CRI-O hands the URL to
// the kubelet's client) then connects over WebSocket. The server binds
// 127.0.0.1:<random port> on first use and, unlike conmon-rs, stops on
// Shutdown. Sessions not used within an hour, or pushed out by 256 newer
// ones, are gone (404).
//
// Exec and attach sessions do their work inside a monitor operation
// (beginOp), so Shutdown cancels and waits for them like any RPC.

// streamService holds the monitor's streaming server.
type streamService struct {
	mu  sync.Mutex
	srv *stream.Server // guarded by mu; nil until first use
}

// streamServer returns the streaming server, creating it on first use.
func (m *Monitor) streamServer() (*stream.Server, error) {
	m.mu.Lock()
	down := m.shutdown
	m.mu.Unlock()
	if down {
		return nil, ErrShutdown
	}
	m.stream.mu.Lock()
	defer m.stream.mu.Unlock()
	if m.stream.srv == nil {
		m.stream.srv = stream.New(stream.Options{Logger: m.log.With("component", "streaming")})
	}
	return m.stream.srv, nil
}

// stop closes the streaming server, if it was started, and waits within
// ctx for its sessions.
func (s *streamService) stop(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close(ctx)
}

// addSession registers a session with add and maps the server's errors.
func (m *Monitor) addSession(add func(*stream.Server) (string, error)) (string, error) {
	srv, err := m.streamServer()
	if err != nil {
		return "", err
	}
	url, err := add(srv)
	if errors.Is(err, stream.ErrClosed) {
		return "", ErrShutdown
	}
	if err != nil {
		return "", fmt.Errorf("start streaming server: %w", err)
	}
	return url, nil
}

// running returns container id unless it is unknown or has exited
// (ErrNotFound, conmon-rs's "child not available").
func (m *Monitor) running(id string) (*container, error) {
	c, _, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	if c == nil { // a tombstone
		return nil, fmt.Errorf("container %s has exited: %w", id, ErrNotFound)
	}
	if st, _ := c.snapshot(); st == stateExited {
		return nil, fmt.Errorf("container %s has exited: %w", id, ErrNotFound)
	}
	return c, nil
}

// ServeExec registers a streaming exec of req.Command in the running
// container req.ID and returns its URL, http://127.0.0.1:<port>/exec/<uuid>.
// The command starts when a client connects (Kubernetes remote command
// protocol over WebSocket, as client-go's NewWebSocketExecutor speaks
// it); the client gets its exit status and the connection closes when it
// exits. An unknown or exited container is ErrNotFound.
func (m *Monitor) ServeExec(ctx context.Context, req ServeExecRequest) (string, error) {
	if len(req.Command) == 0 {
		return "", fmt.Errorf("exec command is required: %w", ErrInvalidArgument)
	}
	if _, err := m.running(req.ID); err != nil {
		return "", err
	}
	req.Command = append([]string(nil), req.Command...)
	cmd := stream.Command{
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, TTY: req.TTY,
		Run: func(ctx context.Context, sio stream.IO) (int, error) { return m.streamExec(ctx, req, sio) },
	}
	return m.addSession(func(s *stream.Server) (string, error) { return s.AddExec(cmd) })
}

// ServeAttach registers a streaming attach to the running container req.ID
// and returns its URL, http://127.0.0.1:<port>/attach/<uuid>. A connected
// client gets the container's live output (the streams it asked for) and
// its input goes to the container's stdin, until the container exits. An
// unknown or exited container is ErrNotFound.
func (m *Monitor) ServeAttach(ctx context.Context, req ServeAttachRequest) (string, error) {
	c, err := m.running(req.ID)
	if err != nil {
		return "", err
	}
	cmd := stream.Command{
		Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, TTY: c.req.Terminal,
		Run: func(ctx context.Context, sio stream.IO) (int, error) { return m.streamAttach(ctx, req.ID, sio) },
	}
	return m.addSession(func(s *stream.Server) (string, error) { return s.AddAttach(cmd) })
}

// ServePortForward registers a port-forward session into the network
// namespace at netNsPath (e.g. the pod's /var/run/netns/<name> or
// /proc/<pid>/ns/net) and returns its URL,
// http://127.0.0.1:<port>/port-forward/<uuid>. Clients tunnel the SPDY
// port-forward protocol over WebSocket (client-go's
// portforward.NewSPDYOverWebsocketDialer); each forwarded connection is
// dialled to 127.0.0.1:<port> inside the namespace. The path is not
// checked here (conmon-rs does not either); a bad one fails each
// connection with a message on its error stream. An empty path forwards
// to gomon's own network namespace (a host-network pod has no netns file).
func (m *Monitor) ServePortForward(ctx context.Context, netNsPath string) (string, error) {
	return m.addSession(func(s *stream.Server) (string, error) { return s.AddPortForward(netNsPath) })
}
