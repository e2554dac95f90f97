package monitor

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// newLoggingMonitor is newTestMonitor with its log in logs.
func newLoggingMonitor(t *testing.T, logs *syncBuffer) *Monitor {
	t.Helper()
	runc := monitortest.Runc(t)
	m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return m
}

// panicOOM is an OOM watcher whose verdict panics, like a bug in reading
// the cgroup's events.
type panicOOM struct{}

func (panicOOM) Stop(context.Context) uint64 { panic("injected OOM verdict panic") }

func (panicOOM) Count() (uint64, bool) { return 0, false }

func (panicOOM) AfterKill(func()) {}

// A panic in the waiter (here: in the OOM verdict) loses neither the exit
// code nor the log: the exit files hold the real code, Wait answers, the
// container is retired (its ID can be used again) and the panic is
// counted and logged with its stack. Without the recovery the panic ends
// the test binary (the daemon, and with it the pod).
func TestWaiterPanicKeepsExitCode(t *testing.T) {
	var logs syncBuffer
	m := newLoggingMonitor(t, &logs)
	m.oomWatch = func(int, *slog.Logger) (oomWatcher, error) { return panicOOM{}, nil }
	before := contain.PanicsOf(contain.Waiter)
	p := newPaths(t)
	req := p.request("waiter-panic", monitortest.Bundle(t, "sh", "-c", "echo before exit; exit 7"))
	if st := runToExit(t, m, req); st.Code != 7 {
		t.Fatalf("status %+v, want code 7", st)
	}
	for _, f := range []string{p.exit1, p.exit2} {
		if got := readExit(t, f); got != "7" {
			t.Errorf("exit file %s = %q, want 7", f, got)
		}
	}
	oneLine(t, p.log, "stdout", "F", "before exit")
	if got := contain.PanicsOf(contain.Waiter) - before; got != 1 {
		t.Errorf("counted %d waiter panics, want 1", got)
	}
	l := logs.String()
	for _, want := range []string{"injected OOM verdict panic", "panicOOM.Stop", `"kind":"waiter"`} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	// The monitor goes on: the same ID runs again, without the panic.
	m.oomWatch = watchOOM
	p2 := newPaths(t)
	req2 := p2.request("waiter-panic", monitortest.Bundle(t, "sh", "-c", "exit 5"))
	if st := runToExit(t, m, req2); st.Code != 5 {
		t.Fatalf("second container: %+v, want code 5", st)
	}
}

// panicTee is a tee writer that panics on its first write, or on every
// write when always.
type panicTee struct {
	always bool
	writes atomic.Int64
}

func (p *panicTee) Write(b []byte) (int, error) {
	if p.writes.Add(1) == 1 || p.always {
		panic("injected tee panic")
	}
	return len(b), nil
}

// A panic in a read loop (here: in a tee writer) does not stop the
// container's output from being read: once, the loop starts again and
// the log goes on; a panic that keeps coming back makes the loop discard
// the rest, and the container, which writes far more than its pipe
// holds, still runs to its end with its exit code.
func TestReadLoopPanicContained(t *testing.T) {
	var logs syncBuffer
	m := newLoggingMonitor(t, &logs)

	t.Run("once", func(t *testing.T) {
		before := contain.PanicsOf(contain.ReadLoop)
		p := newPaths(t)
		req := p.request("readloop-once", monitortest.Bundle(t, "sh", "-c", "echo one; sleep 0.5; echo two; exit 3"))
		req.Stdout = &panicTee{}
		if st := runToExit(t, m, req); st.Code != 3 {
			t.Fatalf("status %+v, want code 3", st)
		}
		if got := readExit(t, p.exit1); got != "3" {
			t.Errorf("exit file %q, want 3", got)
		}
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), " stdout F one\n") || !strings.Contains(string(b), " stdout F two\n") {
			t.Errorf("log lost output around the panic:\n%s", b)
		}
		if got := contain.PanicsOf(contain.ReadLoop) - before; got != 1 {
			t.Errorf("counted %d read loop panics, want 1", got)
		}
	})
	t.Run("always", func(t *testing.T) {
		before := contain.PanicsOf(contain.ReadLoop)
		p := newPaths(t)
		// 8 MiB: eight times what the pipe holds.
		req := p.request("readloop-always", monitortest.Bundle(t, "sh", "-c", "head -c 8388608 /dev/zero; exit 4"))
		req.Stdout = &panicTee{always: true}
		if st := runToExit(t, m, req); st.Code != 4 {
			t.Fatalf("status %+v, want code 4", st)
		}
		if got := readExit(t, p.exit1); got != "4" {
			t.Errorf("exit file %q, want 4", got)
		}
		if got := contain.PanicsOf(contain.ReadLoop) - before; got != maxReadLoopPanics {
			t.Errorf("counted %d read loop panics, want %d", got, maxReadLoopPanics)
		}
		if l := logs.String(); !strings.Contains(l, "discarding this stream's output") || !strings.Contains(l, "panicTee).Write") {
			t.Errorf("log lacks the discard or the stack")
		}
	})
}

// A create that panics after the runtime created the container (here: in
// starting its OOM watcher), before its waiter owns it, removes the
// container from the runtime: the RPC layer turns the panic into a failed
// call, and nothing is left running unmonitored. The ID can be used again.
func TestCreatePanicRemovesTheContainer(t *testing.T) {
	m := newTestMonitor(t)
	m.oomWatch = func(int, *slog.Logger) (oomWatcher, error) { panic("injected create panic") }
	p := newPaths(t)
	req := p.request("create-panic", monitortest.Bundle(t, "sleep", "1000"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var recovered any
	func() {
		defer func() { recovered = recover() }() // what rpc's handle does
		_, _ = m.CreateContainer(ctx, req)
	}()
	if recovered != "injected create panic" {
		t.Fatalf("create recovered %v, want the injected panic", recovered)
	}
	state := append(m.globalArgs(req.ID, req.Cgroup, nil), "state", req.ID)
	if err := m.runRuntime(ctx, state); err == nil {
		t.Fatal("the runtime still has the container after the panicked create")
	}
	m.oomWatch = watchOOM
	req2 := newPaths(t).request("create-panic", monitortest.Bundle(t, "sh", "-c", "exit 6"))
	if st := runToExit(t, m, req2); st.Code != 6 {
		t.Fatalf("the ID again: %+v, want code 6", st)
	}
}
