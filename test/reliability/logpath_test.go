package reliability

// Log paths a container can plant things at, and a leftover process
// holding the output open.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"golang.org/x/sys/unix"
)

// victimFile is a root-owned file outside the log directory.
func victimFile(t *testing.T) (string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "victim")
	const content = "root-owned content\n"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, content
}

func checkVictimFile(t *testing.T, path, content string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != content {
		t.Errorf("file behind the log path was changed: %q", got)
	}
}

// TestLogPathPlanted: a symlink, a FIFO or a device at the log path is
// refused by CreateContainer (within hangGuard: a FIFO does not block the
// open), and whatever a symlink points at is not touched.
func TestLogPathPlanted(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	vpath, vcontent := victimFile(t)
	for _, kind := range []string{"symlink", "fifo", "device node", "/dev/null"} {
		t.Run(kind, func(t *testing.T) {
			c := newCtr(t, nil, "echo", "container-controlled line")
			switch kind {
			case "symlink":
				if err := os.Symlink(vpath, c.logPath); err != nil {
					t.Fatal(err)
				}
			case "fifo":
				if err := unix.Mkfifo(c.logPath, 0o600); err != nil {
					t.Fatal(err)
				}
			case "device node":
				if err := unix.Mknod(c.logPath, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatal(err)
				}
			case "/dev/null":
				c.logPath = os.DevNull
			}
			err := createCtr(t, s, c, nil)
			if err == nil {
				t.Fatalf("CreateContainer with a %s at the log path succeeded", kind)
			}
			if !strings.Contains(err.Error(), "unsafe log path") {
				t.Errorf("error %v, want it to name the unsafe log path", err)
			}
			checkVictimFile(t, vpath, vcontent)
			s.alive(t)
		})
	}
}

// TestLogReopenOntoPlantedSymlink: between kubelet's rename and
// ReopenLog the container plants a symlink at the log path. The reopen is
// refused, the symlink's target is untouched, and every line still lands
// in the renamed log.
func TestLogReopenOntoPlantedSymlink(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	vpath, vcontent := victimFile(t)
	const n = 100
	c := running(t, s, nil, numberedLines("line", n, 20000)...)
	time.Sleep(300 * time.Millisecond)
	rotated := c.logPath + ".1"
	if err := os.Rename(c.logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vpath, c.logPath); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: c.id})
	if err == nil {
		t.Error("ReopenLog onto a planted symlink succeeded")
	}
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	checkVictimFile(t, vpath, vcontent)
	if nums := lineNumbers(t, logLines(t, rotated), "line"); len(nums) != n {
		t.Errorf("renamed log has %d lines, want all %d", len(nums), n)
	}
}

// TestDrainLeftoverHolder: the container's init exits while a background
// process it started keeps its stdout open. The drain still ends (after
// the idle bound, 5 s) and writes the exit file; what was written is in
// the log; gomon says why it stopped the stream.
func TestDrainLeftoverHolder(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	cfg := serverConfig(t, runcPath(t))
	daemonLog := withDaemonLog(t, cfg)
	s := startGomon(t, cfg)
	c := running(t, s, withoutPIDNamespace, "sh", "-c", `sleep 120 & echo "leftover $!"; exit 3`)
	if code := c.exitCode(t); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	lines := logLines(t, c.logPath)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "leftover ") {
		t.Fatalf("log %q, want the leftover's pid line", lines)
	}
	if pid, err := strconv.Atoi(strings.TrimPrefix(lines[0], "leftover ")); err == nil && pid > 1 {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	waitForLog(t, daemonLog, "a leftover process holds it")
}
