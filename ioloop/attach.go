package ioloop

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomon-dev/gomon/internal/netguard"
)

// Attach socket protocol (docs/contract.md, "Attach socket"), as conmon-rs and C conmon speak
// it over an AF_UNIX SOCK_SEQPACKET socket:
//
//   - server → client: one message per chunk, byte 0 the pipe id
//     (AttachPipeStdout, AttachPipeStderr; a terminal's output is stdout),
//     then at most AttachMaxPayload bytes of output. A single
//     AttachPipeDone byte says the container's output has ended.
//   - client → server: raw stdin bytes, one message per client write. A
//     zero-length read (the client's CloseWrite, or its close) is stdin EOF.
const (
	// AttachPipeDone is the one-byte "output ended" message.
	AttachPipeDone byte = 0
	// AttachPipeStdout prefixes stdout (and terminal) output.
	AttachPipeStdout byte = 2
	// AttachPipeStderr prefixes stderr output.
	AttachPipeStderr byte = 3
	// AttachMaxPayload is the largest payload of one message: conmon-rs
	// sends 8192-byte packets including the pipe byte, and the Go client
	// reads with an 8193-byte buffer.
	AttachMaxPayload = 8191
	// DefaultAttachQueue is the default per-client output queue bound.
	DefaultAttachQueue = 256 << 10
	// defaultAttachFlush bounds how long Close waits for a client to take
	// its queued output and the done message.
	defaultAttachFlush = 2 * time.Second
	// DefaultAttachClients is the default bound on one container's
	// attach connections, over all its attach sockets. Each client holds
	// an fd, two goroutines and up to its queue of output; a kubectl
	// attach or a streaming attach session is one client.
	DefaultAttachClients = 32
)

// StdinTarget is where an AttachServer sends what clients write: the
// container's stdin (a pipe or the pty master).
type StdinTarget interface {
	// Write writes p to the container's stdin. It may block while the
	// container does not read; it must return once CloseStdin was called
	// or the owner closed the stdin. The AttachServer never calls Write
	// concurrently with itself.
	Write(p []byte) (int, error)
	// CloseStdin closes the container's stdin (a client with
	// stop-after-stdin-EOF reached EOF). It may be called concurrently
	// with Write and more than once.
	CloseStdin()
}

// AttachOptions configure an AttachServer.
type AttachOptions struct {
	Logger *slog.Logger // nil discards
	// Stdin receives client input; nil discards it (a container without
	// stdin, as conmon-rs does).
	Stdin StdinTarget
	// QueueBytes bounds the output queued for one client; 0 means
	// DefaultAttachQueue. Output that does not fit is dropped for that
	// client and counted.
	QueueBytes int
	// FlushTimeout bounds how long Close lets clients take their queued
	// output; 0 means 2 s.
	FlushTimeout time.Duration
	// MaxClients bounds the clients connected at once; 0 means
	// DefaultAttachClients. At the bound a new connection is closed at
	// once: a client is served from the moment it connects (it may never
	// write), so none gives way to a newcomer.
	MaxClients int
}

// AttachServer serves the attach sockets of one container: it broadcasts
// the container's output to every connected client and forwards what
// clients write to the container's stdin.
//
// Who calls what: the container's owner makes one AttachServer, registers
// each output stream with Stream before the stream's read loop starts and
// passes the returned writer to ReadLoop as a tee writer; the read loop's
// owner closes that writer when the loop ends. Listen adds a socket (the
// Attach RPC). Close, at container exit or shutdown, sends the done
// message to clients that have not had it, closes every listener and
// connection and waits for all goroutines. All methods are safe for
// concurrent use.
//
// Output is live only (no replay). The read loop is never blocked by a
// client (docs/architecture.md, "The read loop never blocks the container"): each client has a bounded queue (see
// AttachOptions.QueueBytes) drained by its own writer goroutine; a chunk
// that does not fit is dropped for that client only, counted and reported
// when the client goes away. Dropping whole chunks rather than
// disconnecting keeps a briefly slow terminal attached; the count makes the
// loss visible.
//
// The done message is sent once per client, after every registered stream
// has ended. conmon-rs sends one per stream and its Go client stops at the
// first, so output still in flight on the other stream was lost; waiting
// for the last stream fixes that race without changing the wire format.
type AttachServer struct {
	log      *slog.Logger
	stdin    StdinTarget
	queueMax int
	flush    time.Duration

	// stdinMu serialises writes to stdin, so messages of different
	// clients never interleave. stdinFailing is guarded by it.
	stdinMu      sync.Mutex
	stdinFailing bool

	// wg counts accept loops and client goroutines.
	wg sync.WaitGroup

	// limiter caps the clients (AttachOptions.MaxClients).
	limiter *netguard.Limiter

	// Totals over all clients, for Stats.
	droppedChunks, droppedBytes, clientsSeen atomic.Uint64

	// mu guards the fields below. Lock order: mu before attachClient.mu.
	mu        sync.Mutex
	listeners map[string]*attachListener // guarded by mu; by path
	clients   map[*attachClient]struct{} // guarded by mu
	streams   int                        // guarded by mu; registered
	open      int                        // guarded by mu; registered, not ended
	closed    bool                       // guarded by mu
}

// NewAttachServer returns an AttachServer without listeners.
func NewAttachServer(opts AttachOptions) *AttachServer {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := opts.QueueBytes
	if q <= 0 {
		q = DefaultAttachQueue
	}
	fl := opts.FlushTimeout
	if fl <= 0 {
		fl = defaultAttachFlush
	}
	maxClients := opts.MaxClients
	if maxClients <= 0 {
		maxClients = DefaultAttachClients
	}
	return &AttachServer{
		log:       log,
		stdin:     opts.Stdin,
		queueMax:  q,
		flush:     fl,
		limiter:   netguard.NewLimiter(maxClients, "attach", log),
		listeners: make(map[string]*attachListener),
		clients:   make(map[*attachClient]struct{}),
	}
}

// AttachStats are an AttachServer's totals over all its clients.
type AttachStats struct {
	Clients       uint64 // connections accepted
	DroppedChunks uint64 // output chunks dropped for slow clients
	DroppedBytes  uint64 // their bytes
}

// Stats returns the totals so far; a client's drops are added when it
// goes away.
func (s *AttachServer) Stats() AttachStats {
	return AttachStats{
		Clients:       s.clientsSeen.Load(),
		DroppedChunks: s.droppedChunks.Load(),
		DroppedBytes:  s.droppedBytes.Load(),
	}
}

// AttachStream is the tee writer of one container stream. Write never
// blocks on clients and never fails; Close marks the stream ended.
type AttachStream struct {
	s    *AttachServer
	pipe byte
	once sync.Once
}

// Stream registers output stream st and returns its writer. Register every
// stream before clients can connect (before Listen), so the done message
// waits for all of them.
func (s *AttachServer) Stream(st Stream) *AttachStream {
	pipe := AttachPipeStdout
	if st == Stderr {
		pipe = AttachPipeStderr
	}
	s.mu.Lock()
	s.streams++
	s.open++
	s.mu.Unlock()
	return &AttachStream{s: s, pipe: pipe}
}

// Write broadcasts p to the connected clients. It copies p once, and only
// when some client is connected.
func (w *AttachStream) Write(p []byte) (int, error) {
	w.s.broadcast(w.pipe, p)
	return len(p), nil
}

// Close marks the stream ended; when it was the last open one, every
// client gets the done message. It is idempotent and never fails.
func (w *AttachStream) Close() error {
	w.once.Do(w.s.endStream)
	return nil
}

// attachMsg is one queued output chunk, or the done marker.
type attachMsg struct {
	pipe byte
	data []byte // shared by all clients; never modified
}

func (s *AttachServer) broadcast(pipe byte, p []byte) {
	if len(p) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.clients) == 0 {
		return
	}
	msg := attachMsg{pipe: pipe, data: append([]byte(nil), p...)}
	for c := range s.clients {
		c.enqueue(msg, s.queueMax)
	}
}

// endStream is AttachStream.Close.
func (s *AttachServer) endStream() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	if s.open > 0 {
		return
	}
	for c := range s.clients {
		c.enqueue(attachMsg{pipe: AttachPipeDone}, s.queueMax)
	}
}

// outputEndedLocked reports whether all registered streams have ended.
// Called with s.mu held.
func (s *AttachServer) outputEndedLocked() bool { return s.streams > 0 && s.open == 0 }

// Listen makes sure a SOCK_SEQPACKET listener serves path: when this
// server already listens there (the same socket file is still in place)
// it does nothing; otherwise it creates the parent directories (mode
// 0700), replaces a stale socket file nobody listens on, binds with mode
// 0600 and starts accepting. When Listen returns, clients can connect.
// stopAfterStdinEOF applies to clients of this listener: their stdin EOF
// closes the container's stdin.
//
// conmon-rs assumes any existing path is its own listener; gomon checks,
// so a socket file left by an earlier daemon does not make attach fail
// with "connection refused". conmon-rs meant to give the socket mode 0700
// but never applied it; gomon applies 0600 (a socket needs no x bit).
func (s *AttachServer) Listen(path string, stopAfterStdinEOF bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("listen on attach socket: %w", ErrClosed)
	}
	if l, ok := s.listeners[path]; ok {
		if l.inPlace() {
			return nil
		}
		// A client removed the file (the conmon-rs Go client does when
		// its attach ends): serve the path again with a new socket.
		l.close()
		delete(s.listeners, path)
	}
	l, err := listenSeqpacket(path)
	if err != nil {
		return err
	}
	l.stopAfterStdinEOF = stopAfterStdinEOF
	s.listeners[path] = l
	s.wg.Add(1)
	go s.acceptLoop(l)
	s.log.Debug("attach socket listening", "path", path, "stop_after_stdin_eof", stopAfterStdinEOF)
	return nil
}

// acceptLoop accepts clients of l until l is closed, within the client
// bound (AttachOptions.MaxClients). Accept errors (EMFILE, ...) are
// retried with netguard's backoff.
func (s *AttachServer) acceptLoop(l *attachListener) {
	defer s.wg.Done()
	retry := netguard.AcceptRetry{Log: s.log.With("path", l.path), What: "attach"}
	for {
		lc, err := netguard.Accept(l.ln, s.limiter, &retry, l.done)
		if err != nil {
			return // closed
		}
		lc.Active() // served from now on, even if it never writes
		s.addClient(lc, l.stopAfterStdinEOF)
	}
}

// addClient starts the reader and writer of a new connection.
func (s *AttachServer) addClient(lc *netguard.Conn, stopAfterStdinEOF bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = lc.Close() // raced with Close
		return
	}
	conn := lc.Conn.(*net.UnixConn) //nolint:forcetypeassert // the listener is a UnixListener
	c := &attachClient{
		conn: conn, lc: lc, stopAfterStdinEOF: stopAfterStdinEOF,
		wake: make(chan struct{}, 1), released: make(chan struct{}), refs: 2,
	}
	if s.outputEndedLocked() {
		c.enqueue(attachMsg{pipe: AttachPipeDone}, s.queueMax)
	}
	s.clients[c] = struct{}{}
	s.clientsSeen.Add(1)
	s.wg.Add(2)
	go s.writeLoop(c)
	go s.readLoop(c)
	s.log.Debug("attach client connected", "clients", len(s.clients))
}

// Close sends the done message to clients that have not had it, lets them
// take their queued output for up to the flush timeout, then closes every
// connection and listener (removing the socket files it created) and waits
// for all goroutines. Later Listen calls fail with ErrClosed. It is
// idempotent.
func (s *AttachServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	ls := make([]*attachListener, 0, len(s.listeners))
	for _, l := range s.listeners {
		ls = append(ls, l)
	}
	cs := s.clientsLocked()
	s.mu.Unlock()

	for _, l := range ls {
		l.close()
	}
	deadline := time.Now().Add(s.flush)
	for _, c := range cs {
		c.shutdown(deadline, true)
	}
	s.wg.Wait()
	return nil
}

// clientsLocked returns the connected clients; s.mu is held.
func (s *AttachServer) clientsLocked() []*attachClient {
	cs := make([]*attachClient, 0, len(s.clients))
	for c := range s.clients {
		cs = append(cs, c)
	}
	return cs
}

// writeStdin forwards one client message to the container's stdin.
func (s *AttachServer) writeStdin(p []byte) {
	s.stdinMu.Lock()
	defer s.stdinMu.Unlock()
	if s.stdin == nil {
		return
	}
	_, err := s.stdin.Write(p)
	switch {
	case err != nil && !s.stdinFailing:
		s.stdinFailing = true
		s.log.Debug("container stdin not writable, dropping attach input", "error", err)
	case err == nil && s.stdinFailing:
		s.stdinFailing = false
	}
}
