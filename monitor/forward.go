package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
)

// forwardStopTimeout bounds how long stop waits for the input copier; one
// blocked in a Read that cannot be interrupted is left to end at the
// input's next read (or with the process).
const forwardStopTimeout = time.Second

// forwardChunk is the largest stdin message sent over the attach socket,
// the size the attach server reads (and the conmon-rs Go client writes).
const forwardChunk = 32 << 10

// forwarder is Run's attach client: it copies Run's Input into the
// container through an attach socket, and the user's terminal size into
// the container's terminal. Its goroutines are owned by stop.
type forwarder struct {
	log     *slog.Logger
	dir     string          // temp dir of the attach socket
	conn    *net.UnixConn   // attach connection, nil without stdin
	in      io.Reader       // what the copier reads
	closeIn func()          // interrupts a blocked read of in, if possible
	term    console.Console // the user's terminal, nil if none
	raw     bool            // term was put in raw mode
	sigc    chan os.Signal
	quit    chan struct{}
	copier  sync.WaitGroup
	others  sync.WaitGroup
}

// startForwarding sets up stdin forwarding and terminal resizing for Run.
// On error nothing is left running.
func startForwarding(ctx context.Context, m *Monitor, opts RunOptions) (f *forwarder, err error) {
	f = &forwarder{log: m.log, quit: make(chan struct{}), closeIn: func() {}}
	defer func() {
		if err != nil {
			f.stop()
			f = nil
		}
	}()
	if opts.Terminal {
		f.term = findTerminal(opts.Input, opts.Stdout)
	}
	if opts.Stdin && opts.Input != nil {
		f.dir, err = os.MkdirTemp("", "gomon-run-attach-")
		if err != nil {
			return nil, fmt.Errorf("create attach dir: %w", err)
		}
		sock := filepath.Join(f.dir, "attach")
		if err = m.Attach(ctx, AttachRequest{ID: opts.ID, SocketPath: sock, StopAfterStdinEOF: !opts.Terminal}); err != nil {
			return nil, err
		}
		f.conn, err = net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
		if err != nil {
			return nil, fmt.Errorf("connect to attach socket: %w", err)
		}
		if f.term != nil {
			if err = f.term.SetRaw(); err != nil {
				return nil, fmt.Errorf("set terminal raw: %w", err)
			}
			f.raw = true
		}
		f.in, f.closeIn = interruptible(opts.Input)
		f.others.Go(f.discardOutput)
		f.copier.Go(f.copyInput)
	}
	if f.term != nil {
		f.resize(ctx, m, opts.ID)
		f.sigc = make(chan os.Signal, 1)
		signal.Notify(f.sigc, unix.SIGWINCH)
		f.others.Go(func() {
			for {
				select {
				case <-f.quit:
					return
				case <-f.sigc:
					f.resize(ctx, m, opts.ID)
				}
			}
		})
	}
	return f, nil
}

// findTerminal returns the first of the files that is a terminal.
func findTerminal(candidates ...any) console.Console {
	for _, c := range candidates {
		if file, ok := c.(*os.File); ok {
			if con, err := console.ConsoleFromFile(file); err == nil {
				return con
			}
		}
	}
	return nil
}

// resize sends the user's terminal size to the container's terminal.
func (f *forwarder) resize(ctx context.Context, m *Monitor, id string) {
	ws, err := f.term.Size()
	if err != nil {
		f.log.Debug("get terminal size", "error", err)
		return
	}
	if err := m.SetWindowSize(ctx, id, ws.Width, ws.Height); err != nil {
		f.log.Debug("set container window size", "error", err)
	}
}

// interruptible returns a reader for in whose blocked Read can be ended:
// a terminal or FIFO *os.File is reopened through /proc/self/fd as a new,
// non-blocking open file (so the caller's own descriptor keeps its flags)
// and closing it ends a pending Read. Other readers are returned as they
// are, with a close that sets a read deadline where supported.
func interruptible(in io.Reader) (io.Reader, func()) {
	if file, ok := in.(*os.File); ok {
		if st, err := file.Stat(); err == nil && st.Mode()&(os.ModeCharDevice|os.ModeNamedPipe) != 0 {
			p := "/proc/self/fd/" + strconv.Itoa(int(file.Fd()))
			if re, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
				return re, func() { _ = re.Close() } // ends a pending Read
			}
		}
	}
	return in, func() {
		if dl, ok := in.(interface{ SetReadDeadline(time.Time) error }); ok {
			_ = dl.SetReadDeadline(time.Now()) // unblocks a pending Read
		}
	}
}

// copyInput copies the input to the attach socket in messages of at most
// forwardChunk bytes. At EOF it shuts down the writing side (stdin EOF for
// the server: it closes a non-terminal container's stdin).
func (f *forwarder) copyInput() {
	buf := make([]byte, forwardChunk)
	for {
		n, err := f.in.Read(buf)
		if n > 0 {
			if _, werr := f.conn.Write(buf[:n]); werr != nil {
				return // the container (and its attach socket) is gone
			}
		}
		if errors.Is(err, io.EOF) {
			_ = f.conn.CloseWrite() // stdin EOF; fails only if gone
			return
		}
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
				f.log.Debug("read input", "error", err)
			}
			return
		}
	}
}

// discardOutput reads the attach connection until done: Run takes the
// output from the read loops directly, so the frames are not needed, but
// a client that does not read would be counted as slow.
func (f *forwarder) discardOutput() {
	buf := make([]byte, 1+8192)
	for {
		n, err := f.conn.Read(buf)
		if err != nil || (n == 1 && buf[0] == 0) {
			return
		}
	}
}

// stop ends forwarding: it stops resizing, closes the connection,
// interrupts and waits for the input copier (bounded), restores the terminal
// and removes the socket dir. It is safe on a partly set up forwarder.
func (f *forwarder) stop() {
	select {
	case <-f.quit:
		return
	default:
	}
	close(f.quit)
	if f.sigc != nil {
		signal.Stop(f.sigc)
	}
	// Run calls stop once the container has exited: nothing more needs
	// to be sent, so the connection closes first (ending a blocked Write
	// and discardOutput), then the input is interrupted.
	if f.conn != nil {
		_ = f.conn.Close()
	}
	f.closeIn()
	if !waitTimeout(&f.copier, forwardStopTimeout) {
		f.log.Warn("stdin copier still blocked reading its input; it ends at the input's next read")
	}
	f.others.Wait()
	if f.raw {
		if err := f.term.Reset(); err != nil {
			f.log.Warn("restore terminal", "error", err)
		}
	}
	if f.dir != "" {
		_ = os.RemoveAll(f.dir) // best effort; the server removed the socket
	}
}
