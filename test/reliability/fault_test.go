package reliability

// Runtime faults (create and exec failing, hanging, lying about the PID)
// and a shutdown requested while a create hangs.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// faultBound is how long a call facing a hanging runtime waits before the
// client gives up; gomon must then end the call and kill the runtime.
const faultBound = 3 * time.Second

// createTimeout is the daemon's --create-timeout in TestCreateFaults. It
// bounds every create of the test, the working ones too, so it leaves room
// for a runc create on a loaded machine (a 1 s bound once failed those);
// createBound, the client's deadline there, is well above it.
const (
	createTimeout = 4 * time.Second
	createBound   = 30 * time.Second
)

// checkServing proves the daemon still works end to end: a container
// created through the (now pass-through) wrapper runs and exits 0.
func checkServing(t *testing.T, s *gomonServer) {
	t.Helper()
	s.alive(t)
	c := running(t, s, nil, "true")
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("container after the fault: exit code %d, want 0", code)
	}
}

// checkWrappersGone waits (bounded) until no wrapper process recorded in
// fr is alive, and that gomon has no zombie children.
func checkWrappersGone(t *testing.T, s *gomonServer, fr *faultRuntime) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, inv := range fr.calls(t) {
		for processExists(inv.PID) {
			st, err := readStat(inv.PID)
			if err == nil && st.state == 'Z' && st.ppid != s.pid {
				break // a zombie of someone else: reported by checkNoLeftovers
			}
			if time.Now().After(deadline) {
				t.Errorf("runtime wrapper pid %d (%v) still exists (state %c, parent %d)", inv.PID, inv.Argv, st.state, st.ppid)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if z := zombiesOf(t, s.pid); len(z) != 0 {
		t.Errorf("gomon has zombie children: %+v", z)
	}
}

func TestCreateFaults(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	fr := newFaultRuntime(t)
	// Inherited by the daemon the client starts.
	t.Setenv("GOMON_CREATE_TIMEOUT", strconv.Itoa(int(createTimeout/time.Second)))
	s := startGomon(t, serverConfig(t, fr.path))
	tests := []struct {
		mode    string
		wantErr string // substring of the RPC error
	}{
		{"fail", "runc-fault: injected create failure"},
		{"nopid", "pidfile"},
		{"garbagepid", "grandchild pid parse error"},
		// The client's deadline does not cancel a create (a container
		// the runtime made must be monitored); --create-timeout does,
		// well within the client's createBound.
		{"hang", "runtime create did not finish within " + createTimeout.String()},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			fr.set(t, "create", tt.mode)
			c := newCtr(t, nil, "true")
			ctx, cancel := context.WithTimeout(context.Background(), createBound)
			defer cancel()
			t.Cleanup(func() { _ = exec.Command(runcPath(t), "--root", s.runtimeRoot, "delete", "--force", c.id).Run() })
			start := time.Now()
			_, err := s.client.CreateContainer(ctx, c.request())
			t.Logf("CreateContainer with runtime create=%s: %v after %v", tt.mode, err, time.Since(start).Round(time.Millisecond))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CreateContainer error %v, want one containing %q", err, tt.wantErr)
			}
			fr.set(t, "create", "")
			checkWrappersGone(t, s, fr)
			checkServing(t, s)
			// The failed ID is free again.
			if err := createCtr(t, s, c, nil); err != nil {
				t.Errorf("re-create %s after the failure: %v", c.id, err)
			}
		})
	}
}

func TestExecFaults(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	c := running(t, s, nil, "sleep", "1000")
	tests := []struct {
		mode       string
		wantErr    string // substring of the RPC error; "" = none
		wantCode   int32
		wantStderr string
	}{
		{mode: "fail", wantCode: -2, wantStderr: "runc-fault: injected exec failure"},
		{mode: "nopid", wantCode: -2},
		{mode: "garbagepid", wantCode: -2},
		{mode: "hang", wantErr: "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			fr.set(t, "exec", tt.mode)
			ctx, cancel := context.WithTimeout(context.Background(), faultBound)
			defer cancel()
			res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", "hi"}, Timeout: 10})
			fr.set(t, "exec", "")
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ExecSync error %v (result %+v), want one containing %q", err, res, tt.wantErr)
				}
			case err != nil:
				t.Errorf("ExecSync: %v, want a result with exit code %d", err, tt.wantCode)
			default:
				t.Logf("result: exit %d stderr %q", res.ExitCode, res.Stderr)
				if res.ExitCode != tt.wantCode || !strings.Contains(string(res.Stderr), tt.wantStderr) {
					t.Errorf("exit code %d stderr %q, want %d and %q", res.ExitCode, res.Stderr, tt.wantCode, tt.wantStderr)
				}
			}
			checkWrappersGone(t, s, fr)
			s.alive(t)
			ctx2, cancel2 := context.WithTimeout(context.Background(), hangGuard)
			defer cancel2()
			res, err = s.client.ExecSyncContainer(ctx2, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", "ok"}})
			if err != nil || res.ExitCode != 0 || string(res.Stdout) != "ok\n" {
				t.Errorf("exec after the fault: %+v, %v", res, err)
			}
			if left, _ := filepath.Glob(filepath.Join(s.runDir, "exec_sync*")); len(left) != 0 {
				t.Errorf("exec pidfiles left in the run dir: %v", left)
			}
		})
	}
}

// TestCreateDecoyPID: a runtime whose pidfile names a process that is not
// the container (here an unrelated `sleep` of ours) must not make gomon
// adopt it: gomon would wait for an exit it can never reap and, at
// shutdown, SIGKILL that process and its whole process group.
func TestCreateDecoyPID(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	decoy := exec.Command("sleep", "1000")
	decoy.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := decoy.Start(); err != nil {
		t.Fatal(err)
	}
	decoyDone := make(chan error, 1)
	go func() { decoyDone <- decoy.Wait() }()
	t.Cleanup(func() {
		_ = decoy.Process.Kill() // our own decoy
		if werr := <-decoyDone; werr == nil {
			t.Logf("the decoy (pid %d) had exited on its own", decoy.Process.Pid)
		}
	})
	fr := newFaultRuntime(t)
	if err := os.WriteFile(filepath.Join(fr.dir, "decoy"), []byte(strconv.Itoa(decoy.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startGomon(t, serverConfig(t, fr.path))
	fr.set(t, "create", "decoypid")
	c := newCtr(t, nil, "true")
	err := createCtr(t, s, c, nil)
	t.Logf("CreateContainer with a pidfile naming pid %d (not gomon's child): pid %d, error %v", decoy.Process.Pid, c.pid, err)
	s.stop(t)
	select {
	case werr := <-decoyDone:
		decoyDone <- werr
		t.Errorf("gomon's shutdown killed an unrelated process (pid %d) that a runtime's pidfile named: %v", decoy.Process.Pid, werr)
	case <-time.After(500 * time.Millisecond):
	}
	if err == nil {
		t.Errorf("gomon adopted pid %d from the pidfile although it is not its child", decoy.Process.Pid)
	}
}

// TestShutdownDuringCreate: SIGINT while the runtime's create hangs
// (before or after it created the container) ends the daemon within the
// client's wait, kills the runtime and leaves no process, socket or
// runtime state behind.
func TestShutdownDuringCreate(t *testing.T) {
	requireRoot(t)
	for _, mode := range []string{"hang", "hang-after"} {
		t.Run(mode, func(t *testing.T) {
			checkNoLeftovers(t)
			fr := newFaultRuntime(t)
			s := startGomon(t, serverConfig(t, fr.path))
			fr.set(t, "create", mode)
			c := newCtr(t, nil, "sleep", "1000")
			t.Cleanup(func() { _ = exec.Command(runcPath(t), "--root", s.runtimeRoot, "delete", "--force", c.id).Run() })
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				defer cancel()
				_, err := s.client.CreateContainer(ctx, c.request())
				errc <- err
			}()
			wpid := fr.waitHanging(t, "create")
			start := time.Now()
			s.stop(t) // bounded by the client's own 10 s wait, checked inside
			t.Logf("shutdown during a hanging create (%s) took %v", mode, time.Since(start).Round(time.Millisecond))
			select {
			case err := <-errc:
				if err == nil {
					t.Errorf("CreateContainer succeeded although the daemon shut down during it")
				}
			case <-time.After(hangGuard):
				t.Fatalf("CreateContainer did not return after the daemon shut down")
			}
			if processExists(wpid) {
				if st, err := readStat(wpid); err == nil && st.state != 'Z' {
					t.Errorf("runtime wrapper pid %d survived the shutdown", wpid)
				}
			}
			out, err := exec.Command(runcPath(t), "--root", s.runtimeRoot, "state", c.id).CombinedOutput()
			if err == nil && !strings.Contains(string(out), `"stopped"`) {
				t.Errorf("runtime still has container %s after gomon shut down: %s", c.id, out)
			}
		})
	}
}
