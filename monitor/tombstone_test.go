package monitor

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// retired waits until the monitor holds container id as a tombstone.
func retired(t *testing.T, m *Monitor, id string) *tombstone {
	t.Helper()
	var tomb *tombstone
	if !waitFor(10*time.Second, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		tomb = m.tombs[id]
		return tomb != nil
	}) {
		t.Fatalf("container %s not retired to a tombstone", id)
	}
	return tomb
}

// TestExitedContainerNotRetained: once a container has exited and been
// retired, the monitor keeps its tombstone only; the container (request,
// log, attach server, logger) can be collected.
func TestExitedContainerNotRetained(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := p.request("gone", monitortest.Bundle(t, "sh", "-c", "exit 3"))
	req.Env = map[string]string{"BIG": strings.Repeat("X", 1<<16)} // a request worth collecting
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	c, _, err := m.lookup("gone")
	if err != nil {
		t.Fatal(err)
	}
	wc := weak.Make(c) // c is not used after this
	if err := m.Start(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Wait(ctx, "gone"); err != nil || st.Code != 3 {
		t.Fatalf("wait = %+v, %v", st, err)
	}
	retired(t, m, "gone")
	if !waitFor(10*time.Second, func() bool {
		runtime.GC()
		return wc.Value() == nil
	}) {
		t.Fatal("the exited container is still reachable after its retirement")
	}
	// The tombstone still answers.
	if st, err := m.Wait(ctx, "gone"); err != nil || st.Code != 3 {
		t.Fatalf("late wait = %+v, %v", st, err)
	}
}

// TestLateCalls: each call on a retired container answers as it did when
// the whole container was remembered (see tombstone).
func TestLateCalls(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, p.request("late", monitortest.Bundle(t, "sh", "-c", "exit 7"))); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx, "late"); err != nil {
		t.Fatal(err)
	}
	retired(t, m, "late")

	if st, err := m.Wait(ctx, "late"); err != nil || st != (ExitStatus{Code: 7}) {
		t.Errorf("Wait = %+v, %v; want code 7", st, err)
	}
	if err := m.Kill(ctx, "late", sigKill); err != nil {
		t.Errorf("Kill = %v, want nil", err)
	}
	for name, err := range map[string]error{
		"ReopenLog":     m.ReopenLog(ctx, "late"),
		"SetWindowSize": m.SetWindowSize(ctx, "late", 80, 24),
		"Attach":        m.Attach(ctx, AttachRequest{ID: "late", SocketPath: filepath.Join(t.TempDir(), "a")}),
	} {
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "has exited") {
			t.Errorf("%s = %v, want ErrNotFound (has exited)", name, err)
		}
	}
	if _, err := m.ServeExec(ctx, ServeExecRequest{ID: "late", Command: []string{"true"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("ServeExec = %v, want ErrNotFound", err)
	}
	res, err := m.ExecSync(ctx, ExecSyncRequest{ID: "late", Command: []string{"true"}, Cgroup: Cgroupfs})
	if err != nil || res.ExitCode != ExitRuntimeFailed || strings.Contains(string(res.Stderr), "child not available") {
		t.Errorf("ExecSync = %+v, %v; want the runtime's failure (exit %d)", res, err, ExitRuntimeFailed)
	}
	// The runtime answers Start: the container is stopped.
	var rerr *RuntimeError
	if err := m.Start(ctx, "late"); !errors.As(err, &rerr) {
		t.Errorf("Start = %v, want the runtime's error", err)
	}
	if err := m.Delete(ctx, "late"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := m.Wait(ctx, "late"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait after Delete = %v, want ErrNotFound", err)
	}
	m.mu.Lock()
	n := len(m.exited)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d tombstones left after Delete", n)
	}
	// The ID is free again, and the new container answers, not the old.
	if st := runToExit(t, m, p.request("late", monitortest.Bundle(t, "true"))); st.Code != 0 {
		t.Errorf("reused ID status = %+v", st)
	}
}

// TestTombstonesBounded: the oldest tombstone goes beyond maxExited, and
// a create over a tombstone replaces it.
func TestTombstonesBounded(t *testing.T) {
	m := &Monitor{containers: map[string]*container{}, tombs: map[string]*tombstone{}}
	exit := func(id string, code int) *container {
		c := &container{id: id, done: make(chan struct{})}
		if err := m.reserve(c); err != nil {
			t.Fatal(err)
		}
		c.created(nil, nil)
		c.exited(ExitStatus{Code: code})
		m.retire(c)
		return c
	}
	for i := range maxExited + 1 {
		exit(string(rune('a'+i%26))+strings.Repeat("x", i/26), i)
	}
	if len(m.exited) != maxExited || len(m.tombs) != maxExited || len(m.containers) != 0 {
		t.Fatalf("exited %d, tombs %d, containers %d; want %d, %d, 0",
			len(m.exited), len(m.tombs), len(m.containers), maxExited, maxExited)
	}
	if _, _, err := m.lookup("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest still remembered: %v", err)
	}
	if st, err := m.Wait(context.Background(), "b"); err != nil || st.Code != 1 {
		t.Errorf("Wait(b) = %+v, %v", st, err)
	}
	// Delete of an old container with the ID of a newer tombstone leaves
	// the newer one alone.
	old := exit("b", 1000)
	newer := exit("b", 1001)
	m.forget(old)
	if st, err := m.Wait(context.Background(), "b"); err != nil || st.Code != 1001 {
		t.Errorf("after forgetting the old b: Wait = %+v, %v; want 1001", st, err)
	}
	m.forget(newer)
	if _, _, err := m.lookup("b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("b still remembered after forget: %v", err)
	}
}
