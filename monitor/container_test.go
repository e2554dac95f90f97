package monitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

func TestEchoHello(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	bundle := monitortest.Bundle(t, "echo", "hello")
	var out syncBuffer
	req := p.request("echo", bundle)
	req.Stdout = &out
	st := runToExit(t, m, req)
	if st != (ExitStatus{}) {
		t.Fatalf("status = %+v, want zero", st)
	}
	oneLine(t, p.log, "stdout", "F", "hello")
	for _, f := range []string{p.exit1, p.exit2} {
		if got := readExit(t, f); got != "0" {
			t.Errorf("exit file %s = %q, want \"0\"", f, got)
		}
	}
	if _, err := os.Stat(p.oom); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("oom file exists after a normal exit (stat: %v)", err)
	}
	if got := out.String(); got != "hello\n" {
		t.Errorf("Stdout tee got %q", got)
	}
	// Delete forgot it.
	if err := m.ReopenLog(context.Background(), "echo"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReopenLog after delete = %v, want ErrNotFound", err)
	}
}

func TestExitCodes(t *testing.T) {
	m := newTestMonitor(t)
	tests := []struct {
		name   string
		opts   monitortest.BundleOptions
		kill   string // runc kill signal; "" lets it exit
		code   int
		signal unix.Signal
	}{
		{name: "exit3", opts: monitortest.BundleOptions{Args: []string{"sh", "-c", "exit 3"}}, code: 3},
		{name: "sigkill", opts: monitortest.BundleOptions{Args: []string{"sleep", "1000"}}, kill: "KILL", code: 137, signal: unix.SIGKILL},
		// PID 1 of a PID namespace ignores SIGTERM without a handler, so
		// this one shares the host PID namespace.
		{name: "sigterm", opts: monitortest.BundleOptions{Args: []string{"sleep", "1000"}, HostPID: true}, kill: "TERM", code: 143, signal: unix.SIGTERM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPaths(t)
			bundle := monitortest.NewBundle(t, tt.opts)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			id := "exit-" + tt.name
			if _, err := m.CreateContainer(ctx, p.request(id, bundle)); err != nil {
				t.Fatal(err)
			}
			if err := m.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
			if tt.kill != "" {
				if err := m.runRuntime(ctx, append(m.globalArgs(id, Cgroupfs, nil), "kill", id, tt.kill)); err != nil {
					t.Fatalf("runc kill: %v", err)
				}
			}
			st, err := m.Wait(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if st.Code != tt.code || st.Signal != tt.signal {
				t.Errorf("status = %+v, want code %d signal %d", st, tt.code, tt.signal)
			}
			if got, want := readExit(t, p.exit1), strconv.Itoa(tt.code); got != want {
				t.Errorf("exit file = %q, want %q", got, want)
			}
			if err := m.Delete(ctx, id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCleanupCommandRunsAfterExit(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	marker := filepath.Join(p.dir, "cleaned")
	req := p.request("cleanup", monitortest.Bundle(t, "true"))
	// The command checks the exit file exists when it runs.
	req.CleanupCmd = []string{"/bin/sh", "-c", `test -f "$1" && touch "$2"`, "sh", p.exit1, marker}
	runToExit(t, m, req)
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(marker); return err == nil }) {
		t.Fatal("cleanup command did not run after the exit file was written")
	}
}

func TestInvalidEntrypoint(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	req := p.request("badentry", monitortest.Bundle(t, "does-not-exist"))
	_, err := m.CreateContainer(context.Background(), req)
	var rerr *RuntimeError
	if !errors.As(err, &rerr) {
		t.Fatalf("error %v is not a RuntimeError", err)
	}
	for _, want := range []string{"child command exited with: 1", "not found in $PATH"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, _, err := m.lookup("badentry"); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed container still monitored: %v", err)
	}
	// The ID is free again.
	req2 := p.request("badentry", monitortest.Bundle(t, "true"))
	if st := runToExit(t, m, req2); st.Code != 0 {
		t.Errorf("retry status %+v", st)
	}
}

func TestAlreadyExists(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	ctx := context.Background()
	if _, err := m.CreateContainer(ctx, p.request("dup", monitortest.Bundle(t, "sleep", "100"))); err != nil {
		t.Fatal(err)
	}
	_, err := m.CreateContainer(ctx, p.request("dup", monitortest.Bundle(t, "true")))
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second create = %v, want ErrAlreadyExists", err)
	}
	// Shutdown (cleanup) kills the created container.
}

func TestTerminalOutputHasCRLF(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "echo hello; echo world >&2"}, Terminal: true,
	})
	req := p.request("tty", bundle)
	req.Terminal = true
	if st := runToExit(t, m, req); st.Code != 0 {
		t.Fatalf("status %+v", st)
	}
	stdout, stderr := parseLog(t, p.log)
	if string(stdout) != "hello\r\nworld\r\n" || len(stderr) != 0 {
		t.Fatalf("stdout %q stderr %q, want all on stdout with CRLF", stdout, stderr)
	}
}

func TestSetWindowSize(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	ctx := context.Background()
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sleep", "100"}, Terminal: true})
	req := p.request("tty-resize", bundle)
	req.Terminal = true
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.SetWindowSize(ctx, "tty-resize", 120, 40); err != nil {
		t.Fatal(err)
	}
	c, _, _ := m.lookup("tty-resize")
	c.mu.Lock()
	ws, err := c.console.Size()
	c.mu.Unlock()
	if err != nil || ws.Width != 120 || ws.Height != 40 {
		t.Fatalf("size = %+v, %v; want 120x40", ws, err)
	}
	plain := p.request("plain", monitortest.Bundle(t, "sleep", "100"))
	if _, err := m.CreateContainer(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if err := m.SetWindowSize(ctx, "plain", 1, 1); !errors.Is(err, ErrFailedPrecondition) ||
		!strings.Contains(err.Error(), "container has no terminal") {
		t.Fatalf("resize of non-tty = %v", err)
	}
	if err := m.SetWindowSize(ctx, "nope", 1, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resize of unknown = %v", err)
	}
}

func TestFakeRuntimeFaults(t *testing.T) {
	monitortest.RequireRoot(t)
	tests := []struct {
		name     string
		terminal bool
		script   string
		want     string
	}{
		{"no console connection", true, "exit 0", "runtime exited without connecting"},
		{"console never connects", true, "exec sleep 100", "no connection within"},
		{"no pidfile", false, "exit 0", "grandchild pid read error"},
		{"garbage pidfile", false, `printf 'x' > "$3/pidfile"`, "grandchild pid parse error"},
		{"fails with text", false, "echo 'boom from runtime' >&2; exit 7", "child command exited with: 7: boom from runtime"},
		{"fails with text tty", true, "echo 'tty boom' >&2; exit 9", "child command exited with: 9: tty boom"},
	}
	defer func(d time.Duration) { consoleTimeout = d }(consoleTimeout)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Only the runtime that never connects waits out the console
			// timeout; the others end by the runtime's exit, which must
			// win the race against the timer even on a loaded machine.
			consoleTimeout = 30 * time.Second
			if tt.script == "exec sleep 100" {
				consoleTimeout = 300 * time.Millisecond
			}
			// Args as runc gets them: create --bundle <b> --pid-file <p> …;
			// with no --root and cgroupfs, "$3" is the bundle.
			m, err := New(Config{Runtime: writeScript(t, tt.script), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			p := newPaths(t)
			req := p.request("fake", t.TempDir())
			req.Terminal = tt.terminal
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = m.CreateContainer(ctx, req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("create error = %v, want it to contain %q", err, tt.want)
			}
			if err := m.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if entries, _ := filepath.Glob(filepath.Join(os.TempDir(), "gomon-term-*.sock")); len(entries) > 0 {
				t.Errorf("console sockets left: %v", entries)
			}
		})
	}
}

func TestShutdownKillsAll(t *testing.T) {
	runc := monitortest.Runc(t)
	const n = 5
	var bundles [n]string
	var ps [n]paths
	for i := range n {
		bundles[i] = monitortest.Bundle(t, "sleep", "1000")
		ps[i] = newPaths(t)
	}
	m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pids []int
	for i := range n {
		id := "sd" + string(rune('a'+i))
		pid, err := m.CreateContainer(ctx, ps[i].request(id, bundles[i]))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // mix created and running containers
			if err := m.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		pids = append(pids, int(pid))
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := m.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for i := range n {
		if got := readExit(t, ps[i].exit1); got != "137" {
			t.Errorf("container %d exit file = %q, want 137", i, got)
		}
		if err := unix.Kill(pids[i], 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("container %d pid %d still exists: %v", i, pids[i], err)
		}
	}
	if _, err := m.CreateContainer(ctx, ps[0].request("late", bundles[0])); !errors.Is(err, ErrShutdown) {
		t.Errorf("create after shutdown = %v, want ErrShutdown", err)
	}
	if err := m.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown = %v", err)
	}
}

// TestConcurrentCreates_Concurrent runs containers in parallel on one
// Monitor, with ReopenLog calls racing their output.
func TestConcurrentCreates_Concurrent(t *testing.T) {
	m := newTestMonitor(t)
	const n = 6
	bundles := make([]string, n)
	ps := make([]paths, n)
	for i := range n {
		bundles[i] = monitortest.Bundle(t, "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exit "+strconv.Itoa(i))
		ps[i] = newPaths(t)
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			id := "conc" + strconv.Itoa(i)
			if _, err := m.CreateContainer(ctx, ps[i].request(id, bundles[i])); err != nil {
				errs <- err
				return
			}
			_ = m.ReopenLog(ctx, id) // before start: nothing lost
			if err := m.Start(ctx, id); err != nil {
				errs <- err
				return
			}
			st, err := m.Wait(ctx, id)
			if err == nil && st.Code != i {
				err = fmt.Errorf("container %d exit %d", i, st.Code)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i := range n {
		stdout, _ := parseLog(t, ps[i].log)
		if strings.Count(string(stdout), "\n") != 10 {
			t.Errorf("container %d logged %q", i, stdout)
		}
	}
}
