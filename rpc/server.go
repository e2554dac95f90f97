// Package rpc serves conmon-rs's Cap'n Proto interface on top of a monitor.
//
// The adapter decodes each request (either wire generation, see decode.go),
// releases the connection with call.Go() before anything that can wait, calls
// the Backend, and encodes the answer. Errors become exceptions in one place,
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
	conn := capnprpc.NewConn(newBootstrapGate(s.newTransport(c), bootstrapHold), &capnprpc.Options{
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
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, err := decodeVersion(req)
	if err != nil {
		return toException(err)
	}
	_, span := a.start(ctx, "version", r.metadata)
	defer span.End()
	resp, err := response(call.AllocResults)
	if err != nil {
		return toException(err)
	}
	info := a.s.info
	resp.SetProcessId(uint32(os.Getpid()))
	tree := ""
	if r.verbose {
		tree = info.CargoTree
	}
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
		{resp.SetCargoTree, tree},
	} {
		if err := f.set(f.v); err != nil {
			return toException(err)
		}
	}
	return nil
}

func (a *adapter) CreateContainer(ctx context.Context, call proto.Conmon_createContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeCreate(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	ctx, span := a.start(ctx, "create_container", md, containerID(r.ID))
	defer span.End()
	pid, err := a.s.backend.CreateContainer(ctx, r)
	if err != nil {
		return fail(span, err)
	}
	span.SetAttributes(attribute.Int("pid", int(pid)))
	resp, err := response(call.AllocResults)
	if err != nil {
		return toException(err)
	}
	resp.SetContainerPid(pid)
	return nil
}

func (a *adapter) ExecSyncContainer(ctx context.Context, call proto.Conmon_execSyncContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeExecSync(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	ctx, span := a.start(ctx, "exec_sync_container", md, containerID(r.ID))
	defer span.End()
	out, err := a.s.backend.ExecSync(ctx, r)
	if err != nil {
		return fail(span, err)
	}
	span.SetAttributes(attribute.Int("exit_code", int(out.ExitCode)), attribute.Bool("timed_out", out.TimedOut))
	resp, err := response(call.AllocResults)
	if err != nil {
		return toException(err)
	}
	resp.SetExitCode(out.ExitCode)
	resp.SetTimedOut(out.TimedOut)
	if err := resp.SetStdout(out.Stdout); err != nil {
		return toException(err)
	}
	if err := resp.SetStderr(out.Stderr); err != nil {
		return toException(err)
	}
	return nil
}

func (a *adapter) AttachContainer(ctx context.Context, call proto.Conmon_attachContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeAttach(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	ctx, span := a.start(ctx, "attach_container", md, containerID(r.ID))
	defer span.End()
	if err := a.s.backend.Attach(ctx, r); err != nil {
		return fail(span, err)
	}
	_, err = call.AllocResults()
	return toException(err)
}

func (a *adapter) ReopenLogContainer(ctx context.Context, call proto.Conmon_reopenLogContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	id, md, err := decodeReopenLog(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	ctx, span := a.start(ctx, "reopen_log_container", md, containerID(id))
	defer span.End()
	if err := a.s.backend.ReopenLog(ctx, id); err != nil {
		return fail(span, err)
	}
	_, err = call.AllocResults()
	return toException(err)
}

func (a *adapter) SetWindowSizeContainer(ctx context.Context, call proto.Conmon_setWindowSizeContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	ws, md, err := decodeSetWindowSize(req)
	if err != nil {
		return toException(err)
	}
	ctx, span := a.start(ctx, "set_window_size_container", md, containerID(ws.id),
		attribute.Int("width", int(ws.width)), attribute.Int("height", int(ws.height)))
	defer span.End()
	if err := a.s.backend.SetWindowSize(ctx, ws.id, ws.width, ws.height); err != nil {
		return fail(span, err)
	}
	_, err = call.AllocResults()
	return toException(err)
}

func (a *adapter) CreateNamespaces(ctx context.Context, call proto.Conmon_createNamespaces) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeCreateNamespaces(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	// conmon-rs puts the pod ID in container_id on this span.
	ctx, span := a.start(ctx, "create_namespaces", md, containerID(r.PodID))
	defer span.End()
	paths, err := a.s.backend.CreateNamespaces(ctx, r)
	if err != nil {
		return fail(span, err)
	}
	resp, err := response(call.AllocResults)
	if err != nil {
		return toException(err)
	}
	l, err := resp.NewNamespaces(int32(len(paths)))
	if err != nil {
		return toException(err)
	}
	for i, p := range paths {
		l.At(i).SetType(namespaceToWire(p.Type))
		if err := l.At(i).SetPath(p.Path); err != nil {
			return toException(err)
		}
	}
	return nil
}

func (a *adapter) StartFdSocket(ctx context.Context, call proto.Conmon_startFdSocket) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	d := decoder{}
	md := d.textMap("metadata", req.Metadata)
	if d.err != nil {
		return toException(d.err)
	}
	call.Go()
	return a.handOut(ctx, "start_fd_socket", md, nil, a.s.backend.StartFdSocket, func(path string) error {
		resp, err := response(call.AllocResults)
		if err != nil {
			return err
		}
		return resp.SetPath(path)
	})
}

func (a *adapter) ServeExecContainer(ctx context.Context, call proto.Conmon_serveExecContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeServeExec(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	return a.handOut(ctx, "serve_exec_container", md, []attribute.KeyValue{containerID(r.ID)},
		func(ctx context.Context) (string, error) { return a.s.backend.ServeExec(ctx, r) },
		func(url string) error {
			resp, err := response(call.AllocResults)
			if err != nil {
				return err
			}
			return resp.SetUrl(url)
		})
}

func (a *adapter) ServeAttachContainer(ctx context.Context, call proto.Conmon_serveAttachContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	r, md, err := decodeServeAttach(req)
	if err != nil {
		return toException(err)
	}
	call.Go()
	return a.handOut(ctx, "serve_attach_container", md, []attribute.KeyValue{containerID(r.ID)},
		func(ctx context.Context) (string, error) { return a.s.backend.ServeAttach(ctx, r) },
		func(url string) error {
			resp, err := response(call.AllocResults)
			if err != nil {
				return err
			}
			return resp.SetUrl(url)
		})
}

func (a *adapter) ServePortForwardContainer(ctx context.Context, call proto.Conmon_servePortForwardContainer) error {
	req, err := call.Args().Request()
	if err != nil {
		return toException(field("request", err))
	}
	d := decoder{}
	path := d.text("netNsPath", req.NetNsPath)
	md := d.textMap("metadata", req.Metadata)
	if d.err != nil {
		return toException(d.err)
	}
	call.Go()
	return a.handOut(ctx, "serve_port_forward_container", md, nil,
		func(ctx context.Context) (string, error) { return a.s.backend.ServePortForward(ctx, path) },
		func(url string) error {
			resp, err := response(call.AllocResults)
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

// handOut answers the methods whose only result is a string the backend
// hands out (the fd socket's path, a streaming session's URL): under the
// method's span, get produces it and set writes it into the response.
func (a *adapter) handOut(ctx context.Context, name string, md Metadata, attrs []attribute.KeyValue,
	get func(context.Context) (string, error), set func(string) error,
) error {
	ctx, span := a.start(ctx, name, md, attrs...)
	defer span.End()
	v, err := get(ctx)
	if err != nil {
		return fail(span, err)
	}
	return toException(set(v))
}

// results is a method's generated results struct.
type results[T any] interface {
	NewResponse() (T, error)
}

// response allocates a call's results and its response struct, the first
// step of every answer.
func response[T any, R results[T]](alloc func() (R, error)) (T, error) {
	res, err := alloc()
	if err != nil {
		var zero T
		return zero, err
	}
	return res.NewResponse()
}
