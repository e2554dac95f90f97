package rpc

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/rpc/transport"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"github.com/gomon-dev/gomon/internal/contain"
)

// bootstrapHold bounds how long the answer to a Bootstrap waits for the
// peer's next message. Every conmon-rs client sends its first call right
// behind the Bootstrap, so for them the wait ends when that call arrives; a
// client that waits for the bootstrap capability before sending anything
// gets it after this long.
const bootstrapHold = 2 * time.Second

// errSelfTargetedCall ends a connection whose peer sent a call that names
// its own question as the promised answer it is addressed to.
var errSelfTargetedCall = errors.New("call addressed to its own question's answer")

// bootstrapGate is the transport of one served connection. It writes the
// answer to a Bootstrap only once the peer's next message has been read
// (or after bootstrapHold, or when the connection ends), and it refuses
// calls addressed to their own question.
//
// The conmon-rs Go client dials a connection per call, sends Bootstrap and
// then its call, pipelined on the bootstrap promise. Its capnp library
// (v3.0.1-alpha.2 in CRI-O 1.34, v3.1.0-alpha.2 later) misbehaves when the
// bootstrap answer has been processed before that call left the client:
//
//   - the call reads the bootstrap capability from the answer's message,
//     which the library has already released, and fails inside the client
//     with "call on null client" (go-capnp issue #572);
//   - or the library has already finished the bootstrap question and hands
//     its ID to the call, which then names itself as the promised answer it
//     is addressed to. Our capnp library takes that for an unanswered call,
//     dereferences its nil pipeline caller in a goroutine of its own, and
//     the whole daemon dies with every container's monitor.
//
// Holding the answer until the peer's next message has been read makes both
// impossible for a client that pipelines its call: that call is on the wire,
// built on the unanswered promise, before the answer leaves us. The
// self-addressed call is still refused here, so that a broken or hostile
// peer ends its connection and not the daemon.
type bootstrapGate struct {
	capnprpc.Transport
	hold time.Duration
	log  *slog.Logger // for a recovered panic (see RecvMessage); nil: not logged

	mu sync.Mutex // guards held, waiting and ended
	// held maps the question ID of each Bootstrap whose answer has not been
	// sent yet to the channel closed when that answer may go.
	held map[uint32]chan struct{}
	// waiting is the channel of the held answer still waiting for the peer's
	// next message.
	waiting chan struct{}
	// ended is set once the peer's stream ended or the transport closed:
	// nothing is held from then on.
	ended bool
}

func newBootstrapGate(t capnprpc.Transport, hold time.Duration) *bootstrapGate {
	return &bootstrapGate{Transport: t, hold: hold, held: make(map[uint32]chan struct{})}
}

// RecvMessage reads the peer's next message. Reading any message releases
// the answers held for earlier Bootstraps; reading a Bootstrap holds its
// answer.
//
// It runs on capnp-go's receive goroutine, which does not recover, over
// the peer's bytes (the codec's limits and decoding, then the checks
// here): a panic in it is recovered, logged, counted (contain.RPC) and
// returned as the error that ends this connection only.
func (g *bootstrapGate) RecvMessage() (in transport.IncomingMessage, err error) {
	defer contain.Recover(g.log, contain.RPC, func(p *contain.PanicError) { in, err = nil, p })
	in, err = g.Transport.RecvMessage()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseWaiting()
	if err != nil {
		g.ended = true
		return nil, err
	}
	m := in.Message()
	switch m.Which() {
	case rpccp.Message_Which_bootstrap:
		// A malformed Bootstrap is the library's to report; it is not held.
		if b, err := m.Bootstrap(); err == nil && !g.ended {
			ch := make(chan struct{})
			g.held[b.QuestionId()] = ch
			g.waiting = ch
		}
	case rpccp.Message_Which_call:
		if selfTargeted(m) {
			in.Release()
			g.ended = true
			return nil, fmt.Errorf("refuse incoming call: %w", errSelfTargetedCall)
		}
	}
	return in, nil
}

// selfTargeted reports whether m, a Call, is addressed to the answer of its
// own question.
func selfTargeted(m rpccp.Message) bool {
	call, err := m.Call()
	if err != nil {
		return false
	}
	tgt, err := call.Target()
	if err != nil || tgt.Which() != rpccp.MessageTarget_Which_promisedAnswer {
		return false
	}
	pa, err := tgt.PromisedAnswer()
	return err == nil && pa.QuestionId() == call.QuestionId()
}

// releaseWaiting lets the held answer waiting for the peer's next message
// go. Every message read clears it, so at most one answer waits at a time.
// Called with mu held.
func (g *bootstrapGate) releaseWaiting() {
	if g.waiting != nil {
		close(g.waiting)
		g.waiting = nil
	}
}

// NewMessage returns an outgoing message whose Send waits while it is the
// held answer to a Bootstrap.
func (g *bootstrapGate) NewMessage() (transport.OutgoingMessage, error) {
	out, err := g.Transport.NewMessage()
	if err != nil {
		return nil, err
	}
	return gatedMessage{OutgoingMessage: out, g: g}, nil
}

// Close releases every held answer and closes the transport.
func (g *bootstrapGate) Close() error {
	g.mu.Lock()
	g.ended = true
	g.releaseWaiting()
	clear(g.held)
	g.mu.Unlock()
	return g.Transport.Close()
}

// release returns the channel that must be closed before the message m may
// be sent, or nil when m need not wait.
func (g *bootstrapGate) release(m rpccp.Message) chan struct{} {
	if m.Which() != rpccp.Message_Which_return {
		return nil
	}
	ret, err := m.Return()
	if err != nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ch, ok := g.held[ret.AnswerId()]
	if !ok {
		return nil
	}
	delete(g.held, ret.AnswerId())
	return ch
}

// gatedMessage is an outgoing message of a bootstrapGate.
type gatedMessage struct {
	transport.OutgoingMessage
	g *bootstrapGate
}

// Send sends the message, first waiting for the peer's next message if this
// is the answer to a Bootstrap. The RPC library sends from one goroutine in
// order, so everything queued behind the answer waits with it.
func (m gatedMessage) Send() error {
	if ch := m.g.release(m.Message()); ch != nil {
		t := time.NewTimer(m.g.hold)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
	return m.OutgoingMessage.Send()
}
