package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc/transport"

	"github.com/gomon-dev/gomon/internal/netguard"
)

// Limits of one Cap'n Proto socket. They are listed, with their reasons,
// in the README's Reliability section.
const (
	// MaxMessageSize bounds one incoming message, header included. The
	// largest legitimate requests carry argv, env, exit paths and log
	// drivers; what is exec'd must fit Linux's argument limit (2 MiB with
	// the default 8 MiB stack), and a create with 10 000 exit paths is
	// about 1 MiB. capnp-go's own default is 64 MiB, which let a peer make
	// the daemon allocate 64 MiB per connection with an 8-byte header.
	MaxMessageSize = 4 << 20
	// MaxConns bounds the connections held per socket. CRI-O keeps one
	// connection per client (or dials one per call in older clients), so
	// legitimate concurrency is a few connections, far below this.
	MaxConns = 128
	// FirstMessageTimeout closes a connection that has sent nothing this
	// long after it was accepted: every client sends its bootstrap at once.
	FirstMessageTimeout = 10 * time.Second
	// MessageTimeout bounds the arrival of the rest of a message once its
	// first byte has come: a local client writes a whole message at once,
	// so only a stalled or hostile peer takes longer. An idle connection
	// between messages has no deadline (the CRI-O client keeps one open
	// and idle between calls). It also bounds the sending of a message
	// to a peer that does not read.
	MessageTimeout = 10 * time.Second

	// MaxPendingBytes bounds, per server, the memory of messages over 64
	// KiB that are being received: a message that would take more ends
	// its connection. Without it, stalled messages near the size limit
	// on every allowed connection could hold MaxConns × MaxMessageSize
	// (512 MiB); with it the worst case is MaxConns × 64 KiB plus this.
	// Real requests are far smaller than 64 KiB, so they never need it.
	MaxPendingBytes = 64 << 20

	// maxSegments bounds the segment table of a message, as capnp-go
	// does; a legitimate message has one or a few segments.
	maxSegments = 512
	// smallMessage is the largest message read into one buffer allocated
	// at its header; a larger one is read in chunks of chunkSize
	// allocated as its bytes arrive (readLarge), so a peer that announces
	// a large message and sends little costs little.
	smallMessage = 64 << 10
	chunkSize    = 256 << 10
	// reclaimAfter is the size of a discarded partial message from which
	// its memory is handed back to the OS soon (see reclaimSoon).
	reclaimAfter = 1 << 20
	// reclaimDelay gathers the discards of a flood into one reclaim.
	reclaimDelay = time.Second
)

// Errors that end a connection because it broke a limit.
var (
	ErrMessageTooLarge = errors.New("message too large")
	ErrMessageStalled  = errors.New("message stalled")
	ErrSilentConn      = errors.New("connection sent nothing")
	ErrServerBusy      = errors.New("too many large messages arriving at once")
)

// LimitStats counts what the limits refused.
type LimitStats struct {
	AcceptErrors int64 // accept errors retried
	Rejected     int64 // connections closed at once: the socket was full
	Evicted      int64 // connections that had sent nothing, closed to make room
	TooLarge     int64 // messages over MaxMessageSize
	Stalled      int64 // messages not complete within MessageTimeout
	Silent       int64 // connections silent for FirstMessageTimeout
	Busy         int64 // messages refused for MaxPendingBytes
}

// limitState is the Server's share of the limits: counters, the
// limiters and accept retries of its listeners, and the reclaim timer.
type limitState struct {
	tooLarge, stalled, silent, busy atomic.Int64
	pending                         atomic.Int64 // bytes charged to MaxPendingBytes

	// mu guards the fields below.
	mu         sync.Mutex
	limiters   []*netguard.Limiter
	retries    []*netguard.AcceptRetry
	reclaim    *time.Timer         // nil until the first reclaim
	lastLog    map[error]time.Time // by limit error: when last logged
	suppressed map[error]int       // by limit error: not logged since
}

// LimitStats returns the counters of every listener served so far.
func (s *Server) LimitStats() LimitStats {
	st := LimitStats{
		TooLarge: s.lim.tooLarge.Load(),
		Stalled:  s.lim.stalled.Load(),
		Silent:   s.lim.silent.Load(),
		Busy:     s.lim.busy.Load(),
	}
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	for _, l := range s.lim.limiters {
		ls := l.Stats()
		st.Rejected += ls.Rejected
		st.Evicted += ls.Evicted
	}
	for _, r := range s.lim.retries {
		st.AcceptErrors += r.Errors()
	}
	return st
}

// guardListener returns the connection limiter and accept pacing of l.
func (s *Server) guardListener(l net.Listener) (*netguard.Limiter, *netguard.AcceptRetry) {
	what := l.Addr().String()
	lim := netguard.NewLimiter(MaxConns, what, s.log)
	lim.OnFloodOver = s.reclaimSoon
	retry := &netguard.AcceptRetry{Log: s.log, What: what}
	s.lim.mu.Lock()
	s.lim.limiters = append(s.lim.limiters, lim)
	s.lim.retries = append(s.lim.retries, retry)
	s.lim.mu.Unlock()
	return lim, retry
}

// acceptLoop accepts on l until Close, retrying every error but a closed
// listener with a bounded backoff: the containers of the pod must not
// depend on accept(2) succeeding (EMFILE can be caused by anyone who can
// open connections to the streaming port). There is no spare fd to
// accept-and-close with under EMFILE: the backoff already keeps the loop
// from spinning, and a client waiting in the backlog (CRI-O's next call)
// is better served late than refused.
func (s *Server) acceptLoop(l net.Listener) error {
	lim, retry := s.guardListener(l)
	for {
		c, err := netguard.Accept(l, lim, retry, s.done)
		switch {
		case err == nil:
			s.ServeConn(c)
		case s.isClosed() || !errors.Is(err, net.ErrClosed):
			return ErrServerClosed
		default:
			return fmt.Errorf("accept: %w", err)
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// newTransport is the Cap'n Proto transport of one connection: the
// stream framing, with the message size limit and the read deadlines.
func (s *Server) newTransport(c net.Conn) transport.Transport {
	cd := &codec{conn: c, enc: capnp.NewEncoder(c), s: s}
	if lc, ok := c.(*netguard.Conn); ok {
		cd.active = lc.Active
	}
	// A connection that never sends its bootstrap is closed; it fails
	// only on a closed connection, which the first read reports.
	_ = c.SetReadDeadline(time.Now().Add(FirstMessageTimeout))
	return transport.New(cd)
}

// codec frames messages on a stream as capnp-go's stream transport does
// (the standard, unpacked framing), but refuses messages over
// MaxMessageSize before allocating them, reads large ones in chunks as
// their bytes arrive rather than allocating the size announced, and
// bounds the time a started message may take to arrive or to be taken by
// the peer. Encode and Decode run on different goroutines; each uses only
// its own fields (and its own deadline).
type codec struct {
	conn   net.Conn
	enc    *capnp.Encoder
	s      *Server
	active func() // marks the connection as served; nil if unlimited
	spoke  bool   // Decode's: a first byte has arrived
}

// Encode sends m. A peer that stops reading makes the write fail after
// MessageTimeout, which ends the connection instead of holding it and
// its goroutines for good.
func (c *codec) Encode(m *capnp.Message) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(MessageTimeout)) // a closed conn fails the write
	if err := c.enc.Encode(m); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	return nil
}

func (c *codec) Close() error { return c.conn.Close() }

// Decode reads the next message. It returns io.EOF when the peer hung up
// between messages.
func (c *codec) Decode() (*capnp.Message, error) {
	var word [8]byte
	n, err := c.readStart(word[:])
	if err != nil {
		return nil, err
	}
	// From the first byte on, the rest must come within MessageTimeout.
	_ = c.conn.SetReadDeadline(time.Now().Add(MessageTimeout)) // a closed conn fails the read below
	if err := c.readFull(word[n:]); err != nil {
		return nil, err
	}
	segs := uint64(binary.LittleEndian.Uint32(word[0:4])) + 1
	if segs > maxSegments {
		return nil, c.limitErr(ErrMessageTooLarge, fmt.Errorf("%w: %d segments", ErrMessageTooLarge, segs))
	}
	hdrSize := (4 + 4*segs + 7) &^ 7
	hdr := make([]byte, hdrSize)
	copy(hdr, word[:])
	if err := c.readFull(hdr[8:]); err != nil {
		return nil, err
	}
	size := hdrSize
	for i := range segs {
		size += 8 * uint64(binary.LittleEndian.Uint32(hdr[4+4*i:]))
	}
	if size > MaxMessageSize {
		return nil, c.limitErr(ErrMessageTooLarge,
			fmt.Errorf("%w: %d bytes announced, limit %d", ErrMessageTooLarge, size, MaxMessageSize))
	}
	var buf []byte
	if size <= smallMessage {
		buf = make([]byte, size)
		copy(buf, hdr)
		if err := c.readFull(buf[hdrSize:]); err != nil {
			return nil, err
		}
	} else {
		var err error
		if buf, err = c.readLarge(hdr, size); err != nil {
			return nil, err
		}
	}
	_ = c.conn.SetReadDeadline(time.Time{}) // idle until the next message
	msg, err := capnp.Unmarshal(buf)
	if err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return msg, nil
}

// readLarge reads the body of a message of size bytes (header hdr
// included) in chunks allocated as the bytes come, charged to
// MaxPendingBytes until the message is complete, so a peer that stalls
// holds no more memory than it sent. The chunks are joined at the end.
func (c *codec) readLarge(hdr []byte, size uint64) ([]byte, error) {
	var charged int64
	defer func() { c.s.lim.pending.Add(-charged) }()
	chunks := make([][]byte, 0, (size+chunkSize-1)/chunkSize)
	for left := size - uint64(len(hdr)); left > 0; {
		n := min(left, chunkSize)
		if c.s.lim.pending.Add(int64(n)) > MaxPendingBytes {
			c.s.lim.pending.Add(-int64(n))
			return nil, c.limitErr(ErrServerBusy, fmt.Errorf("%w: %d bytes pending, limit %d",
				ErrServerBusy, c.s.lim.pending.Load(), MaxPendingBytes))
		}
		charged += int64(n)
		chunk := make([]byte, n)
		if err := c.readFull(chunk); err != nil {
			if charged >= reclaimAfter {
				c.s.reclaimSoon()
			}
			return nil, err
		}
		chunks = append(chunks, chunk)
		left -= n
	}
	buf := make([]byte, 0, size)
	buf = append(buf, hdr...)
	for _, ch := range chunks {
		buf = append(buf, ch...)
	}
	return buf, nil
}

// readStart reads the start of a message into p: at least one byte, at
// most what has arrived. It waits without a deadline, except on a
// connection that has not spoken yet.
func (c *codec) readStart(p []byte) (int, error) {
	for {
		n, err := c.conn.Read(p)
		if n > 0 {
			if !c.spoke {
				c.spoke = true
				if c.active != nil {
					c.active()
				}
			}
			return n, nil
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if !c.spoke && errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, c.limitErr(ErrSilentConn, fmt.Errorf("%w within %v", ErrSilentConn, FirstMessageTimeout))
		}
		return 0, fmt.Errorf("read message: %w", err)
	}
}

// readFull reads len(p) bytes of a started message.
func (c *codec) readFull(p []byte) error {
	if _, err := io.ReadFull(c.conn, p); err != nil {
		return c.readErr(err)
	}
	return nil
}

// readErr describes a failed read in the middle of a message.
func (c *codec) readErr(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return c.limitErr(ErrMessageStalled,
			fmt.Errorf("%w: not complete within %v of its first byte", ErrMessageStalled, MessageTimeout))
	case errors.Is(err, io.EOF):
		return fmt.Errorf("read message: %w", io.ErrUnexpectedEOF)
	default:
		return fmt.Errorf("read message: %w", err)
	}
}

// limitErr counts and logs (at most once a second per kind, with the
// number left unlogged) a connection ended by a limit, and returns err.
func (c *codec) limitErr(kind, err error) error {
	s := c.s
	switch {
	case errors.Is(kind, ErrMessageTooLarge):
		s.lim.tooLarge.Add(1)
	case errors.Is(kind, ErrMessageStalled):
		s.lim.stalled.Add(1)
	case errors.Is(kind, ErrSilentConn):
		s.lim.silent.Add(1)
	case errors.Is(kind, ErrServerBusy):
		s.lim.busy.Add(1)
	}
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	if s.lim.lastLog == nil {
		s.lim.lastLog = make(map[error]time.Time)
		s.lim.suppressed = make(map[error]int)
	}
	if now := time.Now(); now.Sub(s.lim.lastLog[kind]) >= time.Second {
		s.log.Warn("closing connection: limit exceeded", "error", err,
			"similar_unlogged", s.lim.suppressed[kind])
		s.lim.lastLog[kind] = now
		s.lim.suppressed[kind] = 0
	} else {
		s.lim.suppressed[kind]++
	}
	return err
}

// reclaimSoon hands the memory of discarded partial messages, or of the
// connections of a flood, back to the OS once the flood is over. The daemon is mostly idle, so without
// this the Go runtime would keep the memory until its next periodic
// collection, minutes later, and scavenge it slowly after that.
func (s *Server) reclaimSoon() {
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	if s.lim.reclaim == nil {
		s.lim.reclaim = time.AfterFunc(reclaimDelay, freeOSMemory)
		return
	}
	s.lim.reclaim.Reset(reclaimDelay)
}

// stopReclaim cancels a pending reclaim (at Close).
func (s *Server) stopReclaim() {
	s.lim.mu.Lock()
	defer s.lim.mu.Unlock()
	if s.lim.reclaim != nil {
		s.lim.reclaim.Stop()
	}
}

// freeOSMemory is debug.FreeOSMemory; a variable for the tests.
var freeOSMemory = debug.FreeOSMemory
