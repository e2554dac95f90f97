package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/ioloop"
)

// listenUnix listens on conmon.sock, owner-only (it speaks for every
// container of the pod), through the long-path trick of ioloop.ListenUnix.
// The listener does not unlink the path on Close; the daemon removes it.
func listenUnix(path string) (*net.UnixListener, error) {
	l, err := ioloop.ListenUnix("unix", path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
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
