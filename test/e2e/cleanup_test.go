package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// teardown stops everything the suite started and removes what it created, keeping only the
// small artifacts (logs, configs, the timing table) in the suite directory.
func (s *suite) teardown(t *testing.T) {
	t.Helper()
	if t.Failed() {
		s.dumpLogs(t)
	}
	start := time.Now()
	if s.crio != nil && !exited(s.crio) {
		s.removeAllPods(t)
	}
	stopProcess(s.crio, 20*time.Second)
	t.Logf("teardown: crio stopped in %v", time.Since(start).Round(time.Millisecond))
	// Monitors (gomon daemons, conmon) and containers of pods CRI-O did not clean up.
	for _, pid := range processesUnder(s.dir) {
		if s.jaeger != nil && pid == s.jaeger.Process.Pid {
			continue
		}
		t.Logf("teardown: killing leftover process %d: %s", pid, cmdline(pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	runcRoot := filepath.Join(s.dir, "runc")
	if ids, err := exec.Command(s.runc, "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(ids)) {
			t.Logf("teardown: deleting leftover runc container %s", id)
			_ = exec.Command(s.runc, "--root", runcRoot, "delete", "-f", id).Run()
		}
	}
	for _, m := range mountsUnder(s.dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("teardown: unmount %s: %v", m, err)
		}
	}
	stopProcess(s.jaeger, 10*time.Second)
	t.Logf("teardown: jaeger stopped, %v in all", time.Since(start).Round(time.Millisecond))
	s.removeCgroups(t)
	s.removeHostCaches(t)
	s.removeState(t)
}

// hostCacheDirs are the host paths the tools write to whatever their configuration says:
// containers/image's blob-info cache (skopeo) and libcni's result cache (CRI-O), deepest first.
var hostCacheDirs = []string{"/var/lib/containers/cache", "/var/lib/containers", "/var/lib/cni/results", "/var/lib/cni"}

// hostCacheFiles are the only files removed from those directories.
var hostCacheFiles = []string{"blob-info-cache-v1.boltdb", "blob-info-cache-v1.sqlite"}

// missing returns the paths that do not exist.
func missing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			out = append(out, p)
		}
	}
	return out
}

// removeHostCaches removes the host cache directories this run created, when they hold
// nothing but the known cache files (another user's data there is left alone).
func (s *suite) removeHostCaches(t *testing.T) {
	t.Helper()
	for _, d := range s.hostDirs {
		for _, f := range hostCacheFiles {
			_ = os.Remove(filepath.Join(d, f))
		}
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Logf("teardown: keeping %s: %v", d, err)
		}
	}
}

// removeAllPods stops and removes every pod CRI-O still knows.
func (s *suite) removeAllPods(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _, err := s.crictlRaw(ctx, false, "pods", "-q")
	if err != nil {
		t.Logf("teardown: list pods: %v", err)
		return
	}
	for _, id := range strings.Fields(out) {
		t.Logf("teardown: removing leftover pod %s", id)
		if _, _, err := s.crictlRaw(ctx, false, "stopp", id); err != nil {
			t.Logf("teardown: %v", err)
		}
		if _, _, err := s.crictlRaw(ctx, false, "rmp", "-f", id); err != nil {
			t.Logf("teardown: %v", err)
		}
	}
}

// processesUnder returns the PIDs whose command line mentions dir (monitors and runtimes
// started for this suite's pods), excluding this process.
func processesUnder(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if strings.Contains(cmdline(pid), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cmdline returns /proc/<pid>/cmdline with NULs as spaces ("" when gone).
func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			ms = append(ms, mp)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space and friends).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the per-run cgroupfs parent in every hierarchy, children first.
func (s *suite) removeCgroups(t *testing.T) {
	t.Helper()
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + s.cgroupParent)
	more, _ := filepath.Glob("/sys/fs/cgroup/*/*" + s.cgroupParent)
	for _, root := range append(roots, more...) {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil {
				t.Logf("teardown: remove cgroup %s: %v", d, err)
			}
		}
	}
}

// removeState deletes the suite directory's state. After a failure (or with GOMON_E2E_KEEP=1)
// the small artifacts stay for debugging: logs, configurations, raw traces, timings.txt;
// after a success only timings.txt does.
func (s *suite) removeState(t *testing.T) {
	t.Helper()
	if left := mountsUnder(s.dir); len(left) > 0 {
		t.Errorf("teardown: mounts still present, keeping %s: %v", s.dir, left)
		return
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	keepArtifacts := t.Failed() || os.Getenv("GOMON_E2E_KEEP") == "1"
	for _, e := range entries {
		if e.Name() == "timings.txt" {
			continue
		}
		if keepArtifacts && !e.IsDir() {
			switch filepath.Ext(e.Name()) {
			case ".log", ".txt", ".conf", ".yaml", ".json", ".svg":
				continue
			}
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			t.Logf("teardown: remove %s: %v", e.Name(), err)
		}
	}
	if keepArtifacts {
		t.Logf("artifacts (logs, configs, traces, timings) kept in %s", s.dir)
	} else {
		t.Logf("timings kept in %s/timings.txt (GOMON_E2E_KEEP=1 keeps the logs too)", s.dir)
	}
}
