package reliability

// Security: socket modes, fds leaking into the runtime and the container,
// argument injection through IDs, cleanup commands and env vars.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// checkOwnerOnly fails unless path is a socket owned by root with mode 0600.
func checkOwnerOnly(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("stat %s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Errorf("%s: mode %v owner %d, want a socket, 0600, root", path, fi.Mode(), st.Uid)
	}
}

func TestSocketsAreOwnerOnly(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	checkOwnerOnly(t, filepath.Join(s.runDir, "conmon.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	fds, err := s.client.RemoteFDs(ctx)
	if err != nil {
		t.Fatalf("StartFdSocket: %v", err)
	}
	defer func() { _ = fds.Close() }()
	checkOwnerOnly(t, filepath.Join(s.runDir, "conmon-fd.sock"))
	c := running(t, s, nil, "sleep", "1000")
	sock := filepath.Join(c.dir, "newdir", "attach")
	attachInBackground(t, s, c.id, sock)
	checkOwnerOnly(t, sock)
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("attach socket dir created by gomon: %v %v, want owner-only", fi.Mode(), err)
	}
}

var (
	baselineOnce sync.Once
	baselineFDs  []int
	baselineErr  error
)

// ownFDs returns the fds a wrapper process opens itself: those of the
// test binary started with nothing but stdio (the Go runtime and package
// initialisation open a few).
func ownFDs(t *testing.T) []int {
	t.Helper()
	baselineOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			baselineErr = err
			return
		}
		dir, err := os.MkdirTemp("", "gomon-reliability-fds-")
		if err != nil {
			baselineErr = err
			return
		}
		defer func() { _ = os.RemoveAll(dir) }()
		cmd := exec.Command(self)
		cmd.Env = []string{roleEnv + "=" + roleRecorder, dirEnv + "=" + dir}
		if baselineErr = cmd.Run(); baselineErr != nil {
			return
		}
		raw, err := os.ReadFile(filepath.Join(dir, "recorded.jsonl"))
		if err != nil {
			baselineErr = err
			return
		}
		var inv invocation
		baselineErr = json.Unmarshal(raw, &inv)
		baselineFDs = inv.FDs
	})
	if baselineErr != nil {
		t.Fatalf("fd baseline: %v", baselineErr)
	}
	return baselineFDs
}

// stdioOnly reports whether fds holds nothing beyond 0, 1, 2 and the
// wrapper's own fds.
func stdioOnly(t *testing.T, fds []int) bool {
	t.Helper()
	own := ownFDs(t)
	for _, fd := range fds {
		if fd > 2 && !slices.Contains(own, fd) {
			return false
		}
	}
	return slices.Contains(fds, 0) && slices.Contains(fds, 1) && slices.Contains(fds, 2)
}

// TestNoFDLeaks: the runtime gomon runs (create, start-free exec) and the
// processes in the container see only their stdio.
func TestNoFDLeaks(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	// Open the fd socket and an attach socket so gomon holds more fds.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	fds, err := s.client.RemoteFDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fds.Close() }()
	c := newCtr(t, nil, "sh", "-c", "ls /proc/$$/fd; true")
	if err := createCtr(t, s, c, nil); err != nil {
		t.Fatal(err)
	}
	attachInBackground(t, s, c.id, filepath.Join(c.dir, "attach"))
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if lines := logLines(t, c.logPath); !slices.Equal(lines, []string{"0", "1", "2"}) {
		t.Errorf("fds open in the container's init: %q, want 0 1 2", lines)
	}
	e := running(t, s, nil, "sleep", "1000")
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: e.id, Command: []string{"sh", "-c", "ls /proc/$$/fd; true"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(res.Stdout)); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("fds open in an exec'd process: %q (stderr %q), want 0 1 2", got, res.Stderr)
	}
	for _, inv := range fr.calls(t) {
		if !stdioOnly(t, inv.FDs) {
			t.Errorf("runtime %v started with fds %v, want only 0 1 2 (the wrapper itself opens %v)", inv.Argv, inv.FDs, ownFDs(t))
		}
	}
}

// TestNoArgumentInjection: IDs, cleanup commands and env vars reach the
// runtime and the cleanup command as single argv elements; nothing is
// interpreted by a shell.
func TestNoArgumentInjection(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	marker := filepath.Join(t.TempDir(), "pwned")
	recorder := filepath.Join(fr.dir, "record")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	writeScript(t, recorder, roleRecorder, fr.dir, self)
	evil := []string{"a; touch " + marker, "$(touch " + marker + ")", "`touch " + marker + "`", "--root=/tmp", "x y"}

	for _, id := range []string{"x --root=/tmp", "--help", "x;touch " + marker} {
		c := newCtr(t, nil, "true")
		r := c.request()
		r.ID = id
		err := createCtr(t, s, c, func(req *client.CreateContainerConfig) { *req = *r }) // refused by gomon or runc
		if err != nil && strings.Contains(err.Error(), "invalid container id") {
			continue // refused before the runtime ran: nothing could be injected
		}
		calls := fr.calls(t)
		last := calls[len(calls)-1].Argv
		if last[len(last)-1] != id || slices.Contains(last[:len(last)-1], id) || slices.Contains(last, "--root=/tmp") && !strings.HasPrefix(s.runtimeRoot, "/tmp") {
			t.Errorf("id %q: runtime argv %q, want it once, as the last element", id, last)
		}
	}

	c := newCtr(t, nil, "true")
	if err := createCtr(t, s, c, func(r *client.CreateContainerConfig) {
		r.CleanupCmd = append([]string{recorder}, evil...)
		r.EnvVars = map[string]string{"EVIL": evil[0], "X": "$(touch " + marker + ")"}
	}); err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if _, err := waitForFile(filepath.Join(fr.dir, "recorded.jsonl"), hangGuard); err != nil {
		t.Fatalf("cleanup command never ran: %v", err)
	}
	rec := readInvocations(t, filepath.Join(fr.dir, "recorded.jsonl"))
	if len(rec) != 1 || !slices.Equal(rec[0].Argv, evil) {
		t.Errorf("cleanup command runs %+v, want one with argv %q", rec, evil)
	}
	if len(rec) == 1 && !stdioOnly(t, rec[0].FDs) {
		t.Errorf("cleanup command started with fds %v, want only 0 1 2 (the wrapper itself opens %v)", rec[0].FDs, ownFDs(t))
	}
	var createEnv []string
	for _, inv := range fr.calls(t) {
		if slices.Contains(inv.Argv, c.id) && slices.Contains(inv.Argv, "create") {
			createEnv = inv.Env
		}
	}
	if !slices.Contains(createEnv, "EVIL="+evil[0]) {
		t.Errorf("runtime env lacks EVIL=%q as one entry", evil[0])
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a shell interpreted an argument: %s exists", marker)
	}
}

// attachInBackground attaches to id (AttachContainer blocks until the
// container exits) and waits until the socket exists.
func attachInBackground(t *testing.T, s *gomonServer, id, sock string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		errc <- s.client.AttachContainer(context.Background(), &client.AttachConfig{
			ID: id, SocketPath: sock, Streams: client.AttachStreams{Stdout: &client.Out{WriteCloser: discard{}}},
		})
	}()
	deadline := time.Now().Add(hangGuard)
	for {
		if _, err := os.Lstat(sock); err == nil {
			return
		}
		select {
		case err := <-errc:
			t.Fatalf("attach to %s: %v", id, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("attach socket %s never appeared", sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// discard is an attach output that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Close() error                { return nil }
