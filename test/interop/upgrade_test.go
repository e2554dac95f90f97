package interop

// Calls made while the daemon is upgraded in place (docs/upgrade.md,
// "Clients during the upgrade"), through the client generation this build
// links: v0.7.3 dials a connection per call, v1.0.1 holds one.

import (
	"context"
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
)

// heldUpgradeBinary writes a wrapper of bin that holds the upgrade's dry
// run (`upgrade --check-state`) until the file goOn exists, after
// creating the file held; anything else it execs at once. While it
// holds, the old daemon is paused: it no longer accepts, and its gate is
// closed.
func heldUpgradeBinary(t *testing.T, bin string) (wrapper, held, goOn string) {
	t.Helper()
	dir := t.TempDir()
	wrapper, held, goOn = filepath.Join(dir, "gomon-held"), filepath.Join(dir, "held"), filepath.Join(dir, "go-on")
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	if [ "$a" = --check-state ]; then
		echo held > %q
		while [ ! -e %q ]; do sleep 0.01; done
	fi
done
exec %q "$@"
`, held, goOn, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, held, goOn
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
	bin, err := harness.LocateGomon()
	if err != nil {
		t.Fatal(err)
	}
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
