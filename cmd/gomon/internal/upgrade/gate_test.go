package upgrade

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/rpc"
)

// blockingBackend is a backend whose ReopenLog blocks until released.
type blockingBackend struct {
	rpc.Backend
	entered chan struct{}
	release chan struct{}
}

func (b *blockingBackend) ReopenLog(context.Context, string) error {
	b.entered <- struct{}{}
	<-b.release
	return nil
}

// Close waits for the call inside; a call arriving meanwhile waits at the
// gate until Open.
func TestGateHoldsCalls(t *testing.T) {
	b := &blockingBackend{entered: make(chan struct{}, 2), release: make(chan struct{}, 2)}
	g := NewGate(b)
	first := make(chan error, 1)
	go func() { first <- g.ReopenLog(context.Background(), "a") }()
	<-b.entered

	closed := make(chan error, 1)
	go func() { closed <- g.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a call inside", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	second := make(chan error, 1)
	go func() { second <- g.ReopenLog(context.Background(), "b") }()
	select {
	case <-b.entered:
		t.Fatal("a call passed the closed gate")
	case <-time.After(50 * time.Millisecond):
	}
	g.Open()
	<-b.entered
	b.release <- struct{}{}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// Past its bound Close gives up with ErrBusy and the gate is open again.
func TestGateCloseTimesOut(t *testing.T) {
	b := &blockingBackend{entered: make(chan struct{}, 2), release: make(chan struct{}, 2)}
	g := NewGate(b)
	first := make(chan error, 1)
	go func() { first <- g.ReopenLog(context.Background(), "a") }()
	<-b.entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := g.Close(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("Close with a stuck call: %v, want ErrBusy", err)
	}
	second := make(chan error, 1)
	go func() { second <- g.ReopenLog(context.Background(), "b") }()
	<-b.entered // passes: the gate is open
	b.release <- struct{}{}
	b.release <- struct{}{}
	if err := errors.Join(<-first, <-second); err != nil {
		t.Fatal(err)
	}
}

// While paused the listener accepts nothing, but clients connect (the
// backlog); after Resume they are accepted.
func TestListenerPause(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ul)
	defer func() { _ = l.Close() }()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	l.Pause()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect while paused: %v", err)
	}
	defer func() { _ = c.Close() }()
	select {
	case <-accepted:
		t.Fatal("accepted while paused")
	case <-time.After(50 * time.Millisecond):
	}
	l.Resume()
	select {
	case a := <-accepted:
		_ = a.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("not accepted after Resume")
	}
}

// Only a well-formed traceparent is carried into the state record.
func TestValidTraceParent(t *testing.T) {
	const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for in, want := range map[string]string{
		ok: ok,
		"": "",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01": "", // zero trace ID
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7":    "",
		"garbage\n{\"binary\":\"/x\"}":                            "",
	} {
		if got := ValidTraceParent(in); got != want {
			t.Errorf("ValidTraceParent(%q) = %q, want %q", in, got, want)
		}
	}
}
