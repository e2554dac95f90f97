package reliability

// The CRI log under stress: a full filesystem, a deleted file, a flood
// read by a stuck attach client.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs of size bytes on a new temp dir, unmounted at
// the end of the test.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot mount a tmpfs: %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes path until the filesystem refuses (ENOSPC).
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path) //nolint:forbidigo // a scratch file only this test writes, not a pid or exit file
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, size := range []int{64 << 10, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", path, err)
				}
				break
			}
		}
	}
}

// numberedLines is a script printing prefix-0 … prefix-(n-1), one line
// each, padded to about 100 bytes, sleeping usec between lines.
func numberedLines(prefix string, n, usec int) []string {
	pad := strings.Repeat("x", 90)
	return []string{"sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "%s-$i %s"; i=$((i+1)); usleep %d; done`, n, prefix, pad, usec)}
}

// lineNumbers parses the numbers of lines written by numberedLines and
// checks that they increase.
func lineNumbers(t *testing.T, lines []string, prefix string) []int {
	t.Helper()
	var nums []int
	for _, l := range lines {
		f, _, _ := strings.Cut(l, " ")
		n, err := strconv.Atoi(strings.TrimPrefix(f, prefix+"-"))
		if err != nil || !strings.HasPrefix(f, prefix+"-") {
			t.Errorf("unexpected log line %q", l)
			continue
		}
		if len(nums) > 0 && n <= nums[len(nums)-1] {
			t.Errorf("line %d after line %d: out of order or duplicated", n, nums[len(nums)-1])
		}
		nums = append(nums, n)
	}
	return nums
}

// TestLogFilesystemFull: the CRI log lives on a 1 MiB tmpfs that a filler
// file fills up while the container writes. The container is not
// blocked, the log holds only whole records, logging resumes once the
// filler is deleted, the exit code is written and gomon reports the loss.
func TestLogFilesystemFull(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	mnt := mountTmpfs(t, 1<<20)
	cfg := serverConfig(t, runcPath(t))
	daemonLog := withDaemonLog(t, cfg)
	s := startGomon(t, cfg)
	const n = 300
	c := newCtr(t, nil, numberedLines("line", n, 10000)...)
	c.logPath = filepath.Join(mnt, "ctr.log")
	if err := createCtr(t, s, c, nil); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	c.runc(t, s, "start", c.id)
	// Space comes back once gomon has met the full filesystem (and some
	// more output was lost), not after a fixed time a slow start may eat.
	waitDaemonLog(t, daemonLog, "output destination failing")
	time.Sleep(200 * time.Millisecond)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code := c.exitCode(t); code != 0 { // bounded by hangGuard: the container was not blocked
		t.Fatalf("exit code %d, want 0", code)
	}
	nums := lineNumbers(t, logLines(t, c.logPath), "line") // fails on a broken record
	t.Logf("log kept %d of %d lines", len(nums), n)
	if len(nums) == n {
		t.Fatalf("all %d lines logged: the filesystem never filled up, the test proved nothing", n)
	}
	if len(nums) == 0 || nums[len(nums)-1] != n-1 {
		t.Errorf("logging did not resume after space came back: last line %v", nums[max(len(nums)-1, 0):])
	}
	s.stop(t)
	raw, err := os.ReadFile(daemonLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"output destination failing", "output destination recovered"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("daemon log lacks %q; it has:\n%s", want, raw)
		}
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, "output destination recovered") {
			t.Logf("gomon reported: %s", line)
		}
	}
}

// TestLogFileDeleted: the log file is deleted while the container writes.
// gomon keeps writing (to the unlinked file) without failing, and
// ReopenLog creates a new file that gets the rest of the output.
func TestLogFileDeleted(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	const n = 150
	c := running(t, s, nil, numberedLines("line", n, 20000)...)
	// The old file gets some lines before it goes (counted raw: a record
	// may be half written as it is read).
	for deadline := time.Now().Add(hangGuard); ; {
		if raw, _ := os.ReadFile(c.logPath); bytes.Count(raw, []byte("\n")) >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no output in the log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.Remove(c.logPath); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	s.alive(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: c.id}); err != nil {
		t.Fatalf("ReopenLog after the log was deleted: %v", err)
	}
	if _, err := os.Stat(c.logPath); err != nil {
		t.Fatalf("ReopenLog did not recreate the log: %v", err)
	}
	if deleted := deletedFDs(t, s.pid, c.logPath); len(deleted) != 0 {
		t.Errorf("gomon still holds the deleted log after ReopenLog: %v", deleted)
	}
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	nums := lineNumbers(t, logLines(t, c.logPath), "line")
	if len(nums) == 0 {
		t.Fatal("the new log is empty")
	}
	t.Logf("new log has lines %d..%d", nums[0], nums[len(nums)-1])
	if nums[len(nums)-1] != n-1 || nums[0] == 0 {
		t.Errorf("new log has %d lines, want the tail of the output up to line %d", len(nums), n-1)
	}
	if len(nums) > 0 && len(nums) != n-nums[0] {
		t.Errorf("new log lost lines: %d lines from %d to %d", len(nums), nums[0], n-1)
	}
}

// waitDaemonLog waits (bounded by hangGuard) until gomon's own log at
// path holds want.
func waitDaemonLog(t *testing.T, path, want string) {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); ; {
		raw, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(raw), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gomon's log never said %q; it has:\n%s", want, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deletedFDs lists fds of pid pointing at path (deleted).
func deletedFDs(t *testing.T, pid int, path string) []string {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == path+" (deleted)" {
			out = append(out, e.Name()+" -> "+l)
		}
	}
	return out
}

// stuckWriter blocks every Write until released: an attach client that
// never reads.
type stuckWriter struct {
	once    sync.Once
	release chan struct{}
	first   chan struct{}
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	<-w.release
	return len(p), nil
}
func (w *stuckWriter) Close() error { return nil }

// TestFloodWithStuckAttachClient: a container writes ~1.3 MB while an
// attach client reads nothing. The container finishes and the log holds
// every line.
func TestFloodWithStuckAttachClient(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	const n = 200000
	c := newCtr(t, nil, "seq", "1", strconv.Itoa(n))
	if err := createCtr(t, s, c, nil); err != nil {
		t.Fatal(err)
	}
	w := &stuckWriter{release: make(chan struct{}), first: make(chan struct{})}
	attached := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.client.AttachContainer(context.Background(), &client.AttachConfig{
			ID: c.id, SocketPath: filepath.Join(c.dir, "attach"),
			Streams:        client.AttachStreams{Stdout: &client.Out{WriteCloser: w}},
			PostAttachFunc: func() error { close(attached); return nil },
		})
	}()
	select {
	case <-attached:
	case <-time.After(hangGuard):
		t.Fatal("attach did not connect")
	}
	defer func() {
		close(w.release)
		select {
		case err := <-done:
			if err != nil {
				t.Logf("attach ended: %v", err)
			}
		case <-time.After(hangGuard):
			t.Error("attach did not end after the container exited")
		}
	}()
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 { // bounded: the stuck client must not block the container
		t.Fatalf("exit code %d", code)
	}
	select {
	case <-w.first:
	default:
		t.Error("the attach client never received output")
	}
	lines := logLines(t, c.logPath)
	if len(lines) != n {
		t.Fatalf("log has %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("log line %d is %q, want %d", i, l, i+1)
		}
	}
}
