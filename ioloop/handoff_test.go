package ioloop

import (
	"bytes"
	"errors"
	"io"
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
