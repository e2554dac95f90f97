package ioloop

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Unix sockets at paths longer than sun_path (108 bytes): CRI-O's run
// directories are. Binding and dialling go through
// /proc/self/fd/<dirfd>/<name>, a short alias of the same directory entry,
// as the conmon-rs client does (docs/architecture.md, "Long socket paths").

// ListenUnix binds and listens on a unix socket of network ("unix" or
// "unixpacket") at path, which may be longer than sun_path, with the given
// mode. The mode is set between bind and listen, so nobody can connect
// while the socket has its umask mode. The listener does not unlink the
// path on Close (its recorded address is the /proc alias); the caller
// removes path.
func ListenUnix(network, path string, mode os.FileMode) (*net.UnixListener, error) {
	typ := unix.SOCK_STREAM
	if network == "unixpacket" {
		typ = unix.SOCK_SEQPACKET
	}
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket directory %s: %w", dir, err)
	}
	defer func() { _ = unix.Close(dfd) }() // the bound socket does not need it

	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("create socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer func() { _ = f.Close() }() // net.FileListener holds a dup
	short := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: short}); err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := unix.Fchmodat(dfd, name, uint32(mode.Perm()), 0); err != nil {
		_ = unix.Unlinkat(dfd, name, 0)
		return nil, fmt.Errorf("set mode of %s: %w", path, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		_ = unix.Unlinkat(dfd, name, 0)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		_ = unix.Unlinkat(dfd, name, 0)
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	return ul, nil
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
