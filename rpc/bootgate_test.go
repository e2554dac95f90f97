package rpc

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomon-dev/gomon/rpc/proto"
)

// rawPeer speaks the Cap'n Proto RPC protocol message by message, to put
// the server in states a well-behaved client library only reaches by luck.
type rawPeer struct {
	t  *testing.T
	c  net.Conn
	tr transport.Transport
}

// serveRaw starts a Server on a unix socket and returns a function that
// dials it as a rawPeer, and one that dials it as a capnp client and returns
// the bootstrap capability.
func serveRaw(t *testing.T) (raw func() *rawPeer, dial func() proto.Conmon) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "conmon.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	s := NewServer(&recorder{}, testInfo, nil)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		must(t, s.Close())
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	raw = func() *rawPeer {
		c, err := net.Dial("unix", sock)
		must(t, err)
		tr := transport.NewStream(c)
		t.Cleanup(func() { _ = tr.Close() })
		return &rawPeer{t: t, c: c, tr: tr}
	}
	return raw, func() proto.Conmon {
		c, err := net.Dial("unix", sock)
		must(t, err)
		conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
		t.Cleanup(func() { _ = conn.Close() })
		return proto.Conmon(conn.Bootstrap(context.Background()))
	}
}

func (p *rawPeer) send(build func(rpccp.Message) error) {
	p.t.Helper()
	out, err := p.tr.NewMessage()
	must(p.t, err)
	defer out.Release()
	must(p.t, build(out.Message()))
	must(p.t, out.Send())
}

func (p *rawPeer) bootstrap(qid uint32) {
	p.t.Helper()
	p.send(func(m rpccp.Message) error {
		b, err := m.NewBootstrap()
		b.SetQuestionId(qid)
		return err
	})
}

func (p *rawPeer) finish(qid uint32) {
	p.t.Helper()
	p.send(func(m rpccp.Message) error {
		f, err := m.NewFinish()
		f.SetQuestionId(qid)
		return err
	})
}

// callVersion sends Conmon.version as question qid, addressed to the answer
// of question target (pipelined on it).
func (p *rawPeer) callVersion(qid, target uint32) {
	p.t.Helper()
	p.send(func(m rpccp.Message) error {
		call, err := m.NewCall()
		if err != nil {
			return err
		}
		call.SetQuestionId(qid)
		call.SetInterfaceId(proto.Conmon_TypeID)
		call.SetMethodId(0)
		tgt, err := call.NewTarget()
		if err != nil {
			return err
		}
		pa, err := tgt.NewPromisedAnswer()
		if err != nil {
			return err
		}
		pa.SetQuestionId(target)
		payload, err := call.NewParams()
		if err != nil {
			return err
		}
		params, err := proto.NewConmon_version_Params(payload.Segment())
		if err != nil {
			return err
		}
		if _, err := params.NewRequest(); err != nil {
			return err
		}
		return payload.SetContent(params.ToPtr())
	})
}

// recv reads the next message before the deadline. It returns the message's
// kind and, for a Return, its answer ID and whether it carries results; ok
// is false when nothing came before the deadline.
type received struct {
	which    rpccp.Message_Which
	answerID uint32
	results  bool
}

func (p *rawPeer) recv(deadline time.Time) (r received, ok bool, err error) {
	p.t.Helper()
	must(p.t, p.c.SetReadDeadline(deadline))
	in, err := p.tr.RecvMessage()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return received{}, false, nil
	}
	if err != nil {
		return received{}, false, err
	}
	defer in.Release()
	m := in.Message()
	r.which = m.Which()
	if r.which == rpccp.Message_Which_return {
		ret, err := m.Return()
		must(p.t, err)
		r.answerID = ret.AnswerId()
		r.results = ret.Which() == rpccp.Return_Which_results
	}
	return r, true, nil
}

// The answer to a Bootstrap waits for the peer's next message, so that a
// client's call pipelined on the bootstrap is on the wire before the client
// can see the answer; then the bootstrap's answer comes first and the call
// is served on it.
func TestBootstrapAnswerWaitsForPeersNextMessage(t *testing.T) {
	raw, _ := serveRaw(t)
	p := raw()
	p.bootstrap(0)
	// The window is shorter than bootstrapHold, counted from before the
	// server can have read the Bootstrap: with the gate nothing can arrive.
	if r, ok, err := p.recv(time.Now().Add(bootstrapHold / 2)); err != nil || ok {
		t.Fatalf("before the next message: got %+v (ok=%v, err=%v), want nothing", r, ok, err)
	}
	p.callVersion(1, 0)
	var got []received
	for len(got) < 2 {
		r, ok, err := p.recv(time.Now().Add(30 * time.Second))
		if err != nil || !ok {
			t.Fatalf("after %+v: recv: ok=%v err=%v", got, ok, err)
		}
		got = append(got, r)
	}
	want := []received{
		{which: rpccp.Message_Which_return, answerID: 0, results: true},
		{which: rpccp.Message_Which_return, answerID: 1, results: true},
	}
	if got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("messages after the call: %+v, want %+v", got, want)
	}
}

// A client that waits for the bootstrap capability before it sends anything
// else still gets it, after bootstrapHold.
func TestBootstrapAnswerWithoutNextMessage(t *testing.T) {
	_, dial := serveRaw(t)
	client := dial()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, client.Resolve(ctx))
	f, rel := client.Version(ctx, nil)
	defer rel()
	_, err := f.Struct()
	must(t, err)
}

// A call addressed to its own question's answer is what the conmon-rs
// client's capnp library sends when it reuses the finished bootstrap
// question's ID for its call. The capnp library used to dereference a nil
// pipeline caller on it and panic in its own goroutine, killing the daemon
// (and this test binary). It now ends that connection, and the server keeps
// serving.
func TestSelfAddressedCallEndsOnlyItsConnection(t *testing.T) {
	raw, dial := serveRaw(t)
	p := raw()
	p.bootstrap(0)
	p.finish(0)
	p.callVersion(0, 0)
	for {
		r, ok, err := p.recv(time.Now().Add(30 * time.Second))
		if err != nil {
			break // the server hung up
		}
		if !ok {
			t.Fatal("the connection is still open 30 s after the self-addressed call")
		}
		if r.which == rpccp.Message_Which_abort {
			break
		}
		if r.which == rpccp.Message_Which_return && r.answerID == 0 && r.results {
			t.Logf("bootstrap answered before the call was refused: %+v", r)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, rel := dial().Version(ctx, nil)
	defer rel()
	_, err := f.Struct()
	must(t, err)
}
