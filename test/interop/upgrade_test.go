package interop

// Calls made while the daemon is upgraded in place (docs/upgrade.md,
// "Clients during the upgrade"), through the client generation this build
// links: v0.7.3 dials a connection per call, v1.0.1 holds one.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
	"github.com/gomon-dev/gomon/test/interop/generation"
	"github.com/gorilla/websocket"
)

// heldUpgradeBinary writes a wrapper of bin that holds the upgrade's
// second dry run (`upgrade --check-state` on the real state record, not
// the preflight's probe) until the file goOn exists, after creating the
// file held; anything else it execs at once. While it holds, the old
// daemon is paused: it no longer accepts, and its gate is closed.
func heldUpgradeBinary(t *testing.T, bin string) (wrapper, held, goOn string) {
	t.Helper()
	dir := t.TempDir()
	wrapper, held, goOn = filepath.Join(dir, "gomon-held"), filepath.Join(dir, "held"), filepath.Join(dir, "go-on")
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = upgrade ] && [ "$2" = --check-state ] && [ "${3##*/}" = gomon-upgrade-state.json ]; then
	echo held > %q
	while [ ! -e %q ]; do sleep 0.01; done
fi
exec %q "$@"
`, held, goOn, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, held, goOn
}

// gomonBinary is the gomon binary under test, which `gomon upgrade` runs.
func gomonBinary(t *testing.T) string {
	t.Helper()
	bin, err := harness.LocateGomon()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestCallsDuringUpgrade: an exec sync made while the daemon is paused in
// an upgrade waits, and once the new process serves: with a client that
// dials per call (v0.7.3, CRI-O 1.34's) it is answered, without error;
// with a client that held its connection across the upgrade (v1.0.1) it
// fails once (the connection ended at the exec) and the client's next
// call is answered. Either way the daemon kept its PID and its container,
// and client.New on the same run dir attaches to it.
func TestCallsDuringUpgrade(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	bin := gomonBinary(t)
	wrapper, held, goOn := heldUpgradeBinary(t, bin)
	release := func() { _ = os.WriteFile(goOn, nil, 0o644) }
	defer release()

	cfg := serverConfig(t, t.TempDir())
	s := startGomon(t, cfg)
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)
	echo := func(word string) (*client.ExecContainerResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), execGuard)
		defer cancel()
		return s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", word}, Timeout: uint64(execGuard / time.Second)})
	}
	if res, err := echo("before"); err != nil || string(res.Stdout) != "before\n" {
		t.Fatalf("exec sync before the upgrade: %v, %+v", err, res)
	}

	upgraded := make(chan string, 1)
	go func() {
		out, err := exec.Command(bin, "upgrade", "--runtime-dir", s.runDir, "--binary", wrapper).CombinedOutput()
		upgraded <- fmt.Sprintf("%s (exit: %v)", strings.TrimSpace(string(out)), err)
	}()
	if _, err := harness.WaitForFile(held, hangGuard); err != nil {
		release()
		t.Fatalf("the upgrade's dry run never started: %v; gomon upgrade: %s", err, <-upgraded)
	}
	type answer struct {
		res *client.ExecContainerResult
		err error
	}
	during := make(chan answer, 1)
	go func() {
		res, err := echo("during")
		during <- answer{res, err}
	}()
	time.Sleep(300 * time.Millisecond) // the call is queued or at the gate by now
	select {
	case a := <-during:
		t.Fatalf("a call returned while the daemon was paused (%+v, %v): it was not held", a.res, a.err)
	default:
	}
	release()
	var a answer
	select {
	case a = <-during:
	case <-time.After(execGuard + hangGuard):
		t.Fatal("the call made during the upgrade never returned")
	}
	if out := <-upgraded; !strings.Contains(out, "upgraded") {
		t.Fatalf("gomon upgrade: %s", out)
	}
	t.Logf("client %s, call made during the upgrade: %+v, error %v", clientGeneration, a.res, a.err)
	switch {
	case !generation.HoldsConnection:
		if a.err != nil || string(a.res.Stdout) != "during\n" {
			t.Errorf("a per-call client's call during the upgrade: %v, %+v; want it answered", a.err, a.res)
		}
	case a.err == nil:
		t.Errorf("the call on the connection held across the upgrade was answered (%+v): docs/upgrade.md says it fails once", a.res)
	}
	if res, err := echo("after"); err != nil || string(res.Stdout) != "after\n" {
		t.Errorf("exec sync after the upgrade: %v, %+v", err, res)
	}
	nc, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New on the upgraded daemon's run dir: %v", err)
	}
	if int(nc.PID()) != s.pid {
		t.Errorf("client.New attached to pid %d, want the upgraded daemon %d", nc.PID(), s.pid)
	}
}

// TestUpgradeEndsStreamingSessions: an upgrade does not carry streaming
// sessions (docs/upgrade.md). An open exec session is ended with a
// going-away close and its process is killed, a session whose client has
// not connected yet stops answering, and the upgraded daemon serves new
// sessions.
func TestUpgradeEndsStreamingSessions(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	bin := gomonBinary(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	upgraded := false
	serve := func(cmd ...string) string {
		t.Helper()
		for attempt := 1; ; attempt++ {
			res, err := s.client.ServeExecContainer(ctx, &client.ServeExecContainerConfig{
				ID: c.id, Command: cmd, Stdin: true, Stdout: true, Stderr: true,
			})
			if err == nil {
				return "ws" + strings.TrimPrefix(res.URL, "http")
			}
			// A connection held across the upgrade fails once (v1.0.1).
			if !upgraded || !generation.HoldsConnection || attempt > 1 {
				t.Fatalf("ServeExecContainer: %v", err)
			}
		}
	}
	dialer := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
	// readUntil reads stdout until it holds want.
	readUntil := func(conn *websocket.Conn, want string) {
		t.Helper()
		var got strings.Builder
		for !strings.Contains(got.String(), want) {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("read the session for %q (got %q): %v", want, got.String(), err)
			}
			if len(msg) > 0 && msg[0] == 1 {
				got.Write(msg[1:])
			}
		}
	}

	const marker = "999123" // finds the session's process in /proc
	open, _, err := dialer.DialContext(ctx, serve("sh", "-c", "echo ready; exec sleep "+marker), nil)
	if err != nil {
		t.Fatalf("dial the session: %v", err)
	}
	defer func() { _ = open.Close() }()
	_ = open.SetReadDeadline(time.Now().Add(hangGuard))
	readUntil(open, "ready")
	if ps := processesWith(marker); len(ps) != 1 {
		t.Fatalf("processes of the session before the upgrade: %q, want 1", ps)
	}
	pending := serve("echo", "never")

	out, err := exec.Command(bin, "upgrade", "--runtime-dir", s.runDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "upgraded") {
		t.Fatalf("gomon upgrade with a streaming session open: %s (%v)", out, err)
	}
	t.Logf("gomon upgrade: %s", strings.TrimSpace(string(out)))
	upgraded = true

	// The open session ended with a going-away close, its process with it.
	for {
		_, _, err := open.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Errorf("the open session ended with %v, want a going-away close", err)
		}
		break
	}
	for deadline := time.Now().Add(hangGuard); len(processesWith(marker)) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("processes of the ended session are left: %q", processesWith(marker))
			break
		}
	}
	// The pending session's URL no longer answers.
	if conn, resp, err := dialer.DialContext(ctx, pending, nil); err == nil {
		_ = conn.Close()
		t.Errorf("the pending session connected after the upgrade (response %v)", resp)
	}
	// A new session works.
	conn, _, err := dialer.DialContext(ctx, serve("echo", "after"), nil)
	if err != nil {
		t.Fatalf("dial a session after the upgrade: %v", err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
	readUntil(conn, "after")
}

// processesWith returns the command lines (NULs as spaces) of the
// processes whose command line holds word (a zombie has none), leaving out
// the runtime's: `runc exec -d`, and its children until they exec, carry
// the session's command in their arguments, and can still be there when
// the session has printed its first output.
func processesWith(word string) []string {
	var found []string
	ms, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range ms {
		b, err := os.ReadFile(m)
		cmdline := string(b)
		if err != nil || !strings.Contains(cmdline, word) {
			continue
		}
		if argv0, _, _ := strings.Cut(cmdline, "\x00"); filepath.Base(argv0) == "runc" {
			continue
		}
		found = append(found, strings.TrimSpace(strings.ReplaceAll(cmdline, "\x00", " ")))
	}
	return found
}
