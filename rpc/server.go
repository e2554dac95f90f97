// Package rpc serves conmon-rs's Cap'n Proto interface on top of a monitor.
//
// The adapter decodes each request (either wire generation, see decode.go),
// releases the connection with call.Go() before anything that can wait, calls
// the Backend, and encodes the answer; handle (handle.go) runs these steps
// for every method. Errors become exceptions in one place,
// toException. The Server owns the accept loop and every live connection so
// that Close can end them.
package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
)

// Server serves the Conmon interface to any number of connections.
type Server struct {
	backend Backend
	info    VersionInfo
	log     *slog.Logger
	tracer  trace.Tracer

	mu        sync.Mutex
	listeners map[net.Listener]struct{}   // guarded by mu
	conns     map[*capnprpc.Conn]struct{} // guarded by mu
	closed    bool                        // guarded by mu
	done      chan struct{}               // closed by Close

	lim limitState
	// metrics counts RPCs; nil unless EnableMetrics (set before Serve).
	metrics *rpcMetrics
	// afterCall runs when a call has been answered; nil unless
	// AfterEachCall (set before Serve).
	afterCall func()

	wg sync.WaitGroup // one per connection watcher
}

// NewServer returns a Server answering with backend. info is what the
// version method reports; log receives connection-level errors.
func NewServer(backend Backend, info VersionInfo, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		backend:   backend,
		info:      info,
		log:       log,
		tracer:    otel.GetTracerProvider().Tracer("github.com/gomon-dev/gomon/rpc"),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*capnprpc.Conn]struct{}),
		done:      make(chan struct{}),
	}
}

// AfterEachCall makes the server run f after it has answered each call
// of a method that reaches the backend, on the call's goroutine: f must
// be quick and must not block. Call it before Serve.
func (s *Server) AfterEachCall(f func()) { s.afterCall = f }

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("rpc server closed")

// Serve accepts connections on l until Close, serving each concurrently,
// within the limits of limits.go. Accept errors are retried (see
// acceptLoop); Serve returns early only if l is closed under it. It closes
// l on return.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		_ = l.Close()
	}()

	return s.acceptLoop(l)
}

// ServeConn serves one established connection until the peer hangs up or
// the server closes. It does not block.
func (s *Server) ServeConn(c net.Conn) {
	boot := capnp.Client(proto.Conmon_ServerToClient(&adapter{s: s}))
	gate := newBootstrapGate(s.newTransport(c), bootstrapHold)
	gate.log = s.log
	conn := capnprpc.NewConn(gate, &capnprpc.Options{
		BootstrapClient: boot,
		Logger:          capnpLogger{s.log.With("component", "capnp")},
	})

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = conn.Close()
		return
	}
	s.conns[conn] = struct{}{}
	// Counted under mu, so a Close that has seen this connection also
	// waits for its watcher.
	s.wg.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.wg.Done()
		<-conn.Done()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()
}

// Close stops every listener and connection and waits for them to go. Calls
// still running in the backend are not waited for; cancel them through the
// backend. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	var errs []error
	for l := range s.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	conns := make([]*capnprpc.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		// A peer that already hung up makes Close report it; that is no
		// failure of ours.
		_ = c.Close()
	}
	s.wg.Wait()
	s.stopReclaim()
	return errors.Join(errs...)
}

// adapter implements the generated proto.Conmon_Server.
type adapter struct{ s *Server }

var _ proto.Conmon_Server = (*adapter)(nil)

// start begins the span of one RPC, named as conmon-rs names it. Its parent
// is the caller's trace context from the request metadata (W3C
// traceparent/tracestate, and baggage), so kubelet → CRI-O → gomon form one
// trace; without metadata it is a root span.
func (a *adapter) start(ctx context.Context, name string, md Metadata, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if len(md) > 0 {
		ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(md))
	}
	return a.s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// fail records err on the RPC's span and returns the exception for it.
func fail(span trace.Span, err error) error {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	return toException(err)
}

func containerID(id string) attribute.KeyValue { return attribute.String("container_id", id) }

func (a *adapter) Version(ctx context.Context, call proto.Conmon_version) error {
	decode := func(r proto.Conmon_VersionRequest) (versionRequest, Metadata, error) {
		v, err := decodeVersion(r)
		return v, v.metadata, err
	}
	info := func(_ context.Context, r versionRequest) (VersionInfo, error) {
		info := a.s.info
		if !r.verbose {
			info.CargoTree = ""
		}
		return info, nil
	}
	return handle(ctx, a, call, inOrder, "version", decode, nil, info,
		func(_ trace.Span, res proto.Conmon_version_Results, info VersionInfo) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			resp.SetProcessId(uint32(os.Getpid()))
			for _, f := range []struct {
				set func(string) error
				v   string
			}{
				{resp.SetVersion, info.Version},
				{resp.SetTag, info.Tag},
				{resp.SetCommit, info.Commit},
				{resp.SetBuildDate, info.BuildDate},
				{resp.SetTarget, info.Target},
				{resp.SetRustVersion, info.RustVersion},
				{resp.SetCargoVersion, info.CargoVersion},
				{resp.SetCargoTree, info.CargoTree},
			} {
				if err := f.set(f.v); err != nil {
					return err
				}
			}
			return nil
		})
}

func (a *adapter) CreateContainer(ctx context.Context, call proto.Conmon_createContainer) error {
	return handle(ctx, a, call, concurrent, "create_container", decodeCreate,
		idAttrs(func(r monitor.CreateRequest) string { return r.ID }), a.s.backend.CreateContainer,
		func(span trace.Span, res proto.Conmon_createContainer_Results, pid uint32) error {
			span.SetAttributes(attribute.Int("pid", int(pid)))
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			resp.SetContainerPid(pid)
			return nil
		})
}

func (a *adapter) ExecSyncContainer(ctx context.Context, call proto.Conmon_execSyncContainer) error {
	return handle(ctx, a, call, concurrent, "exec_sync_container", decodeExecSync,
		idAttrs(func(r monitor.ExecSyncRequest) string { return r.ID }), a.s.backend.ExecSync,
		func(span trace.Span, res proto.Conmon_execSyncContainer_Results, out monitor.ExecSyncResult) error {
			span.SetAttributes(attribute.Int("exit_code", int(out.ExitCode)), attribute.Bool("timed_out", out.TimedOut))
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			resp.SetExitCode(out.ExitCode)
			resp.SetTimedOut(out.TimedOut)
			if err := resp.SetStdout(out.Stdout); err != nil {
				return err
			}
			return resp.SetStderr(out.Stderr)
		})
}

func (a *adapter) AttachContainer(ctx context.Context, call proto.Conmon_attachContainer) error {
	return handle(ctx, a, call, concurrent, "attach_container", decodeAttach,
		idAttrs(func(r monitor.AttachRequest) string { return r.ID }), noValue(a.s.backend.Attach), nil)
}

func (a *adapter) ReopenLogContainer(ctx context.Context, call proto.Conmon_reopenLogContainer) error {
	return handle(ctx, a, call, concurrent, "reopen_log_container", decodeReopenLog,
		idAttrs(func(id string) string { return id }), noValue(a.s.backend.ReopenLog), nil)
}

func (a *adapter) SetWindowSizeContainer(ctx context.Context, call proto.Conmon_setWindowSizeContainer) error {
	attrs := func(ws windowSize) []attribute.KeyValue {
		return []attribute.KeyValue{
			containerID(ws.id),
			attribute.Int("width", int(ws.width)), attribute.Int("height", int(ws.height)),
		}
	}
	resize := func(ctx context.Context, ws windowSize) error {
		return a.s.backend.SetWindowSize(ctx, ws.id, ws.width, ws.height)
	}
	return handle(ctx, a, call, inOrder, "set_window_size_container", decodeSetWindowSize, attrs, noValue(resize), nil)
}

func (a *adapter) CreateNamespaces(ctx context.Context, call proto.Conmon_createNamespaces) error {
	// conmon-rs puts the pod ID in container_id on this span.
	return handle(ctx, a, call, concurrent, "create_namespaces", decodeCreateNamespaces,
		idAttrs(func(r monitor.NamespacesRequest) string { return r.PodID }), a.s.backend.CreateNamespaces,
		func(_ trace.Span, res proto.Conmon_createNamespaces_Results, paths []monitor.NamespacePath) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			l, err := resp.NewNamespaces(int32(len(paths)))
			if err != nil {
				return err
			}
			for i, p := range paths {
				l.At(i).SetType(namespaceToWire(p.Type))
				if err := l.At(i).SetPath(p.Path); err != nil {
					return err
				}
			}
			return nil
		})
}

func (a *adapter) StartFdSocket(ctx context.Context, call proto.Conmon_startFdSocket) error {
	open := func(ctx context.Context, _ none) (string, error) { return a.s.backend.StartFdSocket(ctx) }
	return handle(ctx, a, call, concurrent, "start_fd_socket", decodeStartFdSocket, nil, open,
		func(_ trace.Span, res proto.Conmon_startFdSocket_Results, path string) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			return resp.SetPath(path)
		})
}

func (a *adapter) ServeExecContainer(ctx context.Context, call proto.Conmon_serveExecContainer) error {
	return handle(ctx, a, call, concurrent, "serve_exec_container", decodeServeExec,
		idAttrs(func(r monitor.ServeExecRequest) string { return r.ID }), a.s.backend.ServeExec,
		func(_ trace.Span, res proto.Conmon_serveExecContainer_Results, url string) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			return resp.SetUrl(url)
		})
}

func (a *adapter) ServeAttachContainer(ctx context.Context, call proto.Conmon_serveAttachContainer) error {
	return handle(ctx, a, call, concurrent, "serve_attach_container", decodeServeAttach,
		idAttrs(func(r monitor.ServeAttachRequest) string { return r.ID }), a.s.backend.ServeAttach,
		func(_ trace.Span, res proto.Conmon_serveAttachContainer_Results, url string) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			return resp.SetUrl(url)
		})
}

func (a *adapter) ServePortForwardContainer(ctx context.Context, call proto.Conmon_servePortForwardContainer) error {
	return handle(ctx, a, call, concurrent, "serve_port_forward_container", decodeServePortForward, nil,
		a.s.backend.ServePortForward,
		func(_ trace.Span, res proto.Conmon_servePortForwardContainer_Results, url string) error {
			resp, err := res.NewResponse()
			if err != nil {
				return err
			}
			return resp.SetUrl(url)
		})
}

// capnpLogger logs the RPC system's own messages at debug level. They are
// about connections (a client that hangs up is reported as a "remote
// abort" error on every normal disconnect); failures of calls reach the
// caller as exceptions and are logged where they happen.
type capnpLogger struct{ l *slog.Logger }

func (c capnpLogger) Debug(msg string, args ...any) { c.l.Debug(msg, args...) }
func (c capnpLogger) Info(msg string, args ...any)  { c.l.Debug(msg, args...) }
func (c capnpLogger) Warn(msg string, args ...any)  { c.l.Debug(msg, args...) }
func (c capnpLogger) Error(msg string, args ...any) { c.l.Debug(msg, args...) }
