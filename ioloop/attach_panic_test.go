package ioloop

import (
	"bytes"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/internal/contain"
)

// panicStdin panics when a client sends "boom", like a bug in the
// container's stdin target.
type panicStdin struct{ fakeStdin }

func (p *panicStdin) Write(b []byte) (int, error) {
	if string(b) == "boom" {
		panic("injected stdin panic")
	}
	return p.fakeStdin.Write(b)
}

// lockedLog is a log sink safe for the server's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func liveClients(s *AttachServer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// hungUp reports whether the server closed c: a read ends without the
// done message.
func hungUp(t *testing.T, c *net.UnixConn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 9000)
	for {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			return true
		}
		if buf[0] == AttachPipeDone {
			return false
		}
	}
}

// A panic in one client's reader (here: in the container's stdin) or
// writer ends that client only: the others keep their output, the
// server's Close still ends, and the panics are counted and logged with
// their stacks. Without the recovery the panic ends the test binary.
func TestAttachPanicEndsOnlyThatClient(t *testing.T) {
	var logs lockedLog
	in := &panicStdin{}
	s := NewAttachServer(AttachOptions{Stdin: in, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	out := s.Stream(Stdout)
	path := filepath.Join(t.TempDir(), "attach")
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	before := contain.PanicsOf(contain.Attach)

	// Reader: a client sending "boom".
	bad, good := dial(t, path), dial(t, path)
	waitUntil(t, "clients registered", func() bool { return liveClients(s) == 2 })
	if _, err := bad.Write([]byte("boom")); err != nil {
		t.Fatal(err)
	}
	if !hungUp(t, bad) {
		t.Fatal("client whose input panicked was not hung up")
	}
	waitUntil(t, "panicking client removed", func() bool { return liveClients(s) == 1 })
	if _, err := good.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "other client's input", func() bool { got, _ := in.state(); return got == "still here" })

	// Writer: the next message written panics in one writer.
	var fired atomic.Bool
	testHookAttachWrite = func(_ byte, data []byte) {
		if string(data) == "poison" && fired.CompareAndSwap(false, true) {
			panic("injected writer panic")
		}
	}
	t.Cleanup(func() { testHookAttachWrite = nil })
	third := dial(t, path)
	waitUntil(t, "third client registered", func() bool { return liveClients(s) == 2 })
	_, _ = out.Write([]byte("poison"))
	waitUntil(t, "writer panic", fired.Load)
	waitUntil(t, "panicking writer's client removed", func() bool { return liveClients(s) == 1 })
	_, _ = out.Write([]byte("after"))
	_ = out.Close()
	ended := 0
	for _, c := range []*net.UnixConn{good, third} {
		if hungUp(t, c) {
			ended++
		}
	}
	if ended != 1 {
		t.Errorf("%d clients hung up after one writer panicked, want 1", ended)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := contain.PanicsOf(contain.Attach) - before; got != 2 {
		t.Errorf("counted %d attach panics, want 2", got)
	}
	l := logs.String()
	for _, want := range []string{"injected stdin panic", "injected writer panic", "panicStdin).Write", `"kind":"attach"`} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}
}

// TestAttachClientCap: a flood of connections beyond MaxClients is closed
// at once; the clients already connected keep their output, and a place
// that frees up is taken by the next client.
func TestAttachClientCap(t *testing.T) {
	const maxClients = 4
	s, path := newTestServer(t, AttachOptions{MaxClients: maxClients})
	out := s.Stream(Stdout)
	var served []*net.UnixConn
	for range maxClients {
		served = append(served, dial(t, path))
	}
	waitUntil(t, "clients registered", func() bool { return liveClients(s) == maxClients })
	const flood = 20
	for range flood {
		c := dial(t, path)
		if !hungUp(t, c) {
			t.Fatal("a connection past the cap got the done message")
		}
	}
	if st := s.limiter.Stats(); st.Rejected != flood || st.Live != maxClients {
		t.Fatalf("after the flood: %+v, want %d rejected and %d live", st, flood, maxClients)
	}
	if n := liveClients(s); n != maxClients {
		t.Fatalf("%d clients, want %d", n, maxClients)
	}
	// One goes away; its place is free for the next.
	_ = served[0].Close()
	waitUntil(t, "the closed client's place freed", func() bool { return s.limiter.Stats().Live == maxClients-1 })
	served[0] = dial(t, path)
	waitUntil(t, "the newcomer registered", func() bool { return liveClients(s) == maxClients })
	_, _ = out.Write([]byte("to all"))
	_ = out.Close()
	for i, c := range served {
		if got := readFrames(t, c); len(got) != 2 || got[0] != (frame{AttachPipeStdout, "to all"}) {
			t.Errorf("client %d got %v", i, got)
		}
	}
}
