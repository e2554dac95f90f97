package monitor

import (
	"os"
	"syscall"
	"testing"
)

// TestNewRuntimeIOOutOfFDs: when a pipe cannot be made (the process is out
// of descriptors), newRuntimeIO returns the error and leaves nothing open;
// it must not panic in its cleanup.
func TestNewRuntimeIOOutOfFDs(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	// Room for /dev/null and one more descriptor: the first pipe fails.
	lim := old
	lim.Cur = uint64(len(fds) + 1)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	rio, err := newRuntimeIO(false /* terminal */, false /* stdin */)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		rio.close()
		t.Fatal("newRuntimeIO succeeded with no descriptors to spare")
	}
	after, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(after) != len(fds) {
		t.Errorf("descriptors %d before, %d after a failed newRuntimeIO", len(fds), len(after))
	}
}
