package fdstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/internal/netguard"
	"github.com/gomon-dev/gomon/ioloop"
)

const (
	// headerSize is the length of a request and of a reply's header.
	headerSize = 8
	// countMask selects the descriptor count from a request header.
	countMask = 0xff
	// errorMarker is or-ed into a reply header to flag an error message.
	errorMarker = 0xff
	// maxFDs is the kernel's limit of descriptors per SCM_RIGHTS message
	// (SCM_MAX_FD); the control buffer has room for a few more so that a
	// count mismatch is reported rather than silently truncated.
	maxFDs = 255
	// socketMode is the permission of the socket file.
	socketMode = 0o600
	// MaxConns bounds the connections the socket holds at once. Its one
	// client, CRI-O, sends a request as soon as it connects and hangs up
	// after the reply; without a bound, a client that leaks connections
	// would exhaust the daemon's fds and goroutines.
	MaxConns = 32
	// handoffWriteGrace bounds, during an upgrade's handoff, the write of
	// a reply a client does not read (part of the upgrade's quiesce).
	handoffWriteGrace = time.Second
)

// Server is a running fd socket and its slot store. All methods are safe
// for concurrent use.
type Server struct {
	path   string
	logger *slog.Logger
	ln     *net.UnixListener
	done   chan struct{} // closed by Close; stops the accept loop's backoff
	wg     sync.WaitGroup
	// stopAccept, when closed, ends the accept loop that was started
	// with it (an upgrade's handoff); acceptEnded is closed when it has.
	// Both are replaced when the loop starts again; they are touched only
	// by the goroutine that starts and stops the loop (Listen, Adopt,
	// PauseForHandoff, ResumeAfterHandoff; never concurrently).
	stopAccept  chan struct{}
	acceptEnded chan struct{}
	// limiter caps the connections (MaxConns); a connection counts as
	// quiet, and gives way to a newcomer at the cap, until its first
	// message.
	limiter *netguard.Limiter

	// mu guards the fields below. A connection is in conns from accept
	// until its goroutine has released its slots; closed is set once, by
	// Close, after which no connection is added and no slot filled.
	mu     sync.Mutex
	slots  store                         // guarded by mu
	conns  map[*netguard.Conn]*connState // guarded by mu
	closed bool                          // guarded by mu
	// handingOff is set by PauseForHandoff: a connection whose read
	// times out then parks (its goroutine ends, leaving it open with its
	// slots) instead of ending.
	handingOff bool // guarded by mu
}

// connState is a connection's part of the store while it is parked for
// a handoff: the slots it filled that nobody took (its goroutine owns
// them while it runs).
type connState struct {
	parked bool
	mine   []parked
}

// parked is a slot filled by one connection, remembered so the connection
// can close what it sent and nobody took.
type parked struct {
	slot uint64
	file *os.File
}

// Listen creates the SOCK_SEQPACKET socket at path (mode 0600) and starts
// serving it. A stale socket at path is removed first; anything else there
// is an error. The parent directory is created if missing. The socket is
// bound through /proc/self/fd/<dirfd>/<name>, so paths longer than the
// 108-byte sun_path limit work. A nil logger discards.
func Listen(path string, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	path = filepath.Clean(path)
	dir, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." || name == "/" {
		return nil, fmt.Errorf("listen on fd socket %q: not a file name", path)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create fd socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := bindLong(dir, name)
	if err != nil {
		return nil, fmt.Errorf("listen on fd socket %s: %w", path, err)
	}
	s := newServer(path, ln, logger)
	logger.Debug("fd socket listening", "path", path)
	return s, nil
}

func newServer(path string, ln *net.UnixListener, logger *slog.Logger) *Server {
	s := &Server{
		path:    path,
		logger:  logger,
		ln:      ln,
		done:    make(chan struct{}),
		slots:   newStore(),
		conns:   make(map[*netguard.Conn]*connState),
		limiter: netguard.NewLimiter(MaxConns, "fd socket", logger),
	}
	s.startAccepting()
	return s
}

// Handoff is what an upgrade hands over of a paused server: dups of the
// listener and of each open connection (close-on-exec), and the
// descriptors still stored, each with its slot and the connection that
// sent it (the store's own files: the caller must not close them).
type Handoff struct {
	Listener *os.File
	Conns    []HandoffConn
	// Last is the slot handed out most recently: slots go on from it.
	Last uint64
}

// HandoffConn is one open connection and the slots it filled that nobody
// took yet: they are closed when it ends, in the new process as here.
type HandoffConn struct {
	Conn  *os.File
	Slots []HandoffSlot
}

// HandoffSlot is one stored descriptor.
type HandoffSlot struct {
	Slot uint64
	File *os.File
}

// Adopt serves the fd socket handed over by an upgrade's exec
// (docs/upgrade.md) at path: ln is its inherited listener, conns its open
// connections with their stored descriptors, last the slot counter. It
// takes ownership of every file given, also on error.
func Adopt(ln *os.File, path string, conns []HandoffConn, last uint64, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Conn.Close()
			for _, sl := range c.Slots {
				_ = sl.File.Close()
			}
		}
	}
	l, err := net.FileListener(ln) // a dup
	_ = ln.Close()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("adopt fd socket: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok || ul.Addr().Network() != "unixpacket" {
		_ = l.Close()
		closeAll()
		return nil, fmt.Errorf("adopt fd socket: a %T on %s, not a seqpacket unix socket", l, l.Addr().Network())
	}
	ul.SetUnlinkOnClose(false) // Close removes the file itself
	s := &Server{
		path:    filepath.Clean(path),
		logger:  logger,
		ln:      ul,
		done:    make(chan struct{}),
		slots:   newStore(),
		conns:   make(map[*netguard.Conn]*connState),
		limiter: netguard.NewLimiter(MaxConns, "fd socket", logger),
	}
	s.slots.last = last
	var errs []error
	for _, hc := range conns {
		nc, err := net.FileConn(hc.Conn) // a dup
		_ = hc.Conn.Close()
		uc, ok := nc.(*net.UnixConn)
		if err != nil || !ok {
			if nc != nil {
				_ = nc.Close()
			}
			errs = append(errs, fmt.Errorf("adopt an fd socket connection (%T): %w", nc, err))
			for _, sl := range hc.Slots {
				_ = sl.File.Close() // its connection is gone: as at its end
			}
			continue
		}
		lc := s.limiter.Admit(uc) // no more than the old process held: room for all
		if lc == nil {
			errs = append(errs, errors.New("adopt an fd socket connection: over the limit"))
			for _, sl := range hc.Slots {
				_ = sl.File.Close()
			}
			continue
		}
		lc.Active() // it spoke before the upgrade
		mine := make([]parked, 0, len(hc.Slots))
		for _, sl := range hc.Slots {
			s.slots.fds[sl.Slot] = sl.File
			mine = append(mine, parked{slot: sl.Slot, file: sl.File})
		}
		s.conns[lc] = &connState{}
		s.wg.Add(1)
		go s.serve(lc, mine)
	}
	s.startAccepting()
	return s, errors.Join(errs...)
}

// PauseForHandoff stops the server for an upgrade at a message boundary:
// it stops accepting (connections that arrive now wait in the socket's
// backlog, for whoever accepts next: this server after
// ResumeAfterHandoff, or the new process after Adopt) and parks every
// connection (its goroutine ends after the request in hand, leaving it
// open, its slots stored; requests sent meanwhile wait in its socket). It
// returns what to hand over; ResumeAfterHandoff undoes it.
func (s *Server) PauseForHandoff() (*Handoff, error) {
	close(s.stopAccept) // first: the Accept the deadline wakes must see it
	_ = s.ln.SetDeadline(time.Unix(1, 0))
	<-s.acceptEnded
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("fd socket: %w", net.ErrClosed)
	}
	s.handingOff = true
	for c := range s.conns {
		// Wakes its read. A reply it is about to write still goes out
		// (the client waits for it), unless the client does not read it
		// within handoffWriteGrace: that bounds the wait below.
		_ = c.SetReadDeadline(time.Unix(1, 0))
		_ = c.SetWriteDeadline(time.Now().Add(handoffWriteGrace))
	}
	s.mu.Unlock()
	s.wg.Wait() // every connection parked or ended; the accept loop has ended

	h := &Handoff{}
	fail := func(err error) (*Handoff, error) {
		h.close()
		s.ResumeAfterHandoff()
		return nil, err
	}
	var err error
	if h.Listener, err = s.ln.File(); err != nil {
		return fail(fmt.Errorf("fd socket listener: %w", err))
	}
	// Nothing runs now but this goroutine: the connections are parked
	// (those that ended are gone from conns) and nothing accepts.
	s.mu.Lock()
	h.Last = s.slots.last
	for c, st := range s.conns {
		f, ferr := c.Conn.(*net.UnixConn).File() //nolint:forcetypeassert // the listener is a UnixListener
		if ferr != nil {
			err = fmt.Errorf("fd socket connection: %w", ferr)
			break
		}
		hc := HandoffConn{Conn: f}
		for _, p := range st.mine {
			if s.slots.fds[p.slot] == p.file { // not taken since
				hc.Slots = append(hc.Slots, HandoffSlot{Slot: p.slot, File: p.file})
			}
		}
		h.Conns = append(h.Conns, hc)
	}
	s.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	return h, nil
}

// close closes the dups of a Handoff (not the stored files: the store's).
func (h *Handoff) close() {
	if h.Listener != nil {
		_ = h.Listener.Close()
	}
	for _, c := range h.Conns {
		_ = c.Conn.Close()
	}
}

// ResumeAfterHandoff undoes PauseForHandoff, whose Handoff (if any) the
// caller closes with Close: the parked connections are served again with
// their slots, and the listener accepts again.
func (s *Server) ResumeAfterHandoff() {
	s.mu.Lock()
	s.handingOff = false
	for c, st := range s.conns {
		if !st.parked {
			continue
		}
		_ = c.SetDeadline(time.Time{})
		mine := st.mine
		*st = connState{}
		s.wg.Add(1)
		go s.serve(c, mine)
	}
	s.mu.Unlock()
	_ = s.ln.SetDeadline(time.Time{})
	s.startAccepting()
}

// Close closes the dups a Handoff holds (its listener and connections);
// the stored files stay the store's.
func (h *Handoff) Close() { h.close() }

func (s *Server) startAccepting() {
	s.stopAccept, s.acceptEnded = make(chan struct{}), make(chan struct{})
	s.wg.Add(1)
	go s.acceptLoop(handoffListener{s.ln, s.stopAccept}, s.acceptEnded)
}

// handoffListener is the listener as the accept loop sees it: once stop
// is closed (and the deadline PauseForHandoff sets has woken Accept), it
// reports itself closed, so the loop ends without counting an accept
// error.
type handoffListener struct {
	*net.UnixListener
	stop <-chan struct{}
}

func (l handoffListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.Accept()
	if err != nil {
		select {
		case <-l.stop:
			return nil, fmt.Errorf("%w: handed over", net.ErrClosed)
		default:
		}
	}
	return c, err
}

// bindLong listens on dir/name (which may be longer than sun_path) with
// socketMode, through ioloop.ListenUnix.
func bindLong(dir, name string) (*net.UnixListener, error) {
	ln, err := ioloop.ListenUnix("unixpacket", filepath.Join(dir, name), socketMode)
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	return ln, nil
}

// removeStale removes a socket left at path by an earlier run. It refuses
// to remove anything that is not a socket.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check for stale fd socket: %w", err)
	}
	if st.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("fd socket path %s: %w (not a socket)", path, fs.ErrExist)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale fd socket: %w", err)
	}
	return nil
}

// Path returns the socket's path as given to Listen (cleaned).
func (s *Server) Path() string { return s.path }

// Take removes the descriptor in slot from the store and hands it to the
// caller, who must close it. An empty slot yields an error wrapping ErrNoFD
// whose text is conmon-rs's "no file descriptor in slot N".
//
// The returned file shares its open file description with the client's
// descriptor; note that (*os.File).Fd, which os/exec calls for ExtraFiles,
// switches a non-blocking description to blocking mode.
func (s *Server) Take(slot uint64) (*os.File, error) {
	s.mu.Lock()
	f := s.slots.take(slot)
	s.mu.Unlock()
	if f == nil {
		return nil, &slotError{slot: slot}
	}
	s.logger.Debug("fd socket slot taken", "slot", slot)
	return f, nil
}

// Close stops the server: it closes the listener and every connection,
// waits for their goroutines, closes every descriptor not yet taken and
// removes the socket file. Later calls return nil.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*netguard.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	close(s.done)
	var errs []error
	if err := s.ln.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close fd socket listener: %w", err))
	}
	for _, c := range conns {
		_ = c.Close() // unblocks its reader; the goroutine closes it again
	}
	s.wg.Wait()

	s.mu.Lock()
	files := s.slots.drain()
	s.mu.Unlock()
	closeFiles(files)

	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove fd socket: %w", err))
	}
	s.logger.Debug("fd socket closed", "path", s.path, "dropped_fds", len(files))
	return errors.Join(errs...)
}

// acceptLoop accepts connections until Close, within MaxConns, and serves
// each in its own goroutine. Accept errors (EMFILE, ...) are retried with
// netguard's backoff.
func (s *Server) acceptLoop(ln net.Listener, ended chan struct{}) {
	defer s.wg.Done()
	defer close(ended)
	retry := netguard.AcceptRetry{Log: s.logger, What: "fd socket"}
	for {
		c, err := netguard.Accept(ln, s.limiter, &retry, s.done)
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = &connState{}
		s.wg.Add(1) // the accept goroutine's own count keeps wg above zero
		s.mu.Unlock()
		go s.serve(c, nil)
	}
}

// serve handles one connection's requests in order until it ends, or
// until it parks for a handoff. mine are the slots it filled before (a
// connection served again after a handoff).
//
// A panic ends this connection only, as if the client had hung up: the
// descriptors of the message in hand (fds, until a step takes them) are
// closed, and so are those it parked and nobody took.
func (s *Server) serve(lc *netguard.Conn, mine []parked) {
	c := lc.Conn.(*net.UnixConn) //nolint:forcetypeassert // the listener is a UnixListener
	defer s.wg.Done()
	var fds []int // received, not yet closed or parked
	parkedForHandoff := false
	defer contain.Recover(s.logger, contain.FDStore, func(*contain.PanicError) { closeFDs(fds) })
	defer func() {
		if parkedForHandoff {
			return
		}
		s.release(mine)
		s.mu.Lock()
		delete(s.conns, lc)
		s.mu.Unlock()
		_ = lc.Close() // frees its place in the limiter
	}()

	// One byte more than a request, so a longer message reads as 9 bytes
	// and is ignored rather than mistaken for a request.
	buf := make([]byte, headerSize+1)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		fds = parseRights(oob[:oobn])
		if err == nil && n > 0 {
			lc.Active() // it spoke: no longer given up for a newcomer
		}
		if testHookRequest != nil {
			testHookRequest(buf[:n])
		}
		switch {
		case err != nil && errors.Is(err, os.ErrDeadlineExceeded) && s.park4Handoff(lc, mine):
			closeFDs(fds) // a timed-out read received none
			fds = nil
			parkedForHandoff = true
			return
		case err != nil || n == 0:
			closeFDs(fds)
			fds = nil
			if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.logger.Debug("fd socket read failed", "error", err)
			}
			return
		case n != headerSize:
			closeFDs(fds) // not a request: ignored, no reply
			fds = nil
			continue
		}
		header := binary.LittleEndian.Uint64(buf[:headerSize])
		if header == 0 {
			closeFDs(fds)
			fds = nil
			s.release(mine)
			mine = nil
			continue
		}
		want := int(header & countMask)
		var reply []byte
		if got := len(fds); got != want {
			closeFDs(fds)
			fds = nil
			reply = binary.LittleEndian.AppendUint64(nil, header|errorMarker)
			reply = fmt.Appendf(reply, "received %d fds, but expected %d fds", got, want)
		} else {
			added, ok := s.park(fds)
			fds = nil
			if !ok {
				return // closing: park closed the descriptors
			}
			mine = append(mine, added...)
			reply = binary.LittleEndian.AppendUint64(make([]byte, 0, headerSize*(1+len(added))), header)
			for _, p := range added {
				reply = binary.LittleEndian.AppendUint64(reply, p.slot)
			}
		}
		if _, err := c.Write(reply); err != nil {
			s.logger.Debug("fd socket reply failed", "error", err)
		}
	}
}

// park4Handoff parks lc with its slots if a handoff is under way, and
// reports whether it did.
func (s *Server) park4Handoff(lc *netguard.Conn, mine []parked) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.conns[lc]
	if !s.handingOff || !ok {
		return false
	}
	st.parked, st.mine = true, mine
	return true
}

// testHookRequest, when set by a test, sees each message a connection
// sends, before it is handled: a seam to inject a panic.
var testHookRequest func(msg []byte)

// park stores fds in fresh slots. It returns false, having closed fds, if
// the server is closing.
func (s *Server) park(fds []int) ([]parked, bool) {
	added := make([]parked, 0, len(fds))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		closeFDs(fds)
		return nil, false
	}
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "fd-socket")
		added = append(added, parked{slot: s.slots.add(f), file: f})
	}
	if s.logger.Enabled(context.Background(), slog.LevelDebug) {
		slots := make([]uint64, len(added))
		for i, p := range added {
			slots[i] = p.slot
		}
		s.logger.Debug("fd socket slots filled", "slots", slots)
	}
	return added, true
}

// release closes the descriptors a connection parked that nobody took.
func (s *Server) release(mine []parked) {
	if len(mine) == 0 {
		return
	}
	var drop []*os.File
	s.mu.Lock()
	for _, p := range mine {
		if s.slots.drop(p.slot, p.file) {
			drop = append(drop, p.file)
		}
	}
	s.mu.Unlock()
	closeFiles(drop)
}

// parseRights extracts the descriptors of every SCM_RIGHTS message in oob.
func parseRights(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}
