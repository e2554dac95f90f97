package rpc

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/gomon-dev/gomon/rpc/proto"
	"github.com/gomon-dev/gomon/rpc/protov0"
)

// teeConn records what a client writes.
type teeConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *teeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// recordSession returns the bytes a real client sends for a few calls of
// both generations: seeds that mutate into near-valid messages.
func recordSession(tb testing.TB) []byte {
	s := NewServer(&recorder{}, testInfo, nil)
	defer func() { _ = s.Close() }()
	a, b := net.Pipe()
	s.ServeConn(a)
	tee := &teeConn{Conn: b}
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(tee), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v1 := proto.Conmon(conn.Bootstrap(ctx))
	f, rel := v1.Version(ctx, func(p proto.Conmon_version_Params) error {
		r, err := p.NewRequest()
		r.SetVerbose(true)
		return err
	})
	_, _ = f.Struct()
	rel()
	fc, relc := v1.CreateContainer(ctx, func(p proto.Conmon_createContainer_Params) error {
		r, err := p.NewRequest()
		if err != nil {
			return err
		}
		return r.SetId("c")
	})
	_, _ = fc.Struct()
	relc()
	v0 := protov0.Conmon(conn.Bootstrap(ctx))
	f0, rel0 := v0.ExecSyncContainer(ctx, func(p protov0.Conmon_execSyncContainer_Params) error {
		r, err := p.NewRequest()
		if err != nil {
			return err
		}
		return r.SetMetadataOld([]byte("{}"))
	})
	_, _ = f0.Struct()
	rel0()
	_ = conn.Close()
	tee.mu.Lock()
	defer tee.mu.Unlock()
	return bytes.Clone(tee.out.Bytes())
}

// FuzzConnection feeds arbitrary bytes to a server connection. The server
// must not panic, and must go on serving other connections.
func FuzzConnection(f *testing.F) {
	session := recordSession(f)
	f.Add(session)
	f.Add(session[:len(session)/2])
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewServer(&recorder{}, testInfo, nil)
		defer func() { _ = s.Close() }()

		a, b := net.Pipe()
		s.ServeConn(a)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = b.SetDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = b.Write(data)
			// Drain whatever the server answers until it hangs up or the
			// deadline passes.
			buf := make([]byte, 4096)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		<-done
		_ = b.Close()

		// The server still answers a well-formed client.
		c, d := net.Pipe()
		s.ServeConn(c)
		conn := capnprpc.NewConn(capnprpc.NewStreamTransport(d), nil)
		defer func() { _ = conn.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fv, rel := proto.Conmon(conn.Bootstrap(ctx)).Version(ctx, nil)
		defer rel()
		if _, err := fv.Struct(); err != nil {
			t.Fatalf("version after garbage: %v", err)
		}
	})
}
