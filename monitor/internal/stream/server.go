package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/internal/netguard"
)

const (
	// DefaultMaxSessions bounds the sessions waiting for a client
	// (conmon-rs keeps 25, v0.7.3 1000).
	DefaultMaxSessions = 256
	// DefaultSessionTTL is how long an unused session URL stays valid.
	DefaultSessionTTL = time.Hour
	// DefaultMaxConns bounds the connections the streaming port holds at
	// once, sessions included. The port is open to every local user, so
	// without a bound a flood of connections exhausts the daemon's fds.
	// Each session is one kubectl exec, attach or port-forward of this
	// pod (a port-forward carries all its streams on one connection).
	DefaultMaxConns = 64
	// handshakeTimeout bounds reading a request and the WebSocket
	// handshake, so an idle or slow client cannot hold a connection.
	handshakeTimeout = 10 * time.Second
)

// ErrClosed is returned by the Add methods after Close.
var ErrClosed = errors.New("streaming server closed")

// Options configure a Server.
type Options struct {
	Logger *slog.Logger // nil discards
	// Addr is the listen address; empty means 127.0.0.1:0 (a random
	// loopback port).
	Addr string
	// MaxSessions and SessionTTL bound the unused sessions; zero means
	// DefaultMaxSessions and DefaultSessionTTL.
	MaxSessions int
	SessionTTL  time.Duration
	// Now is the clock of session expiry; nil means time.Now.
	Now func() time.Time
	// MaxConns bounds the connections held at once; zero means
	// DefaultMaxConns. At the bound a new connection replaces the oldest
	// one still sending its request head, or is closed if there is none.
	MaxConns int
}

// Server is the streaming HTTP server. It binds its listener on the first
// Add call and serves until Close. All methods are safe for concurrent
// use.
//
// It serves each connection itself (httpconn.go) rather than through
// http.Server, whose HTTP/2 and TLS machinery would cost the idle daemon
// about 1.5 MiB of resident memory for nothing: every request here is one
// HTTP/1.1 WebSocket upgrade or an error answer. Each connection has one
// goroutine, counted in conns; Close closes every connection (sessions
// see their connection end) and waits for them.
type Server struct {
	log      *slog.Logger
	addr     string
	sessions *sessionStore
	mux      *http.ServeMux
	limiter  *netguard.Limiter

	ctx    context.Context // ended by Close: ends every session
	cancel context.CancelFunc
	conns  sync.WaitGroup // connection goroutines and the accept loop

	// mu guards the fields below.
	mu     sync.Mutex
	ln     net.Listener      // guarded by mu; nil until started
	base   string            // guarded by mu; "http://127.0.0.1:<port>"
	open   map[net.Conn]bool // guarded by mu; live connections, true once a session owns one
	closed bool              // guarded by mu
}

// New returns a Server; nothing listens until the first Add call.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	max := opts.MaxSessions
	if max <= 0 {
		max = DefaultMaxSessions
	}
	ttl := opts.SessionTTL
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		log: log, addr: addr, sessions: newSessionStore(max, ttl, now),
		limiter: netguard.NewLimiter(maxConns, "streaming", log),
		ctx:     ctx, cancel: cancel, open: make(map[net.Conn]bool),
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/exec/{token}", s.handle(kindExec))
	s.mux.HandleFunc("/attach/{token}", s.handle(kindAttach))
	s.mux.HandleFunc("/port-forward/{token}", s.handle(kindPortForward))
	return s
}

// AddExec registers an exec session and returns its URL.
func (s *Server) AddExec(cmd Command) (string, error) {
	return s.add(&session{kind: kindExec, cmd: cmd})
}

// AddAttach registers an attach session and returns its URL.
func (s *Server) AddAttach(cmd Command) (string, error) {
	return s.add(&session{kind: kindAttach, cmd: cmd})
}

// AddPortForward registers a port-forward session whose connections are
// dialled on 127.0.0.1 inside the network namespace at netNSPath (e.g.
// /proc/<pid>/ns/net or a bind-mounted namespace file), and returns its
// URL. The path is opened when a connection is forwarded, not now.
func (s *Server) AddPortForward(netNSPath string) (string, error) {
	return s.add(&session{kind: kindPortForward, netNS: netNSPath})
}

func (s *Server) add(sess *session) (string, error) {
	base, err := s.start()
	if err != nil {
		return "", err
	}
	tok := s.sessions.add(sess)
	return base + "/" + string(sess.kind) + "/" + tok, nil
}

// Addr returns the base URL (http://127.0.0.1:<port>), or "" before the
// first Add.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// start binds the listener once.
func (s *Server) start() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	if s.ln != nil {
		return s.base, nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return "", fmt.Errorf("listen for streaming: %w", err)
	}
	s.ln = ln
	s.base = "http://" + ln.Addr().String()
	s.conns.Add(1)
	go s.acceptLoop(ln)
	s.log.Info("streaming server listening", "address", s.base)
	return s.base, nil
}

// acceptLoop accepts connections until the listener is closed, within
// the connection limit. Accept errors (EMFILE, ...) are retried with a
// bounded backoff and logged once per run of them.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.conns.Done()
	retry := netguard.AcceptRetry{Log: s.log, What: "streaming"}
	for {
		conn, err := netguard.Accept(ln, s.limiter, &retry, s.ctx.Done())
		if err != nil {
			return
		}
		if !s.track(conn) {
			_ = conn.Close() // raced with Close
			continue
		}
		go func() {
			defer s.conns.Done()
			// A panic in one handshake or session ends that connection
			// only (untrack closes it); its command was cancelled by the
			// session's context (handle).
			defer contain.Recover(s.log, contain.Stream, nil)
			defer s.untrack(conn)
			s.serveConn(conn)
		}()
	}
}

// track registers a new connection unless closing.
func (s *Server) track(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.open[conn] = false
	s.conns.Add(1)
	return true
}

// untrack closes and forgets a finished connection.
func (s *Server) untrack(conn net.Conn) {
	_ = conn.Close() // idempotent; the session may have closed it
	s.mu.Lock()
	delete(s.open, conn)
	s.mu.Unlock()
}

// owned marks conn as a session's: from now on the session closes it.
func (s *Server) owned(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.open[conn]; ok {
		s.open[conn] = true
	}
}

// closeGrace bounds how long Close lets sessions end themselves (a
// going-away close, their command cancelled) before it closes their
// connections.
const closeGrace = 2 * time.Second

// Close stops listening, ends every session and waits, within ctx, for
// their goroutines. A session's client gets a going-away close (not a
// dropped connection); a connection still in its handshake is closed.
// Later Add calls fail with ErrClosed. It is idempotent.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		_ = s.ln.Close() // ends the accept loop
	}
	for c, session := range s.open {
		if !session {
			_ = c.Close() // ends a handshake
		}
	}
	s.mu.Unlock()
	s.cancel() // sessions end, and close their connections
	ended := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(ended)
	}()
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	select {
	case <-ended:
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.open {
		_ = c.Close() // a session that did not end in time
	}
	s.mu.Unlock()
	select {
	case <-ended:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for streaming sessions: %w", ctx.Err())
	}
}

// subprotocols are the WebSocket subprotocols of each kind, preferred
// first.
var subprotocols = map[kind][]string{
	kindExec:        {protocolV5, protocolV4},
	kindAttach:      {protocolV5, protocolV4},
	kindPortForward: {protocolPortForward},
}

const (
	protocolV5          = "v5.channel.k8s.io"
	protocolV4          = "v4.channel.k8s.io"
	protocolPortForward = "SPDY/3.1+portforward.k8s.io"
)

// handle returns the handler of one kind's path. Order: an unknown,
// used, expired or other-kind token is 404 (nothing else is revealed);
// a request that is no WebSocket upgrade, or offers none of our
// subprotocols, is 400 and leaves the session usable; otherwise the
// session is taken (single use) and the connection upgraded.
func (s *Server) handle(k kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.PathValue("token")
		if _, ok := s.sessions.peek(k, tok); !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !websocket.IsWebSocketUpgrade(r) {
			http.Error(w, "a WebSocket upgrade is required (SPDY is not supported)", http.StatusBadRequest)
			return
		}
		offered := websocket.Subprotocols(r)
		if !slices.ContainsFunc(subprotocols[k], func(p string) bool { return slices.Contains(offered, p) }) {
			http.Error(w, fmt.Sprintf("unable to negotiate a subprotocol: client offers %q, server supports %q",
				offered, subprotocols[k]), http.StatusBadRequest)
			return
		}
		sess, ok := s.sessions.take(k, tok)
		if !ok { // taken by a concurrent request
			http.NotFound(w, r)
			return
		}
		if s.ctx.Err() != nil {
			http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
			return
		}
		up := websocket.Upgrader{
			HandshakeTimeout: handshakeTimeout,
			Subprotocols:     subprotocols[k],
			ReadBufferSize:   4096,
			WriteBufferSize:  4096,
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			// Upgrade already answered the client.
			s.log.Debug("streaming upgrade failed", "kind", k, "error", err)
			return
		}
		log := s.log.With("kind", string(k), "token", tok, "protocol", conn.Subprotocol())
		log.Debug("streaming session started", "remote", conn.RemoteAddr().String())
		ctx, cancel := context.WithCancel(s.ctx)
		defer cancel()
		switch k {
		case kindPortForward:
			serveSPDYTunnel(ctx, conn, sess.netNS, log)
		default:
			serveCommand(ctx, conn, sess.cmd, log)
		}
		log.Debug("streaming session ended")
	}
}

// Busy reports whether the server has a connection open or a session
// waiting for its client (an upgrade in place ends them: docs/upgrade.md).
func (s *Server) Busy() bool {
	s.mu.Lock()
	open := len(s.open)
	s.mu.Unlock()
	return open > 0 || s.sessions.len() > 0
}
