package monitor

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCreateArgs(t *testing.T) {
	req := CreateRequest{
		ID: "ctr", BundlePath: "/b", GlobalArgs: []string{"--debug"},
		CommandArgs: []string{"--no-pivot"},
	}
	tests := []struct {
		name    string
		runtime string
		root    string
		level   slog.Level
		cg      CgroupManager
		console string
		want    string
	}{
		{"runc systemd default", "/usr/sbin/runc", "/run/runc", slog.LevelInfo, Systemd, "",
			"--root=/run/runc --systemd-cgroup --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"runc cgroupfs no root", "runc", "", slog.LevelInfo, Cgroupfs, "",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"console", "runc", "", slog.LevelInfo, Cgroupfs, "/tmp/s.sock",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot --console-socket=/tmp/s.sock ctr"},
		{"crun debug", "/usr/bin/crun", "/r", slog.LevelDebug, Cgroupfs, "",
			"--log=journald:ctr --log-level=debug --root=/r --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"crun info", "crun", "", slog.LevelInfo, Cgroupfs, "",
			"--log=journald:ctr --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"crun warn", "crun", "", slog.LevelWarn, Cgroupfs, "",
			"--log=journald:ctr --log-level=warning --debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
		{"not crun", "/usr/bin/crun-wrapper", "", slog.LevelDebug, Cgroupfs, "",
			"--debug create --bundle /b --pid-file /b/pidfile --no-pivot ctr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Monitor{cfg: Config{Runtime: tt.runtime, RuntimeRoot: tt.root, LogLevel: tt.level}}
			r := req
			r.Cgroup = tt.cg
			if got := strings.Join(m.createArgs(r, tt.console), " "); got != tt.want {
				t.Errorf("args\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestReadPIDFile(t *testing.T) {
	tests := []struct {
		name, content string
		want          int
		err           string
	}{
		{"plain", "1234", 1234, ""},
		{"newline", "1234\n", 1234, ""},
		{"empty", "", 0, "grandchild pid parse error"},
		{"zero", "0", 0, "grandchild pid parse error"},
		{"garbage", "12x", 0, "grandchild pid parse error"},
		{"missing", "-", 0, "grandchild pid read error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "-" {
				if err := os.WriteFile(filepath.Join(dir, "pidfile"), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readPIDFile(dir)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("= %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestRuntimeErrorText(t *testing.T) {
	tests := []struct {
		err  RuntimeError
		want string
	}{
		{RuntimeError{Code: 1}, "child command exited with: 1"},
		{RuntimeError{Code: 1, Stderr: "x not found in $PATH"}, "child command exited with: 1: x not found in $PATH"},
		{RuntimeError{Code: 137, Signal: unix.SIGKILL}, "child command exited with signal: 9"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestWriteExitFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "exit")
	if err := os.WriteFile(p, []byte("old content, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Hard link: an in-place truncate would change what the link sees;
	// a rename leaves the old inode alone.
	if err := os.Link(p, p+".old"); err != nil {
		t.Fatal(err)
	}
	for _, code := range []int{0, 137, ExitUnknown} {
		if err := writeExitFile(p, code); err != nil {
			t.Fatal(err)
		}
		if got := readExit(t, p); got != itoaTest(code) {
			t.Errorf("exit file %q, want %q", got, itoaTest(code))
		}
	}
	if got := readExit(t, p+".old"); got != "old content, longer" {
		t.Errorf("old inode was modified in place: %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := writeExitFile(filepath.Join(dir, "missing", "exit"), 0); err == nil {
		t.Error("write into a missing dir succeeded")
	}
}

func itoaTest(i int) string {
	switch i {
	case ExitUnknown:
		return "-1"
	case 137:
		return "137"
	}
	return "0"
}

// TestReaperEarlyExit covers the race a container PID is subject to: the
// process exits and is reaped before anyone subscribes to its PID.
func TestReaperEarlyExit(t *testing.T) {
	r, err := acquireReaper(testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer releaseReaper(r)

	// A grandchild: sh starts `exit 5` in the background and exits; the
	// orphan is re-parented to us (subreaper) and reaped unknown.
	devNull, _ := os.Open(os.DevNull)
	defer func() { _ = devNull.Close() }()
	pidDir := t.TempDir()
	pidFile := filepath.Join(pidDir, "pidfile")
	cmd := exec.Command("/bin/sh", "-c", `sh -c 'sleep 0.2; exit 5' & echo $! > "$0"`, pidFile)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, devNull, devNull
	c, err := r.start(cmd, false)
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-c.exit; ev.code() != 0 {
		t.Fatalf("sh exit %d", ev.code())
	}
	pid, err := readPIDFile(pidDir)
	if err != nil {
		t.Fatal(err)
	}
	// Let the grandchild exit and be reaped before we subscribe.
	if !waitFor(5*time.Second, func() bool { return unix.Kill(pid, 0) != nil }) {
		t.Fatal("grandchild did not exit")
	}
	ch := r.subscribePID(pid, time.Now(), false)
	select {
	case ev := <-ch:
		if ev.code() != 5 {
			t.Fatalf("early exit code %d, want 5", ev.code())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("early exit lost")
	}

	// A stale early exit (reaped before the new process was proven alive)
	// is not handed out.
	r.mu.Lock()
	r.early[999999] = exitEvent{pid: 999999, at: time.Now().Add(-time.Second)}
	r.mu.Unlock()
	ch = r.subscribePID(999999, time.Now(), true)
	select {
	case ev := <-ch:
		t.Fatalf("stale exit delivered: %+v", ev)
	default:
	}
	r.unsubscribe(999999)

	// A vanished PID with no record reports ExitUnknown.
	if ev := <-r.subscribePID(999998, time.Now(), false); ev.code() != ExitUnknown {
		t.Fatalf("vanished pid code %d", ev.code())
	}
}

func TestReaperEarlyBufferBounded(t *testing.T) {
	r := &reaper{log: testLogger(), subs: map[int]chan exitEvent{}, early: map[int]exitEvent{}}
	now := time.Now()
	for pid := 1; pid <= earlyExitMax+10; pid++ {
		dispatchForTest(r, exitEvent{pid: pid, at: now})
	}
	if len(r.early) != earlyExitMax {
		t.Fatalf("early buffer holds %d, want %d", len(r.early), earlyExitMax)
	}
	if _, ok := r.early[1]; ok {
		t.Error("oldest entry not evicted")
	}
	dispatchForTest(r, exitEvent{pid: 1 << 20, at: now.Add(earlyExitTTL + time.Second)})
	if len(r.early) != 1 || !slices.Equal(r.earlyOrder, []int{1 << 20}) {
		t.Errorf("expired entries kept: %d", len(r.early))
	}
}

// dispatchForTest dispatches ev as the reap loop does, under r.mu.
func dispatchForTest(r *reaper, ev exitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dispatchLocked(ev)
}

// An exit file written from its reservation has the code and leaves no
// temporary file; an unused reservation is removed by release; a path
// whose directory is missing gets no reservation and fails at write.
func TestExitFileReservation(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "missing", "c")}
	files := reserveExitFiles(paths, slog.New(slog.DiscardHandler))
	if files[0].tmp == "" || files[1].tmp == "" || files[2].tmp != "" {
		t.Fatalf("reservations %+v: want the first two only", files)
	}
	var st unix.Stat_t
	if err := unix.Stat(files[0].tmp, &st); err != nil || st.Blocks == 0 {
		t.Fatalf("reserved file: %+v, %v; want allocated blocks", st, err)
	}
	if err := files[0].write(-2147483648); err != nil {
		t.Fatal(err)
	}
	if got := readExit(t, paths[0]); got != "-2147483648" {
		t.Errorf("exit file %q", got)
	}
	files[1].release()
	if err := files[2].write(1); err == nil {
		t.Error("write into a missing dir succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "a" {
		t.Errorf("directory holds %v, want only the exit file", entries)
	}
}
