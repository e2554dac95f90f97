package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/monitor"
	"github.com/gomon-dev/gomon/rpc/proto"
)

// panicky is a recorder whose create and window-size calls panic: one
// method that releases the connection first (concurrent) and one answered
// in order.
type panicky struct{ recorder }

func (*panicky) CreateContainer(context.Context, monitor.CreateRequest) (uint32, error) {
	panicInCreate()
	return 0, nil
}

func (*panicky) SetWindowSize(_ context.Context, id string, _, _ uint16) error {
	var sizes []int
	sizes[len(id)]++ // index out of range: a runtime error, not a panic call
	return nil
}

func panicInCreate() { panic("injected create panic") }

// String returns what was written (syncBuffer is in tracing_test.go).
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A panic in a method fails that call with an exception; the daemon keeps
// serving the same connection and new ones, the panic is counted and
// logged with its stack. Before handle recovered, capnp-go let the panic
// end the test binary (the daemon, in production).
func TestPanicFailsOnlyThatCall(t *testing.T) {
	var logs syncBuffer
	sock := filepath.Join(t.TempDir(), "conmon.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	s := NewServer(&panicky{}, testInfo, slog.New(slog.NewJSONHandler(&logs, nil)))
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		must(t, s.Close())
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	dial := func() proto.Conmon {
		c, err := net.Dial("unix", sock)
		must(t, err)
		conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
		t.Cleanup(func() { _ = conn.Close() })
		return proto.Conmon(conn.Bootstrap(context.Background()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := dial()
	before := contain.PanicsOf(contain.RPC)

	for range 3 {
		fc, relc := client.CreateContainer(ctx, nil)
		_, err := fc.Struct()
		relc()
		if err == nil || !strings.Contains(err.Error(), "injected create panic") {
			t.Fatalf("create: %v, want the panic as an error", err)
		}
		fw, relw := client.SetWindowSizeContainer(ctx, nil)
		_, err = fw.Struct()
		relw()
		if err == nil || !strings.Contains(err.Error(), "panicked") {
			t.Fatalf("set window size: %v, want the panic as an error", err)
		}
		// The same connection still serves.
		fe, rele := client.ExecSyncContainer(ctx, nil)
		res, err := fe.Struct()
		if err != nil {
			t.Fatalf("exec sync after panics: %v", err)
		}
		if resp, _ := res.Response(); resp.ExitCode() != 3 {
			t.Fatalf("exec sync exit code %d, want 3", resp.ExitCode())
		}
		rele()
	}
	// So does a new connection.
	fv, relv := dial().Version(ctx, nil)
	defer relv()
	if _, err := fv.Struct(); err != nil {
		t.Fatalf("version on a new connection: %v", err)
	}

	if got := contain.PanicsOf(contain.RPC) - before; got != 6 {
		t.Errorf("recovered %d RPC panics, want 6", got)
	}
	out := logs.String()
	for _, want := range []string{`"method":"create_container"`, `"method":"set_window_size_container"`,
		"panicInCreate", "index out of range", `"kind":"rpc"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// The exception carries the panic, which unwraps to a runtime error
// for a runtime panic.
func TestPanicBecomesException(t *testing.T) {
	err := toException(&contain.PanicError{Kind: contain.RPC, Value: errors.New("x")})
	if err == nil || !strings.Contains(err.Error(), "rpc panicked: x") {
		t.Fatalf("exception %v", err)
	}
}

// panicTransport is a transport whose receive panics, like a bug in
// decoding a hostile peer's bytes.
type panicTransport struct{ capnprpc.Transport }

func (panicTransport) RecvMessage() (transport.IncomingMessage, error) {
	panic("injected decode panic")
}

// A panic while receiving a connection's message, on capnp-go's receive
// goroutine, is returned as the error that ends that connection.
func TestPanicInReceiveEndsTheConnection(t *testing.T) {
	var logs syncBuffer
	g := newBootstrapGate(panicTransport{}, bootstrapHold)
	g.log = slog.New(slog.NewJSONHandler(&logs, nil))
	before := contain.PanicsOf(contain.RPC)
	in, err := g.RecvMessage()
	var p *contain.PanicError
	if in != nil || !errors.As(err, &p) || p.Value != "injected decode panic" {
		t.Fatalf("RecvMessage = %v, %v; want the panic as an error", in, err)
	}
	if got := contain.PanicsOf(contain.RPC) - before; got != 1 {
		t.Errorf("counted %d panics, want 1", got)
	}
	if !strings.Contains(logs.String(), "panicTransport.RecvMessage") {
		t.Errorf("log lacks the stack:\n%s", logs.String())
	}
}
