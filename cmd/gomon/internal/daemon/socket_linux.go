package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// listenUnix binds a stream socket at path, which may be longer than the
// 108 bytes of sun_path: the bind goes through /proc/self/fd/<dirfd>/<name>,
// the same trick the conmon-rs client uses to dial. The listener does not
// unlink the path on Close; the daemon removes it explicitly.
func listenUnix(path string) (*net.UnixListener, error) {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("open socket directory: %w", err)
	}
	defer func() { _ = dir.Close() }() // the bound socket does not need the dir fd
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	// conmon.sock speaks for every container of the pod: owner only.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("restrict socket mode: %w", err)
	}
	return l, nil
}

// removeIfExists removes path, tolerating its absence.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// cloexecInherited marks every fd above 2 close-on-exec, so nothing the
// launching process leaked to us reaches the daemon or any container.
// Go's own fds are close-on-exec already.
func cloexecInherited() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Kernels before 5.11: walk /proc/self/fd.
	entries, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return fmt.Errorf("close_range: %w; list fds: %w", err, rerr)
	}
	for _, e := range entries {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil || fd <= 2 {
			continue
		}
		unix.CloseOnExec(fd) // the fd of the directory read above is already gone
	}
	return nil
}
