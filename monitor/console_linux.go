package monitor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
)

// consoleSocket is the --console-socket listener of one terminal
// container: the runtime connects to it once and sends the pty master.
type consoleSocket struct {
	path string // the real path, removed by close
	ln   *net.UnixListener
	// accepted delivers the one accepted connection (or the accept's
	// error); a receiver owns the connection. acceptDone is closed once
	// the accept goroutine has delivered.
	accepted   chan acceptResult
	acceptDone chan struct{}
}

// newConsoleSocket listens at $TMPDIR/gomon-term-<random>.sock. It binds
// through /proc/self/fd/<dirfd>/<name> so a long TMPDIR beyond the 108-byte
// sun_path limit still works (docs/architecture.md, "Long socket paths"); the runtime connects by the real
// path, which runc also shortens the same way.
func newConsoleSocket() (*consoleSocket, error) {
	dir := os.TempDir()
	name := "gomon-term-" + randomSuffix() + ".sock"
	// Owner-only: only the runtime (running as us) connects. close
	// removes the path.
	ln, err := ioloop.ListenUnix("unix", filepath.Join(dir, name), 0o600)
	if err != nil {
		return nil, fmt.Errorf("listen on console socket: %w", err)
	}
	s := &consoleSocket{
		path:       filepath.Join(dir, name),
		ln:         ln,
		accepted:   make(chan acceptResult, 1),
		acceptDone: make(chan struct{}),
	}
	go func() { // ends when the runtime connects or close stops listening
		defer close(s.acceptDone)
		conn, err := s.ln.AcceptUnix()
		s.accepted <- acceptResult{conn: conn, err: err}
	}()
	return s, nil
}

// acceptResult is the outcome of one accept.
type acceptResult struct {
	conn *net.UnixConn
	err  error
}

// close stops listening, removes the socket file, waits for the accept
// goroutine and closes a connection nobody received. It is idempotent.
func (s *consoleSocket) close() {
	_ = s.ln.Close()      // error only if already closed; ends a pending accept
	_ = os.Remove(s.path) // may already be gone
	<-s.acceptDone
	select {
	case r := <-s.accepted:
		if r.conn != nil {
			_ = r.conn.Close()
		}
	default: // received by the caller, who owns the connection
	}
}

// receiveConsole reads the one message the runtime sends on conn: the pty
// master as SCM_RIGHTS. It sets ONLCR on the master (so "\n" is logged as
// "\r\n", as conmon-rs does) and returns it non-blocking, so reads go
// through Go's poller and a Close unblocks them.
func receiveConsole(conn *net.UnixConn, deadline time.Time) (console.Console, error) {
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set console socket deadline: %w", err)
	}
	buf := make([]byte, 4096) // runc sends the pty's name as data
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receive pty master: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, fmt.Errorf("parse console socket message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	if len(fds) == 0 {
		return nil, errors.New("receive pty master: no file descriptor in message")
	}
	for _, extra := range fds[1:] {
		_ = unix.Close(extra) // one pty master per message; ignore extras
	}
	fd := fds[0]
	unix.CloseOnExec(fd)
	if err := setONLCR(fd); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("set pty master non-blocking: %w", err)
	}
	name := string(buf[:n])
	if name == "" {
		name = "pty-master"
	}
	p, err := newPtyMaster(fd, name)
	if err != nil {
		return nil, err // not a nil *ptyMaster in a non-nil interface
	}
	return p, nil
}

// ptyMaster is a pty master as a console.Console that stays non-blocking:
// its reads wait in Go's poller, so a read deadline stops them (the drain
// policy, an upgrade's handoff: ioloop.StopForHandoff) and a Close ends
// them. It also gives its fd to an upgrade (SyscallConn), which keeps it
// across the exec.
type ptyMaster struct {
	console.Console // over ptyFile
	f               *os.File
}

// newPtyMaster wraps fd, a non-blocking pty master, taking it over.
func newPtyMaster(fd int, name string) (*ptyMaster, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := console.ConsoleFromFile(ptyFile{f})
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("wrap pty master: %w", err)
	}
	return &ptyMaster{Console: c, f: f}, nil
}

// SetReadDeadline sets the master's read deadline.
func (p *ptyMaster) SetReadDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }

// SyscallConn gives the master's fd without making it blocking.
func (p *ptyMaster) SyscallConn() (syscall.RawConn, error) { return p.f.SyscallConn() }

// ptyFile is the console.File under a ptyMaster: its Fd does not switch
// the file to blocking mode as os.File.Fd does (the console calls Fd for
// every ioctl); it is ^0 once the file is closed, which the ioctl refuses.
type ptyFile struct{ *os.File }

// Fd returns the descriptor, leaving the file non-blocking.
func (p ptyFile) Fd() uintptr {
	fd := ^uintptr(0)
	if rc, err := p.SyscallConn(); err == nil {
		_ = rc.Control(func(u uintptr) { fd = u })
	}
	return fd
}

// setONLCR makes the terminal translate "\n" to "\r\n" on output.
func setONLCR(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("get pty termios: %w", err)
	}
	t.Oflag |= unix.OPOST | unix.ONLCR
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set pty termios: %w", err)
	}
	return nil
}

// consoleSize is a WinSize of width columns and height rows.
func consoleSize(width, height uint16) console.WinSize {
	return console.WinSize{Width: width, Height: height}
}

// randomSuffix returns 16 random hex digits for a unique socket name.
func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}
