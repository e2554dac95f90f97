package ioloop

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// attachListener is one bound attach socket.
type attachListener struct {
	path              string
	ln                *net.UnixListener
	dev, ino          uint64 // identity of the socket file we bound
	stopAfterStdinEOF bool
	done              chan struct{} // closed by close
}

// inPlace reports whether path still is the socket file this listener
// bound (a client may have removed it).
func (l *attachListener) inPlace() bool {
	var st unix.Stat_t
	if err := unix.Lstat(l.path, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == l.dev && st.Ino == l.ino
}

// close stops accepting and removes the socket file if it is still ours.
func (l *attachListener) close() {
	select {
	case <-l.done:
		return
	default:
	}
	close(l.done)
	_ = l.ln.Close() // ends the accept loop
	if l.inPlace() {
		_ = os.Remove(l.path) // best effort: the client may remove it too
	}
}

// listenSeqpacket binds and listens on an AF_UNIX SOCK_SEQPACKET socket at
// path, mode 0600, through listenAt: paths longer than sun_path (108
// bytes) work (docs/architecture.md, "Long socket paths"), and the path
// appears only once the socket listens with its mode.
func listenSeqpacket(path string) (*attachListener, error) {
	path = filepath.Clean(path)
	dir, name := filepath.Split(path)
	if name == "" || name == "." || name == "/" {
		return nil, fmt.Errorf("attach socket path %q names no file: %w", path, fs.ErrInvalid)
	}
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create attach socket dir: %w", err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open attach socket dir %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(dfd) }() // the bound socket does not need it
	short := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name

	if err := removeStaleSocket(dfd, name, short); err != nil {
		return nil, fmt.Errorf("attach socket %s: %w", path, err)
	}
	ul, err := listenAt(dfd, "unixpacket", name, 0o600)
	if err != nil {
		return nil, fmt.Errorf("attach socket %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		_ = ul.Close()
		_ = unix.Unlinkat(dfd, name, 0)
		return nil, fmt.Errorf("stat attach socket %s: %w", path, err)
	}
	return &attachListener{
		path: path, ln: ul, dev: uint64(st.Dev), ino: st.Ino, done: make(chan struct{}),
	}, nil
}

// removeStaleSocket removes dir/name when it is a socket nobody listens
// on. Any other existing file, or a live socket, is an error wrapping
// fs.ErrExist.
func removeStaleSocket(dfd int, name, short string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("exists and is not a socket: %w", fs.ErrExist)
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: short, Net: "unixpacket"})
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("another process listens there: %w", fs.ErrExist)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		// E.g. EPROTOTYPE: a live socket of another type.
		return fmt.Errorf("existing socket is not a stale attach socket (%w): %w", err, fs.ErrExist)
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
