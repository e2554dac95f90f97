package reliability

// A client (a second process playing CRI-O) SIGKILLed in the middle of
// CreateContainer, ExecSync and an attach.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// waitMonitored polls ReopenLog (which answers only for a container gomon
// monitors) until it succeeds or d passes.
func waitMonitored(s *gomonServer, id string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: id})
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClientKilledDuringCreate: CRI-O dies while the runtime's create
// runs. The create must finish anyway: the container the runtime created
// is monitored and gets its exit file (conmon-rs loses it: its create
// future is dropped with the connection).
func TestClientKilledDuringCreate(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"hang", "hang-after"} {
		t.Run(mode, func(t *testing.T) {
			checkNoLeftovers(t)
			fr := newFaultRuntime(t)
			cfg := serverConfig(t, fr.path)
			s := startGomon(t, cfg)
			fr.set(t, "create", mode)
			c := newCtr(t, nil, "sh", "-c", "echo created-by-dead-client")
			t.Cleanup(func() { _ = exec.Command(runcPath(t), "--root", s.runtimeRoot, "delete", "--force", c.id).Run() })
			h := startHelper(t, helperCfg{Mode: "create", RunDir: s.runDir, Create: []*client.CreateContainerConfig{c.request()}})
			fr.waitHanging(t, "create")
			killHelper(t, h)
			time.Sleep(300 * time.Millisecond) // let gomon see the hang-up
			fr.release(t)
			if err := waitMonitored(s, c.id, 10*time.Second); err != nil {
				t.Fatalf("container %s of the killed client's create is not monitored: %v", c.id, err)
			}
			c.runc(t, s, "start", c.id)
			if code := c.exitCode(t); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if lines := logLines(t, c.logPath); len(lines) != 1 || lines[0] != "created-by-dead-client" {
				t.Errorf("log lines %q", lines)
			}
		})
	}
}

// TestClientKilledDuringExecSync: the exec'd command of a dead client is
// killed (nobody can read its result) and the daemon keeps serving.
func TestClientKilledDuringExecSync(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := running(t, s, nil, "sleep", "1000")
	h := startHelper(t, helperCfg{Mode: "exec", RunDir: s.runDir,
		Exec: &client.ExecSyncConfig{ID: c.id, Command: []string{"sleep", "777"}}})
	deadline := time.Now().Add(hangGuard)
	for len(nsProcesses(t, c.pid, "sleep", "777")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the helper's exec never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	killHelper(t, h)
	deadline = time.Now().Add(15 * time.Second)
	for len(nsProcesses(t, c.pid, "sleep", "777")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the exec of the killed client still runs in the container")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.alive(t)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", "ok"}})
	if err != nil || string(res.Stdout) != "ok\n" {
		t.Fatalf("exec after the kill: %+v %v", res, err)
	}
	if z := zombiesOf(t, s.pid); len(z) != 0 {
		t.Errorf("gomon has zombie children: %+v", z)
	}
	if left, _ := filepath.Glob(filepath.Join(s.runDir, "exec_sync*")); len(left) != 0 {
		t.Errorf("exec pidfiles left: %v", left)
	}
	c.runc(t, s, "kill", c.id, "KILL")
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
}

// TestClientKilledDuringAttach: the container of a dead attach client
// keeps running and logging; a new attach works; the exit file comes.
func TestClientKilledDuringAttach(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := running(t, s, nil, "sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); usleep 20000; done")
	sock := filepath.Join(c.dir, "attach")
	out := filepath.Join(t.TempDir(), "attach.out")
	h := startHelper(t, helperCfg{Mode: "attach", RunDir: s.runDir, AttachID: c.id, AttachSock: sock, Out: out})
	if _, err := waitForFile(out, hangGuard); err != nil {
		t.Fatalf("the helper's attach got no output: %v", err)
	}
	killHelper(t, h)
	before := len(logLines(t, c.logPath))
	time.Sleep(500 * time.Millisecond)
	if after := len(logLines(t, c.logPath)); after <= before {
		t.Errorf("log stopped growing after the attach client died: %d then %d lines", before, after)
	}
	// A new attach client gets live output.
	got := make(chan string, 1)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pr.Close() }()
	go func() {
		buf := make([]byte, 256)
		n, _ := pr.Read(buf)
		got <- string(buf[:n])
	}()
	attachDone := make(chan error, 1)
	go func() {
		attachDone <- s.client.AttachContainer(context.Background(), &client.AttachConfig{
			ID: c.id, SocketPath: sock, Streams: client.AttachStreams{Stdout: &client.Out{WriteCloser: pw}},
		})
	}()
	select {
	case g := <-got:
		if !strings.Contains(g, "tick-") {
			t.Errorf("second attach got %q", g)
		}
	case <-time.After(hangGuard):
		t.Fatal("second attach got no output")
	}
	c.runc(t, s, "kill", c.id, "KILL")
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
	select {
	case err := <-attachDone:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("second attach ended with %v", err)
		}
	case <-time.After(hangGuard):
		t.Error("second attach did not end when the container exited")
	}
	_ = pw.Close()
}

// nsProcesses lists the processes in the PID namespace of pid whose argv
// is exactly argv.
func nsProcesses(t *testing.T, pid uint32, argv ...string) []int {
	t.Helper()
	ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(int(pid)), "ns", "pid"))
	if err != nil {
		t.Fatalf("pid namespace of container init %d: %v", pid, err)
	}
	want := strings.Join(argv, "\x00") + "\x00"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || got != ns {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && string(cmd) == want {
			out = append(out, p)
		}
	}
	return out
}

// TestClientKilledBeforeExecPidfile: the client dies after the runtime
// started the exec'd process but before it wrote the pidfile (found by
// make soak). The exec'd process must not be left running.
func TestClientKilledBeforeExecPidfile(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	c := running(t, s, nil, "sleep", "1000")
	fr.set(t, "exec", "slowpid")
	h := startHelper(t, helperCfg{Mode: "exec", RunDir: s.runDir,
		Exec: &client.ExecSyncConfig{ID: c.id, Command: []string{"sleep", "778"}}})
	deadline := time.Now().Add(hangGuard)
	for len(nsProcesses(t, c.pid, "sleep", "778")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the helper's exec never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	killHelper(t, h)
	time.Sleep(8 * time.Second)
	if p := nsProcesses(t, c.pid, "sleep", "778"); len(p) != 0 {
		t.Errorf("the exec of the killed client still runs in the container 8 s later: pids %v", p)
	}
	c.runc(t, s, "kill", c.id, "KILL")
	c.exitCode(t)
}
