package pause

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsGetUserNS is NS_GET_USERNS (_IO(0xb7, 0x1)): it opens the user
// namespace owning a namespace.
const nsGetUserNS = 0xb701

// create starts a pause instance with the test binary as gomon and stops
// it at cleanup.
func create(t *testing.T, opts Options) (*Instance, *testReaper) {
	t.Helper()
	r := &testReaper{}
	opts.Reaper = r
	if opts.BasePath == "" {
		opts.BasePath = t.TempDir()
	}
	inst, err := Create(context.Background(), opts)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(context.Background()); err != nil {
			t.Errorf("Stop at cleanup: %v", err)
		}
		r.wg.Wait()
	})
	return inst, r
}

func ident(t *testing.T, path string) [2]uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return [2]uint64{st.Dev, st.Ino}
}

// assertGone checks that Stop left nothing: no mount under base, no
// namespace or PID file, no process.
func assertGone(t *testing.T, inst *Instance, base, podID string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mi, []byte(base)) {
		t.Errorf("mount under %s left in mountinfo", base)
	}
	for _, p := range inst.Namespaces() {
		if _, err := os.Lstat(p.Path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind: %v", p.Path, err)
		}
	}
	pidFile := filepath.Join(base, "conmonrs", podID+".pid")
	if _, err := os.Lstat(pidFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("PID file left behind: %v", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(inst.PID())); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pause process %d still exists: %v", inst.PID(), err)
	}
}

func TestCreateAllNamespaces(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	inst, reaper := create(t, Options{
		BasePath: base, PodID: "pod1",
		IPC: true, PID: true, Net: true, User: true, UTS: true,
		UIDMappings: []string{fmt.Sprintf("0 %d 1", uid)},
		GIDMappings: []string{fmt.Sprintf("0 %d 1", gid)},
	})
	pid := strconv.Itoa(inst.PID())

	paths := inst.Namespaces()
	wantOrder := []Namespace{IPC, PID, Net, User, UTS}
	if len(paths) != len(wantOrder) {
		t.Fatalf("Namespaces() = %v, want 5 entries", paths)
	}
	for i, p := range paths {
		t.Run(p.Type.String(), func(t *testing.T) {
			if p.Type != wantOrder[i] {
				t.Errorf("entry %d is %v, want %v", i, p.Type, wantOrder[i])
			}
			if want := filepath.Join(base, p.Type.String()+"ns", "pod1"); p.Path != want {
				t.Errorf("path = %s, want %s", p.Path, want)
			}
			// What clients see of the files CreateNamespaces answers with
			// (docs/contract.md, "CreateNamespaces"): stat of the bind mount
			// shows the nsfs inode, which the kernel makes a regular file,
			// size 0, mode 0444, whatever the file underneath.
			st, err := os.Stat(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Mode().IsRegular() || st.Size() != 0 || st.Mode().Perm() != 0o444 {
				t.Errorf("stat = mode %v size %d, want regular 0444 size 0", st.Mode(), st.Size())
			}
			var sfs unix.Statfs_t
			if err := unix.Statfs(p.Path, &sfs); err != nil || sfs.Type != unix.NSFS_MAGIC {
				t.Errorf("statfs type = %#x, %v; want nsfs (a namespace is mounted)", sfs.Type, err)
			}
			if got, want := ident(t, p.Path), ident(t, "/proc/"+pid+"/ns/"+p.Type.String()); got != want {
				t.Errorf("file is namespace %v, pause process has %v", got, want)
			}
			if ident(t, p.Path) == ident(t, "/proc/self/ns/"+p.Type.String()) {
				t.Error("file is the host's namespace, want a new one")
			}
		})
	}

	b, err := os.ReadFile(filepath.Join(base, "conmonrs", "pod1.pid"))
	if err != nil || string(b) != pid {
		t.Errorf("PID file = %q, %v; want %q without newline", b, err, pid)
	}
	if got := statusField(t, pid, "NSpid"); got != pid+"\t1" {
		t.Errorf("NSpid = %q, want the pause process as PID 1 of its namespace", got)
	}
	uidMap, err := os.ReadFile("/proc/" + pid + "/uid_map")
	if err != nil || strings.Join(strings.Fields(string(uidMap)), " ") != fmt.Sprintf("0 %d 1", uid) {
		t.Errorf("uid_map = %q, %v", uidMap, err)
	}
	if got := strings.Fields(statusField(t, pid, "Uid")); len(got) == 0 || got[0] != strconv.Itoa(uid) {
		t.Errorf("pause runs as host uid %v, want %d (container uid 0)", got, uid)
	}
	// The other namespaces belong to the new user namespace.
	nsFile, err := os.Open(paths[Net].Path)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := unix.IoctlRetInt(int(nsFile.Fd()), nsGetUserNS)
	_ = nsFile.Close()
	if err != nil {
		t.Fatalf("NS_GET_USERNS: %v", err)
	}
	var ost unix.Stat_t
	err = unix.Fstat(owner, &ost)
	_ = unix.Close(owner)
	if err != nil || [2]uint64{ost.Dev, ost.Ino} != ident(t, paths[User].Path) {
		t.Errorf("network namespace is owned by %v, want the new user namespace", [2]uint64{ost.Dev, ost.Ino})
	}

	// Entering the network namespace file shows only loopback.
	links := helperLinks(t, paths[Net].Path)
	if links != "lo" {
		t.Errorf("interfaces in the pod's network namespace = %q, want lo", links)
	}
	if rollup, err := os.ReadFile("/proc/" + pid + "/smaps_rollup"); err == nil {
		t.Logf("pause process VmRSS %s; smaps_rollup:\n%s", statusField(t, pid, "VmRSS"), rollup)
	}

	if err := inst.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	assertGone(t, inst, base, "pod1")
	if code, ok := reaper.code(inst.PID()); !ok || code != 0 {
		t.Errorf("pause exit status = %d (reported %v), want 0 after SIGTERM", code, ok)
	}
	if err := inst.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// helperLinks lists the interfaces seen from inside the network namespace
// file path, via the test binary in links mode.
func helperLinks(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], path)
	cmd.Env = append(os.Environ(), helperEnv+"="+modeLinks)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("links helper: %v: %s", err, stderr.Bytes())
	}
	return string(out)
}

func statusField(t *testing.T, pid, field string) string {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestCreateSelection(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name string
		opts Options
		new  []Namespace
	}{
		{"none: all five are the host's", Options{}, nil},
		{"net only", Options{Net: true}, []Namespace{Net}},
		{"ipc pid uts", Options{IPC: true, PID: true, UTS: true}, []Namespace{IPC, PID, UTS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.PodID = "sel"
			inst, _ := create(t, tt.opts)
			isNew := map[Namespace]bool{}
			for _, n := range tt.new {
				isNew[n] = true
			}
			for _, p := range inst.Namespaces() {
				host := ident(t, "/proc/self/ns/"+p.Type.String())
				if got := ident(t, p.Path); (got != host) != isNew[p.Type] {
					t.Errorf("%v: new = %v, want %v", p.Type, got != host, isNew[p.Type])
				}
			}
		})
	}
}

func TestCreateErrors(t *testing.T) {
	failing := writeScript(t, "exit 3")
	silent := writeScript(t, "exec /bin/busybox sleep 1000")
	tests := []struct {
		name    string
		opts    Options
		timeout time.Duration
		wantIs  error
		wantMsg string
	}{
		{"missing pod ID", Options{}, 0, ErrNoPodID, "no pod ID provided"},
		{"pod ID with a slash", Options{PodID: "../x"}, 0, ErrInvalidArgument, ""},
		{"pod ID dot-dot", Options{PodID: ".."}, 0, ErrInvalidArgument, ""},
		{"user without uid mappings", Options{PodID: "p", User: true, GIDMappings: []string{"0 0 1"}},
			0, ErrInvalidArgument, "user ID mappings are empty: invalid argument"},
		{"user without gid mappings", Options{PodID: "p", User: true, UIDMappings: []string{"0 0 1"}},
			0, ErrInvalidArgument, "group ID mappings are empty: invalid argument"},
		{"mapping with two fields", Options{PodID: "p", User: true, UIDMappings: []string{"0 0"}, GIDMappings: []string{"0 0 1"}},
			0, ErrInvalidArgument, ""},
		{"mapping not a number", Options{PodID: "p", User: true, UIDMappings: []string{"0 0 1"}, GIDMappings: []string{"0 x 1"}},
			0, ErrInvalidArgument, ""},
		{"pause exits early", Options{PodID: "p", IPC: true, Binary: failing}, 0, ErrPauseExited,
			"start pause process: pause process exited early (exit status 3)"},
		{"pause never ready", Options{PodID: "p", PID: true, Binary: silent}, 200 * time.Millisecond,
			context.DeadlineExceeded, ""},
		{"binary missing", Options{PodID: "p", Binary: "/nonexistent/gomon"}, 0, fs.ErrNotExist, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.IPC || tt.opts.PID {
				requireRoot(t) // new namespaces
			}
			base := t.TempDir()
			r := &testReaper{}
			tt.opts.BasePath, tt.opts.Reaper = base, r
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			inst, err := Create(ctx, tt.opts)
			r.wg.Wait() // a failed Create must leave no process running
			if err == nil {
				_ = inst.Stop(context.Background())
				t.Fatal("Create succeeded")
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			if tt.wantMsg != "" && err.Error() != tt.wantMsg {
				t.Errorf("error = %q, want %q", err, tt.wantMsg)
			}
			assertEmptyBase(t, base)
		})
	}
	t.Run("no reaper", func(t *testing.T) {
		_, err := Create(context.Background(), Options{PodID: "p", BasePath: t.TempDir()})
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("error = %v, want ErrInvalidArgument", err)
		}
	})
}

// assertEmptyBase checks that no file, only directories, is left under
// base, and nothing is mounted there.
func assertEmptyBase(t *testing.T, base string) {
	t.Helper()
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			t.Errorf("left behind: %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mi, []byte(base)) {
		t.Errorf("mount under %s left behind", base)
	}
}

// writeScript writes an executable shell script standing in for gomon.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gomon")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCreateRefusesMountedFiles(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	first, _ := create(t, Options{BasePath: base, PodID: "dup", Net: true})
	r := &testReaper{}
	_, err := Create(context.Background(), Options{BasePath: base, PodID: "dup", Net: true, Reaper: r})
	r.wg.Wait()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Create with the same pod ID: %v, want ErrInUse", err)
	}
	for _, p := range first.Namespaces() {
		if got, want := ident(t, p.Path), ident(t, "/proc/"+strconv.Itoa(first.PID())+"/ns/"+p.Type.String()); got != want {
			t.Errorf("%v: the failed Create disturbed the first instance's file", p.Type)
		}
	}
}

func TestPrepareTarget(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, path string)
		wantErr bool
	}{
		{"new file", func(*testing.T, string) {}, false},
		{"leftover file reused", func(t *testing.T, path string) {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"directory refused", func(t *testing.T, path string) {
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "netns", "pod")
			tt.setup(t, path)
			err := prepareTarget(path)
			if tt.wantErr {
				if err == nil {
					t.Fatal("prepareTarget succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The file under the mount: empty, regular, 0444.
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Mode().IsRegular() || st.Size() != 0 || st.Mode().Perm() != 0o444 {
				t.Errorf("file = mode %v size %d, want regular 0444 size 0", st.Mode(), st.Size())
			}
		})
	}
}

func TestStopKillsAfterContext(t *testing.T) {
	requireRoot(t)
	// Ignores SIGTERM (ignored dispositions survive exec), reports ready.
	stubborn := writeScript(t, `trap "" TERM INT QUIT; printf x >&3; exec 3>&-; exec /bin/busybox sleep 1000`)
	base := t.TempDir()
	inst, r := create(t, Options{BasePath: base, PodID: "stubborn", Net: true, Binary: stubborn})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := inst.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if code, ok := r.code(inst.PID()); !ok || code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit status = %d (reported %v), want %d", code, ok, 128+int(syscall.SIGKILL))
	}
	assertGone(t, inst, base, "stubborn")
}

func TestPauseReapsOrphans(t *testing.T) {
	requireRoot(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("SKIPPED: nsenter not installed")
	}
	inst, _ := create(t, Options{PodID: "reap", PID: true})
	pidns := inst.Namespaces()[PID].Path
	// The shell puts a sleep in the background and exits: the sleep is
	// orphaned inside the pod's PID namespace and re-parented to pause.
	cmd := exec.Command(nsenter, "--pid="+pidns, "--", "/bin/busybox", "sh", "-c",
		"/bin/busybox sleep 1000 </dev/null >/dev/null 2>&1 & exit 0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	pause := strconv.Itoa(inst.PID())
	children := func() []string {
		b, err := os.ReadFile("/proc/" + pause + "/task/" + pause + "/children")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(b))
	}
	var orphan int
	waitFor(t, "the orphan is re-parented to pause", func() bool {
		if c := children(); len(c) == 1 {
			orphan, _ = strconv.Atoi(c[0])
			return true
		}
		return false
	})
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pause reaps the orphan", func() bool { return len(children()) == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMainStandalone(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"net namespace", []string{"--net"}, 0, ""},
		{"missing pod ID", nil, 1, "no pod ID provided"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			args := []string{"pause", "--base-path", base}
			if tt.wantCode == 0 {
				args = append(args, "--pod-id=solo")
			}
			// The stand-alone pause process outlives `gomon pause`; as a
			// subreaper the test inherits and can reap it.
			if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) }()
			cmd := exec.Command(os.Args[0], append(args, tt.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != tt.wantCode {
				t.Fatalf("exit code = %d (%v), want %d; stderr: %s", code, err, tt.wantCode, stderr.Bytes())
			}
			if tt.wantErr != "" {
				if !strings.Contains(stderr.String(), tt.wantErr) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantErr)
				}
				return
			}
			b, err := os.ReadFile(filepath.Join(base, "conmonrs", "solo.pid"))
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(string(b))
			if err != nil {
				t.Fatalf("PID file %q: %v", b, err)
			}
			netns := filepath.Join(base, "netns", "solo")
			if ident(t, netns) != ident(t, "/proc/"+string(b)+"/ns/net") {
				t.Error("netns file is not the pause process's namespace")
			}
			if helperLinks(t, netns) != "lo" {
				t.Error("pod network namespace has more than lo")
			}
			for _, ns := range all {
				if err := removeNamespaceFile(filepath.Join(base, ns.String()+"ns", "solo")); err != nil {
					t.Error(err)
				}
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			var ws unix.WaitStatus
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
				t.Fatalf("wait for the orphaned pause process: %v", err)
			}
			if !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("pause process ended with %v, want exit 0", ws)
			}
		})
	}
}
