package ioloop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A loop stopped for a handoff while stuck in a sink write, with the pipe
// full behind it: it finishes the write, then stops without reading what
// the pipe holds, which a new loop (the next process's) reads whole. Every
// byte written reaches a sink exactly once.
func TestStopForHandoffLeavesThePipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(); _ = w.Close() }()
	sink := &stallingSink{stalled: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := ReadLoop(r, Stdout, NewLog(sink), nil)
		done <- err
	}()
	data := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 600<<10/64)
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		wrote <- err
	}()
	<-sink.stalled
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writer blocked: the pipe was not grown")
	}
	if err := StopForHandoff(r); err != nil {
		t.Fatal(err)
	}
	close(sink.release)
	if err := <-done; !errors.Is(err, ErrHandedOff) {
		t.Fatalf("ReadLoop error %v, want ErrHandedOff", err)
	}
	first := len(sink.got)
	if first == 0 || first == len(data) {
		t.Fatalf("the first loop logged %d of %d bytes; the test needs a pipe holding the rest", first, len(data))
	}
	EndHandoff(r)

	// The next reader gets the rest, in order.
	_ = w.Close()
	rest := &stallingSink{stalled: make(chan struct{}), release: make(chan struct{})}
	close(rest.release)
	if _, err := ReadLoop(r, Stdout, NewLog(rest), nil); err != nil {
		t.Fatalf("second ReadLoop: %v", err)
	}
	got := append(append([]byte(nil), sink.got...), rest.got...)
	if !bytes.Equal(got, data) {
		t.Fatalf("the two loops logged %d+%d bytes, not the %d written, in order", first, len(rest.got), len(data))
	}
}

// StopForHandoff needs a reader that takes a deadline.
func TestStopForHandoffRefusesPlainReaders(t *testing.T) {
	if err := StopForHandoff(bytes.NewReader(nil)); err == nil {
		t.Fatal("StopForHandoff on a bytes.Reader: nil error")
	}
	if isHandedOff(io.Reader(bytes.NewReader(nil))) {
		t.Fatal("a refused reader is still marked")
	}
}

// AppendCRILog keeps what the file holds and writes after it; the size
// limit counts it.
func TestAppendCRILogKeepsTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ctr.log")
	l, err := OpenCRILog(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WriteChunk(Stdout, []byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := AppendCRILog(p, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteChunk(Stderr, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) != 2 || !bytes.HasSuffix(lines[0], []byte(" stdout F before")) || !bytes.HasSuffix(lines[1], []byte(" stderr F after")) {
		t.Fatalf("log after append:\n%s", b)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	// The counter starts at the size found: same as in the first process.
	if a.written != uint64(fi.Size()) {
		t.Errorf("written %d after append, file size %d", a.written, fi.Size())
	}
}

// AppendJSONLog likewise keeps the file.
func TestAppendJSONLogKeepsTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ctr.json")
	if err := os.WriteFile(p, []byte("{\"log\":\"x\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := AppendJSONLog(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WriteChunk(Stdout, []byte("y\n")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("{\"log\":\"x\"}\n")) || bytes.Count(b, []byte("\n")) != 2 {
		t.Fatalf("json log after append:\n%s", b)
	}
}

// TestAttachDisconnectClients: a handoff ends the connected clients
// after the output queued for them, without the done message (the
// output goes on), and waits until they are gone; the socket still
// serves, and a client connecting then gets the output that follows.
func TestAttachDisconnectClients(t *testing.T) {
	s, path := newTestServer(t, AttachOptions{})
	out := s.Stream(Stdout) // never ends
	c1, c2 := dial(t, path), dial(t, path)
	waitUntil(t, "clients registered", func() bool { return s.Stats().Clients == 2 })
	_, _ = out.Write([]byte("before"))
	n, err := s.DisconnectClients(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("DisconnectClients = %d, %v; want 2, nil", n, err)
	}
	s.mu.Lock()
	left := len(s.clients)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d clients still registered after DisconnectClients returned", left)
	}
	for i, c := range []*net.UnixConn{c1, c2} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		var got []string
		for {
			n, err := c.Read(buf)
			if err != nil || n == 0 {
				break
			}
			got = append(got, fmt.Sprintf("%d:%s", buf[0], buf[1:n]))
		}
		if len(got) != 1 || got[0] != fmt.Sprintf("%d:before", AttachPipeStdout) {
			t.Errorf("client %d got %q before its end, want only the queued output (no done message)", i, got)
		}
	}
	// No client is left: DisconnectClients has nothing to do.
	if n, err := s.DisconnectClients(context.Background()); n != 0 || err != nil {
		t.Errorf("second DisconnectClients = %d, %v", n, err)
	}
	c3 := dial(t, path)
	waitUntil(t, "new client registered", func() bool { return s.Stats().Clients == 3 })
	_, _ = out.Write([]byte("after"))
	_ = c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	if n, err := c3.Read(buf); err != nil || string(buf[1:n]) != "after" {
		t.Errorf("client connected after the disconnect: %q, %v", buf[:n], err)
	}
}
