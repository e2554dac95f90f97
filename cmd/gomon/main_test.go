package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/gomon-dev/gomon/monitor/monitortest"
	"github.com/gomon-dev/gomon/rpc/proto"
)

// These tests run the real binary, built once per test run.

var gomonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gomon-bin-")
	if err != nil {
		panic(err)
	}
	gomonBin = filepath.Join(dir, "gomon")
	out, err := exec.Command("go", "build", "-o", gomonBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build gomon: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func gomon(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(gomonBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run gomon: %v", err)
	}
	return o.String(), e.String(), code
}

func TestVersionJSONShape(t *testing.T) {
	for _, args := range [][]string{{"--version-json"}, {"-j"}, {"--vj"}, {"--version-json", "full"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := gomon(t, nil, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if strings.Count(out, "\n") != 1 {
				t.Errorf("want one line, got %q", out)
			}
			var keys []string
			dec := json.NewDecoder(strings.NewReader(out))
			tok, _ := dec.Token() // {
			if tok != json.Delim('{') {
				t.Fatalf("not an object: %q", out)
			}
			v := map[string]any{}
			for dec.More() {
				k, _ := dec.Token()
				var val any
				if err := dec.Decode(&val); err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k.(string))
				v[k.(string)] = val
			}
			want := "verbose version tag commit build_date target rust_version cargo_version cargo_tree"
			if got := strings.Join(keys, " "); got != want {
				t.Errorf("keys %q, want %q", got, want)
			}
			for _, k := range keys[1:8] {
				if s, _ := v[k].(string); s == "" {
					t.Errorf("%s is empty", k)
				}
			}
			full := len(args) == 2
			if v["verbose"] != full || (v["cargo_tree"] != "") != full {
				t.Errorf("verbose %v cargo_tree %q for %v", v["verbose"], v["cargo_tree"], args)
			}
		})
	}
}

func TestVersionText(t *testing.T) {
	out, _, code := gomon(t, nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "version: 0.") || !strings.Contains(out, "\ncommit: ") {
		t.Errorf("exit %d, output %q", code, out)
	}
	// clap reads CONMON_* from the environment: a stray CONMON_VERSION
	// makes the server print its version (conmon-rs behaviour).
	out, _, code = gomon(t, []string{"CONMON_VERSION=default"})
	if code != 0 || !strings.HasPrefix(out, "version: ") {
		t.Errorf("CONMON_VERSION: exit %d, output %q", code, out)
	}
}

func TestValidationErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no runtime", []string{"--runtime-dir", dir}, 1, "--runtime flag not set"},
		{"no run dir", []string{"--runtime", "/bin/true"}, 1, "--runtime-dir flag not set"},
		{"missing runtime", []string{"--runtime", "/nonexistent/runc", "--runtime-dir", dir}, 1, "--runtime '/nonexistent/runc' does not exist"},
		{"runtime root not a dir", []string{"--runtime", "/bin/true", "--runtime-dir", dir, "--runtime-root", notDir}, 1, notDir},
		{"unknown flag", []string{"--bogus"}, 2, "error: unexpected argument '--bogus'"},
		{"bad log level", []string{"--log-level", "loud"}, 2, "loud"},
		{"run: missing bundle", []string{"run", "--runtime", "/bin/true", "--bundle", "/nonexistent/bundle", "c1"}, 1, "--bundle '/nonexistent/bundle' does not exist"},
		{"run: bundle not a dir", []string{"run", "--runtime", "/bin/true", "--bundle", notDir, "c1"}, 1, "is not a directory"},
		{"run: missing runtime", []string{"run", "--runtime", "/nonexistent/runc", "--bundle", dir, "c1"}, 1, "--runtime '/nonexistent/runc' not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := gomon(t, nil, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d stderr %q; want exit %d containing %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}

// longRunDir returns a run dir whose conmon.sock path exceeds sun_path.
func longRunDir(t *testing.T) string {
	dir := t.TempDir()
	for len(dir) < 120 {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dialLong connects through /proc/self/fd like the conmon-rs client.
func dialLong(t testing.TB, path string) net.Conn {
	t.Helper()
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	c, err := net.Dial("unix", fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(path)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func versionPID(t testing.TB, sock string) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(dialLong(t, sock)), nil)
	defer func() { _ = conn.Close() }()
	f, rel := proto.Conmon(conn.Bootstrap(ctx)).Version(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	resp, err := res.Response()
	if err != nil {
		t.Fatal(err)
	}
	return resp.ProcessId()
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 100 {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		// The daemon is re-parented to init or a subreaper: a zombie
		// still answers kill(0); its state tells.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && strings.Contains(string(st), ") Z ") {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("gomon %d still running 10 s after the signal", pid)
}

// TestDaemonStartup checks what the conmon-rs client relies on: the
// launcher exits 0 with a pidfile holding the daemon's PID (no newline),
// conmon.sock already answers, even past the sun_path limit, no inherited
// fd reaches the daemon, and SIGTERM removes the socket and ends it.
func TestDaemonStartup(t *testing.T) {
	dir := longRunDir(t)
	sock := filepath.Join(dir, "conmon.sock")
	if len(sock) <= 108 {
		t.Fatalf("socket path only %d bytes", len(sock))
	}
	// A stale socket file from an earlier daemon must not stop us.
	if err := os.WriteFile(sock, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Leak a pipe into the launcher, as a careless parent would.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	defer func() { _ = w.Close() }()

	cmd := exec.Command(gomonBin, "--runtime", "/bin/true", "--runtime-dir", dir,
		"--runtime-root", filepath.Join(dir, "root"), "--log-level", "debug", "--log-driver", "none",
		"--cgroup-manager", "cgroupfs")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("launcher: %v: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "pidfile"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.ParseUint(string(raw), 10, 32) // strict, like the client
	if err != nil {
		t.Fatalf("pidfile %q: %v", raw, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(int(pid), syscall.SIGKILL) })

	if got := versionPID(t, sock); got != uint32(pid) {
		t.Errorf("Version processId %d, pidfile %d", got, pid)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("conmon.sock: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "root")); err != nil || !fi.IsDir() {
		t.Errorf("runtime root not created: %v", err)
	}

	// No fd of the launcher's parent survives in the daemon.
	var pipeIno syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &pipeIno); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if link == fmt.Sprintf("pipe:[%d]", pipeIno.Ino) {
			t.Errorf("daemon holds the launcher's inherited pipe as fd %s", fd.Name())
		}
	}

	if err := syscall.Kill(int(pid), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, int(pid))
	if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("conmon.sock left behind: %v", err)
	}
}

func TestSkipForkServesInForeground(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(gomonBin, "--runtime", "/bin/true", "--runtime-dir", dir, "--skip-fork", "--log-driver", "stdout")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "conmon.sock")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no socket: %s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := versionPID(t, sock); got != uint32(cmd.Process.Pid) {
		t.Errorf("processId %d, want %d", got, cmd.Process.Pid)
	}
	if _, err := os.Stat(filepath.Join(dir, "pidfile")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--skip-fork wrote a pidfile: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGINT: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "shutdown complete") {
		t.Errorf("stdout log driver wrote %q", out.String())
	}
}

// BenchmarkStartup measures what CRI-O waits for: launcher start to the
// first answered Version call.
func BenchmarkStartup(b *testing.B) {
	for b.Loop() {
		dir := b.TempDir()
		cmd := exec.Command(gomonBin, "--runtime", "/bin/true", "--runtime-dir", dir, "--log-driver", "none")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		pid := versionPID(b, filepath.Join(dir, "conmon.sock"))
		_ = syscall.Kill(int(pid), syscall.SIGKILL)
	}
}

// launch runs the launcher with args and the given stdout and stderr (nil
// means /dev/null, as the conmon-rs client leaves them for the systemd log
// driver) and returns the daemon's PID, killed at the end of the test.
func launch(t *testing.T, argv0 string, env []string, stdout, stderr *os.File, args ...string) int {
	t.Helper()
	cmd := exec.Command(argv0, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("launcher: %v", err)
	}
	dir := ""
	for i, a := range args {
		if a == "--runtime-dir" {
			dir = args[i+1]
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "pidfile"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// waitForContent waits until the file at path contains all of want.
func waitForContent(t *testing.T, path string, want ...string) string {
	t.Helper()
	var got []byte
	for range 200 {
		got, _ = os.ReadFile(path)
		ok := true
		for _, w := range want {
			ok = ok && bytes.Contains(got, []byte(w))
		}
		if ok {
			return string(got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never held %q; it has %q", path, want, got)
	return ""
}

// TestDaemonSurvivesClosedStdout: with --log-driver stdout, the reader of
// the daemon's stdout and stderr going away must not kill it (SIGPIPE);
// its log continues in <run-dir>/gomon.log.
func TestDaemonSurvivesClosedStdout(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pid := launch(t, gomonBin, nil, w, w, "--runtime", "/bin/true", "--runtime-dir", dir,
		"--log-level", "debug", "--log-driver", "stdout")
	_ = w.Close()
	// Wait for the start-up record, then make the pipe's reader go away.
	buf := make([]byte, 64<<10)
	var seen []byte
	for !bytes.Contains(seen, []byte("gomon starting")) {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read daemon stdout: %v (got %q)", err, seen)
		}
		seen = append(seen, buf[:n]...)
	}
	_ = r.Close()

	// SIGUSR1 makes the daemon log a goroutine dump: a write to the
	// broken pipe. Twice, so a second write follows the first failure.
	for range 2 {
		if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := versionPID(t, filepath.Join(dir, "conmon.sock")); got != uint32(pid) {
		t.Fatalf("Version answered by %d, want %d", got, pid)
	}
	log := waitForContent(t, filepath.Join(dir, "gomon.log"), "log output closed (broken pipe)", "goroutine dump")
	if strings.Count(log, "log output closed") != 1 {
		t.Errorf("the switch to gomon.log is noted %d times", strings.Count(log, "log output closed"))
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	waitForContent(t, filepath.Join(dir, "gomon.log"), "shutdown complete")
}

// staleJournalSocket leaves a datagram socket file with nobody listening,
// as a dead journald leaves /run/systemd/journal/socket.
func staleJournalSocket(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "journal.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // a datagram socket's file stays behind
	return sock
}

// TestDaemonLogWithStaleJournalSocket: --log-driver systemd with a journal
// socket file that nobody listens on, and the launcher's stdio on
// /dev/null (what the conmon-rs client does): the daemon's log goes to
// <run-dir>/gomon.log, which says why once.
func TestDaemonLogWithStaleJournalSocket(t *testing.T) {
	dir := t.TempDir()
	env := []string{"_GOMON_TEST_JOURNAL_SOCKET=" + staleJournalSocket(t)}
	pid := launch(t, gomonBin, env, nil, nil, "--runtime", "/bin/true", "--runtime-dir", dir,
		"--log-level", "debug", "--log-driver", "systemd")
	versionPID(t, filepath.Join(dir, "conmon.sock"))
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	log := waitForContent(t, filepath.Join(dir, "gomon.log"), "gomon starting", "shutdown complete")
	if n := strings.Count(log, "no systemd journal reachable"); n != 1 || !strings.Contains(log, "connection refused") {
		t.Errorf("gomon.log notes the fallback %d times (want once, with the reason):\n%s", n, log)
	}
}

// TestDaemonKeepsInvokedName: started through a symlink named conmonrs
// (as distributions install it), the daemon's comm (ps, journald's _COMM)
// is conmonrs and its argv[0] the path it was invoked as, and both stay so
// after an upgrade in place (which re-executes the daemon: by default the
// path it was started through, not the file that path resolves to).
func TestDaemonKeepsInvokedName(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "conmonrs")
	if err := os.Symlink(gomonBin, link); err != nil {
		t.Fatal(err)
	}
	pid := launch(t, link, nil, nil, nil, "--runtime", "/bin/true", "--runtime-dir", dir, "--log-driver", "none")
	checkName := func(when string) {
		t.Helper()
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			t.Fatal(err)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if string(comm) != "conmonrs\n" || argv0 != link {
			t.Errorf("%s: comm %q argv[0] %q; want conmonrs and %s", when, comm, argv0, link)
		}
		// Still the same process, serving.
		if got := versionPID(t, filepath.Join(dir, "conmon.sock")); got != uint32(pid) {
			t.Errorf("%s: Version answered by %d, want %d", when, got, pid)
		}
	}
	checkName("at start")

	out, err := exec.Command(gomonBin, "upgrade", "--runtime-dir", dir).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("upgraded")) {
		t.Fatalf("gomon upgrade: %v: %s", err, out)
	}
	checkName("after gomon upgrade")
}

// processesWith returns the PIDs whose command line contains token.
func processesWith(token string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte(token)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestRunClosedStdout: `gomon run … | head`: once the reader of its output
// is gone, gomon run kills and deletes the container, instead of dying of
// SIGPIPE and leaving it running unmonitored, and exits 141 (128+SIGPIPE)
// like the writer of a pipeline.
func TestRunClosedStdout(t *testing.T) {
	runc := monitortest.Runc(t)
	token := fmt.Sprintf("gomon-run-epipe-%d", os.Getpid())
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "while :; do echo line; done # " + token},
	})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gomonBin, "run", "--runtime", runc, "--bundle", bundle, token)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	t.Cleanup(func() {
		for _, pid := range processesWith(token) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Read like `head -n 3`, then go away.
	buf := make([]byte, 64)
	var got []byte
	for bytes.Count(got, []byte("\n")) < 3 {
		n, err := r.Read(buf)
		if err != nil {
			// <-done is received before stderr is read (left to right).
			t.Fatalf("read: %v (gomon run: %v, stderr %s)", err, <-done, stderr.String())
		}
		got = append(got, buf[:n]...)
	}
	_ = r.Close()

	select {
	case err := <-done:
		t.Logf("gomon run: %v", err)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("gomon run still running 30 s after its output closed (%v): %s", <-done, stderr.String())
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() || ws.ExitStatus() != 128+int(syscall.SIGPIPE) {
		t.Errorf("gomon run ended with %v, want exit 141; stderr %s", cmd.ProcessState, stderr.String())
	}
	if left := processesWith(token); len(left) > 0 {
		t.Errorf("container processes %v left running after gomon run ended", left)
	}
}
