package ioloop

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Unix sockets at paths longer than sun_path (108 bytes): CRI-O's run
// directories are. Binding and dialling go through
// /proc/self/fd/<dirfd>/<name>, a short alias of the same directory entry,
// as the conmon-rs client does (docs/architecture.md, "Long socket paths").

// ListenUnix binds and listens on a unix socket of network ("unix" or
// "unixpacket") at path, which may be longer than sun_path, with the given
// mode. The path appears only once the socket listens with that mode
// (listenAt), so a client that waits for the file and then dials is never
// refused. It fails with EADDRINUSE if path exists. The listener does not
// unlink the path on Close (its recorded address is a /proc alias); the
// caller removes path.
func ListenUnix(network, path string, mode os.FileMode) (*net.UnixListener, error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(dfd) }() // the bound socket does not need it
	l, err := listenAt(dfd, network, name, mode)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

// tmpSeq tells apart the temporary names of sockets bound at once.
var tmpSeq atomic.Uint64

// listenAt listens on a unix socket named name in the directory dfd.
// bind(2) creates the file before listen(2) can run, and a connect in
// between is refused, so the socket is bound under a temporary name,
// given its mode, made to listen, and only then renamed to name
// (without replacing anything there). A crash in between leaves the
// temporary file behind, in the same directory.
func listenAt(dfd int, network, name string, mode os.FileMode) (*net.UnixListener, error) {
	typ := unix.SOCK_STREAM
	if network == "unixpacket" {
		typ = unix.SOCK_SEQPACKET
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer func() { _ = f.Close() }() // net.FileListener holds a dup
	tmp := ".gomon-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(tmpSeq.Add(1), 10) + ".sock"
	proc := "/proc/self/fd/" + strconv.Itoa(dfd) + "/"
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: proc + tmp}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	placed := false
	defer func() {
		if !placed {
			_ = unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	if err := unix.Fchmodat(dfd, tmp, uint32(mode.Perm()), 0); err != nil {
		return nil, fmt.Errorf("set mode: %w", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	if err := renameNoReplace(dfd, tmp, name); err != nil {
		_ = l.Close()
		return nil, err
	}
	placed = true
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// renameat2 is unix.Renameat2; a seam for the tests of the fallback.
var renameat2 = unix.Renameat2

// renameNoReplace moves the directory entry from to to, failing with
// EADDRINUSE (what bind reports) if to exists. A filesystem without
// RENAME_NOREPLACE (EINVAL), or a kernel without renameat2 (ENOSYS, before
// 3.15), gets a hard link and an unlink, which fail the same way.
func renameNoReplace(dfd int, from, to string) error {
	err := renameat2(dfd, from, dfd, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = unix.Linkat(dfd, from, dfd, to, 0); err == nil {
			_ = unix.Unlinkat(dfd, from, 0)
		}
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("bind: %w", unix.EADDRINUSE)
	}
	if err != nil {
		return fmt.Errorf("move into place: %w", err)
	}
	return nil
}

// DialUnix connects to a unix socket of network at path, which may be
// longer than sun_path.
func DialUnix(network, path string) (*net.UnixConn, error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(dfd) }() // only needed to connect
	short := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name
	conn, err := net.DialUnix(network, nil, &net.UnixAddr{Name: short, Net: network})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", path, err)
	}
	return conn, nil
}
