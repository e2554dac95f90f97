package ioloop

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeStdin records what attach clients write.
type fakeStdin struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed int
}

func (f *fakeStdin) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.Write(p)
}

func (f *fakeStdin) CloseStdin() {
	f.mu.Lock()
	f.closed++
	f.mu.Unlock()
}

func (f *fakeStdin) state() (string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.String(), f.closed
}

func dial(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type frame struct {
	pipe byte
	data string
}

// readFrames reads until the done message (included) or an error.
func readFrames(t *testing.T, c *net.UnixConn) []frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []frame
	buf := make([]byte, 9000)
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %d frames: %v", len(out), err)
		}
		if n > 1+AttachMaxPayload {
			t.Fatalf("message of %d bytes", n)
		}
		out = append(out, frame{buf[0], string(buf[1:n])})
		if buf[0] == AttachPipeDone {
			return out
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestServer(t *testing.T, opts AttachOptions) (*AttachServer, string) {
	t.Helper()
	s := NewAttachServer(opts)
	t.Cleanup(func() { _ = s.Close() })
	path := filepath.Join(t.TempDir(), "a", "attach")
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	return s, path
}

func TestAttachFraming(t *testing.T) {
	s := NewAttachServer(AttachOptions{})
	defer func() { _ = s.Close() }()
	out, errw := s.Stream(Stdout), s.Stream(Stderr)
	path := filepath.Join(t.TempDir(), "attach")
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	c := dial(t, path)
	waitUntil(t, "client registered", func() bool { return s.Stats().Clients == 1 })

	big := strings.Repeat("x", 2*AttachMaxPayload+5)
	_, _ = out.Write([]byte(big))
	_ = out.Close()
	// Output of the other stream after the first ended still arrives,
	// before the single done message.
	_, _ = errw.Write([]byte("late"))
	_ = errw.Close()
	_ = errw.Close() // idempotent
	got := readFrames(t, c)
	want := []frame{
		{AttachPipeStdout, big[:AttachMaxPayload]},
		{AttachPipeStdout, big[AttachMaxPayload : 2*AttachMaxPayload]},
		{AttachPipeStdout, "xxxxx"},
		{AttachPipeStderr, "late"},
		{AttachPipeDone, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("frame %d = {%d, %d bytes}, want {%d, %d bytes}", i, got[i].pipe, len(got[i].data), want[i].pipe, len(want[i].data))
		}
	}
	// A client connecting after the output ended gets done at once.
	late := dial(t, path)
	if f := readFrames(t, late); len(f) != 1 {
		t.Errorf("late client got %v", f)
	}
}

func TestAttachBroadcastLiveOnly(t *testing.T) {
	s := NewAttachServer(AttachOptions{})
	defer func() { _ = s.Close() }()
	out := s.Stream(Stdout)
	_, _ = out.Write([]byte("before anyone")) // not replayed
	path := filepath.Join(t.TempDir(), "attach")
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	c1, c2 := dial(t, path), dial(t, path)
	waitUntil(t, "clients registered", func() bool { return s.Stats().Clients == 2 })
	_, _ = out.Write([]byte("hello"))
	_ = out.Close()
	for i, c := range []*net.UnixConn{c1, c2} {
		got := readFrames(t, c)
		if len(got) != 2 || got[0] != (frame{AttachPipeStdout, "hello"}) {
			t.Errorf("client %d got %v", i, got)
		}
	}
}

func TestAttachStdin(t *testing.T) {
	tests := []struct {
		name       string
		stop       bool
		wantClosed int
	}{
		{"stop after stdin EOF", true, 1},
		{"EOF ignored", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &fakeStdin{}
			s := NewAttachServer(AttachOptions{Stdin: in})
			defer func() { _ = s.Close() }()
			out := s.Stream(Stdout)
			path := filepath.Join(t.TempDir(), "attach")
			if err := s.Listen(path, tt.stop); err != nil {
				t.Fatal(err)
			}
			c := dial(t, path)
			// NUL bytes are data, not separators.
			for _, m := range []string{"ab\x00c", "\x00", "d"} {
				if _, err := c.Write([]byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "stdin forwarded", func() bool { got, _ := in.state(); return got == "ab\x00c\x00d" })
			if tt.stop {
				waitUntil(t, "stdin closed", func() bool { _, n := in.state(); return n == 1 })
			}
			// Half-closed: the client still gets output.
			_, _ = out.Write([]byte("still here"))
			_ = out.Close()
			if got := readFrames(t, c); len(got) != 2 || got[0].data != "still here" {
				t.Errorf("after stdin EOF the client got %v", got)
			}
			if _, n := in.state(); n != tt.wantClosed {
				t.Errorf("CloseStdin called %d times, want %d", n, tt.wantClosed)
			}
		})
	}
}

// TestAttachSlowClient: a client that never reads must not block the
// writer, and what it missed is counted.
func TestAttachSlowClient(t *testing.T) {
	s, path := newTestServer(t, AttachOptions{QueueBytes: 64 << 10, FlushTimeout: 100 * time.Millisecond})
	out := s.Stream(Stdout)
	_ = dial(t, path) // never reads
	waitUntil(t, "client registered", func() bool { return s.Stats().Clients == 1 })
	chunk := bytes.Repeat([]byte("z"), 32<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 { // 32 MB, far beyond socket buffer and queue
			_, _ = out.Write(chunk)
		}
		_ = out.Close()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writer blocked by a client that does not read")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.DroppedChunks == 0 || st.DroppedBytes != st.DroppedChunks*uint64(len(chunk)) {
		t.Errorf("stats %+v, want whole chunks dropped", st)
	}
}

func TestAttachListen(t *testing.T) {
	dir := t.TempDir()
	s := NewAttachServer(AttachOptions{})
	path := filepath.Join(dir, "attach")
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(path, false); err != nil {
		t.Fatalf("second listen: %v", err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	// A client removed the file: Listen serves the path again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(path, false); err != nil {
		t.Fatal(err)
	}
	_ = dial(t, path)

	// A path served by another listener is refused; a stale socket is
	// replaced; a regular file is refused.
	other := NewAttachServer(AttachOptions{})
	if err := other.Listen(path, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("listen on a live socket = %v, want ErrExist", err)
	}
	stale := filepath.Join(dir, "stale")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
	if err := other.Listen(stale, false); err != nil {
		t.Errorf("listen on a stale socket = %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := other.Listen(file, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("listen on a file = %v, want ErrExist", err)
	}
	// A long path, beyond sun_path's 108 bytes.
	long := filepath.Join(dir, strings.Repeat("l", 100), strings.Repeat("m", 100), "attach")
	if err := other.Listen(long, false); err != nil {
		t.Errorf("long path: %v", err)
	}

	for _, srv := range []*AttachServer{s, other} {
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{path, stale, long} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left after Close: %v", p, err)
		}
	}
	if err := s.Listen(path, false); !errors.Is(err, ErrClosed) {
		t.Errorf("listen after close = %v", err)
	}
}

// TestAttachCloseEndsClients: Close sends done to clients that have not
// had it and closes the connection.
func TestAttachCloseEndsClients(t *testing.T) {
	s, path := newTestServer(t, AttachOptions{})
	_ = s.Stream(Stdout) // never ends
	c := dial(t, path)
	waitUntil(t, "client registered", func() bool { return s.Stats().Clients == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFrames(t, c); len(got) != 1 || got[0].pipe != AttachPipeDone {
		t.Errorf("got %v, want done", got)
	}
	buf := make([]byte, 10)
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Errorf("read after done = %d, %v; want EOF", n, err)
	}
}

// TestAttachUnreadInputKeepsOutput: input the server no longer reads
// (sent after the client's stdin EOF) must not cost the client its
// output. Closing a unix socket with unread data makes the peer's next
// read fail with ECONNRESET before it sees what was already queued for it,
// so the client lost its last output and the done message.
func TestAttachUnreadInputKeepsOutput(t *testing.T) {
	for _, serverClose := range []bool{false, true} {
		t.Run(map[bool]string{false: "output ends", true: "server closes"}[serverClose], func(t *testing.T) {
			s, path := newTestServer(t, AttachOptions{})
			out := s.Stream(Stdout)
			c := dial(t, path)
			waitUntil(t, "client registered", func() bool { return s.Stats().Clients == 1 })
			// An empty message is stdin EOF: the server stops reading.
			for _, m := range []string{"", "typed after EOF"} {
				if _, err := c.Write([]byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			_, _ = out.Write([]byte("bye"))
			want := []frame{{AttachPipeStdout, "bye"}, {AttachPipeDone, ""}}
			if serverClose {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				_ = out.Close()
			}
			// Read only once the server has closed its end.
			waitUntil(t, "server closed the connection", func() bool { return peerHungUp(c) })
			if got := readFrames(t, c); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
				t.Errorf("client got %v, want %v", got, want)
			}
		})
	}
}

// TestAttachCloseIsNoStdinEOF: the server closing a client whose stdin is
// still open is not that client's stdin EOF, even with stop-after-EOF.
func TestAttachCloseIsNoStdinEOF(t *testing.T) {
	in := &fakeStdin{}
	s := NewAttachServer(AttachOptions{Stdin: in})
	_ = s.Stream(Stdout) // never ends
	path := filepath.Join(t.TempDir(), "attach")
	if err := s.Listen(path, true); err != nil {
		t.Fatal(err)
	}
	c := dial(t, path)
	waitUntil(t, "client registered", func() bool { return s.Stats().Clients == 1 })
	if _, err := c.Write([]byte("typing")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "stdin forwarded", func() bool { got, _ := in.state(); return got == "typing" })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFrames(t, c); len(got) != 1 || got[0].pipe != AttachPipeDone {
		t.Errorf("got %v, want done", got)
	}
	if _, n := in.state(); n != 0 {
		t.Errorf("CloseStdin called %d times by the server's own close", n)
	}
}
