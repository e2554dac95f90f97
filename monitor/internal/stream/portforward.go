package stream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/moby/spdystream"

	"github.com/gomon-dev/gomon/internal/contain"
)

// Port-forward protocol (portforward.k8s.io, as the kubelet serves it):
// for every forwarded connection the client opens two SPDY streams with
// the same requestID header: an error stream (streamType "error"), which
// the client half-closes at once and reads to EOF (anything read is the
// error), and a data stream (streamType "data") carrying the connection's
// bytes both ways. The port header names the pod port.
const (
	headerStreamType = "streamType"
	headerPort       = "port"
	headerRequestID  = "requestID"
	streamTypeData   = "data"
	streamTypeError  = "error"

	// pairTimeout bounds the wait for the second stream of a pair (the
	// kubelet's stream creation timeout).
	pairTimeout = 30 * time.Second
	// dialTimeout bounds connecting to the pod's port.
	dialTimeout = 10 * time.Second
)

// forwarder serves one port-forward session.
type forwarder struct {
	ctx   context.Context // ends with the session
	netNS string
	log   *slog.Logger
	wg    sync.WaitGroup // forward goroutines

	mu    sync.Mutex
	pairs map[string]*streamPair // guarded by mu; incomplete pairs by requestID
}

// streamPair is the two streams of one forwarded connection.
type streamPair struct {
	id         string
	port       string
	data, errS *spdystream.Stream
	timer      *time.Timer
}

// serveSPDYTunnel runs a SPDY server connection inside the WebSocket and
// forwards every stream pair until the client hangs up or ctx ends.
func serveSPDYTunnel(ctx context.Context, ws *websocket.Conn, netNS string, log *slog.Logger) {
	tc := newTunnelConn(ws)
	defer func() { _ = tc.Close() }()
	conn, err := spdystream.NewConnection(tc, true)
	if err != nil {
		log.Debug("start SPDY connection", "error", err)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the tunnel ends Serve (and, through it, every stream).
	stop := context.AfterFunc(ctx, func() { _ = tc.Close() })
	defer stop()
	f := &forwarder{ctx: ctx, netNS: netNS, log: log, pairs: make(map[string]*streamPair)}
	conn.Serve(f.newStream) // returns when the tunnel is closed
	cancel()
	f.dropPairs()
	f.wg.Wait()
}

// dropPairs resets the incomplete pairs. The unlock is deferred: a panic
// in a reset must not leave f.mu held for the stream handlers.
func (f *forwarder) dropPairs() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, p := range f.pairs {
		p.timer.Stop()
		p.reset()
		delete(f.pairs, id)
	}
}

// newStream accepts a stream the client opened. spdystream calls it from
// its frame workers, so it must not block: it replies and, when the pair
// is complete, starts forwarding in a goroutine.
func (f *forwarder) newStream(st *spdystream.Stream) {
	// spdystream does not recover its workers; this stream fails alone.
	defer contain.Recover(f.log, contain.Stream, func(*contain.PanicError) { _ = st.Reset() })
	h := st.Headers()
	typ, port, id := h.Get(headerStreamType), h.Get(headerPort), h.Get(headerRequestID)
	if (typ != streamTypeData && typ != streamTypeError) || id == "" || port == "" {
		f.log.Debug("refusing port-forward stream", "stream_type", typ, "port", port, "request_id", id)
		_ = st.Refuse() // the client sees its stream refused
		return
	}
	if err := st.SendReply(http.Header{}, false); err != nil {
		f.log.Debug("reply to port-forward stream", "error", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx.Err() != nil {
		_ = st.Reset()
		return
	}
	p, ok := f.pairs[id]
	if !ok {
		p = &streamPair{id: id, port: port}
		p.timer = time.AfterFunc(pairTimeout, func() { f.expire(p) })
		f.pairs[id] = p
	}
	switch {
	case typ == streamTypeData && p.data == nil:
		p.data = st
	case typ == streamTypeError && p.errS == nil:
		p.errS = st
	default:
		f.log.Debug("duplicate port-forward stream", "stream_type", typ, "request_id", id)
		_ = st.Reset()
		return
	}
	if p.data == nil || p.errS == nil {
		return
	}
	p.timer.Stop()
	delete(f.pairs, id)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer contain.Recover(f.log, contain.Stream, nil) // forward's defers reset the pair
		f.forward(p)
	}()
}

// expire drops a pair whose second stream never came.
func (f *forwarder) expire(p *streamPair) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pairs[p.id] != p {
		return
	}
	delete(f.pairs, p.id)
	f.log.Debug("port-forward stream pair incomplete, dropping it", "request_id", p.id)
	p.reset()
}

// reset resets the streams of p that arrived.
func (p *streamPair) reset() {
	for _, st := range []*spdystream.Stream{p.data, p.errS} {
		if st != nil {
			_ = st.Reset()
		}
	}
}

// forward connects to the pod's port and copies both ways until both
// directions ended; a failure is written to the error stream.
func (f *forwarder) forward(p *streamPair) {
	defer func() {
		// FIN what is still open, then drop our state (no frame after FIN).
		_ = p.data.Close()
		_ = p.errS.Close()
		p.reset()
	}()
	port, err := strconv.ParseUint(p.port, 10, 16)
	if err != nil || port == 0 {
		f.fail(p, fmt.Errorf("invalid port %q", p.port))
		return
	}
	pod, err := dialInNetNS(f.ctx, f.netNS, int(port), f.log)
	if err != nil {
		f.fail(p, err)
		return
	}
	stop := context.AfterFunc(f.ctx, func() { _ = pod.Close() })
	defer stop()
	defer func() { _ = pod.Close() }()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		defer contain.Recover(f.log, contain.Stream, func(*contain.PanicError) { _ = pod.Close() })
		// Client → pod; the client's FIN half-closes the pod connection.
		if _, err := io.Copy(pod, p.data); err != nil {
			f.log.Debug("copy to pod port", "port", port, "error", err)
		}
		_ = pod.CloseWrite() // the pod sees EOF
	}()
	// Pod → client; the pod's EOF is our FIN on the data stream.
	if _, err := io.Copy(p.data, pod); err != nil {
		f.log.Debug("copy from pod port", "port", port, "error", err)
	}
	_ = p.data.Close()
	<-upDone
}

// fail reports err on the pair's error stream.
func (f *forwarder) fail(p *streamPair, err error) {
	msg := fmt.Sprintf("error forwarding port %s to pod: %v", p.port, err)
	f.log.Debug("port-forward failed", "error", msg)
	if _, werr := p.errS.Write([]byte(msg)); werr != nil {
		f.log.Debug("write port-forward error", "error", werr)
	}
}
