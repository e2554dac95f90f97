package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is the part of /proc/<pid>/stat the leftover checks need.
type Proc struct {
	PID, PPID int
	State     byte
	Comm      string
}

// ReadStat parses /proc/<pid>/stat.
func ReadStat(pid int) (Proc, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// Format: pid (comm) state ppid ...; comm may contain spaces and ')'.
	i := bytes.LastIndexByte(data, ')')
	j := bytes.IndexByte(data, '(')
	if i < 0 || j < 0 || i+4 > len(data) {
		return Proc{}, fmt.Errorf("malformed stat of %d", pid)
	}
	fields := strings.Fields(string(data[i+2:]))
	if len(fields) < 2 {
		return Proc{}, fmt.Errorf("malformed stat of %d", pid)
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return Proc{}, fmt.Errorf("malformed stat of %d: %w", pid, err)
	}
	return Proc{PID: pid, PPID: ppid, State: fields[0][0], Comm: string(data[j+1 : i])}, nil
}

// ChildrenOf lists the processes whose parent is ppid.
func ChildrenOf(ppid int) ([]Proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil || st.PPID != ppid {
			continue // raced with exit, or not a child
		}
		out = append(out, st)
	}
	return out, nil
}

// ProcessExists reports whether a process (including a zombie) with pid
// exists.
func ProcessExists(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// ExePath returns the /proc/<pid>/exe link target.
func ExePath(pid int) (string, error) {
	p, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
	if err != nil {
		return "", fmt.Errorf("read exe link of pid %d: %w", pid, err)
	}
	return p, nil
}

// GomonChildren returns the PIDs of our children that run the gomon
// binary under test.
func GomonChildren(t testing.TB) []int {
	t.Helper()
	kids, err := ChildrenOf(os.Getpid())
	if err != nil {
		t.Fatalf("list children: %v", err)
	}
	var pids []int
	for _, k := range kids {
		if exe, err := ExePath(k.PID); err == nil && strings.TrimSuffix(exe, " (deleted)") == gomonPath {
			pids = append(pids, k.PID)
		}
	}
	return pids
}

// leftoverGrace is how long CheckNoLeftovers lets our children take to
// exit after the test before it calls them left behind.
const leftoverGrace = 5 * time.Second

// CheckNoLeftovers registers a cleanup (run after every later-registered
// cleanup, i.e. after the daemons are stopped) that fails the test if any
// process is left among our children, then kills and reaps it so the next
// test starts clean. Zombies (exited orphans nobody reaped) are reaped and
// logged.
func CheckNoLeftovers(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(leftoverGrace)
		for {
			kids, err := ChildrenOf(os.Getpid())
			if err != nil {
				t.Errorf("list children: %v", err)
				return
			}
			var live []Proc
			for _, k := range kids {
				if k.State == 'Z' {
					t.Logf("reaping zombie left behind: pid %d (%s)", k.PID, k.Comm)
					var ws unix.WaitStatus
					_, _ = unix.Wait4(k.PID, &ws, unix.WNOHANG, nil) // best effort reap
					continue
				}
				live = append(live, k)
			}
			if len(live) == 0 {
				return
			}
			if time.Now().After(deadline) {
				for _, k := range live {
					t.Errorf("process left behind: pid %d (%s); killing it", k.PID, k.Comm)
					_ = unix.Kill(k.PID, unix.SIGKILL) // our own descendant
					var ws unix.WaitStatus
					_, _ = unix.Wait4(k.PID, &ws, 0, nil)
				}
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// ProcStatus returns the named numeric field of /proc/<pid>/status
// (VmRSS in bytes, Threads as a count).
func ProcStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("open status of pid %d: %v", pid, err)
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == field+":" {
			n, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", sc.Text(), err)
			}
			if len(fields) == 3 && fields[2] == "kB" {
				n <<= 10
			}
			return n
		}
	}
	t.Fatalf("no %s line in /proc/%d/status (err %v)", field, pid, sc.Err())
	return 0
}

// FDCount counts the open fds of pid.
func FDCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		t.Fatalf("list fds of %d: %v", pid, err)
	}
	return len(ents)
}

// ZombiesOf lists the zombie children of pid.
func ZombiesOf(t testing.TB, pid int) []Proc {
	t.Helper()
	kids, err := ChildrenOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	var z []Proc
	for _, k := range kids {
		if k.State == 'Z' {
			z = append(z, k)
		}
	}
	return z
}

// WaitForFile polls until path exists and is non-empty, up to d, and
// returns its content.
func WaitForFile(path string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		data, err := os.ReadFile(path)
		if err == nil && len(data) > 0 {
			return string(data), nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear within %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
