package ioloop

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// stallingSink blocks its first WriteChunk until released, then records.
type stallingSink struct {
	mu      sync.Mutex
	got     []byte
	once    sync.Once
	stalled chan struct{} // closed when the first write blocks
	release chan struct{}
}

func (s *stallingSink) WriteChunk(_ Stream, p []byte) error {
	s.once.Do(func() {
		close(s.stalled)
		<-s.release
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, p...)
	return nil
}
func (s *stallingSink) Reopen() error { return nil }
func (s *stallingSink) Close() error  { return nil }

// A loop stuck in a sink write while the pipe fills and a leftover still
// holds the write end: its owner stops it with a read deadline. The loop
// finishes the stalled write, then counts (and drops) exactly what the
// pipe still held: every byte written is either logged or counted.
func TestReadLoopDeadlineCountsUnread(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close(); _ = w.Close() }()
	sink := &stallingSink{stalled: make(chan struct{}), release: make(chan struct{})}
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := ReadLoop(r, Stdout, NewLog(sink), nil)
		done <- result{st, err}
	}()
	data := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 600<<10/64)
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(data) // fits once the loop has grown the pipe
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
	if err := r.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	close(sink.release)
	res := <-done
	if !errors.Is(res.err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadLoop error %v, want a deadline error", res.err)
	}
	logged := uint64(len(sink.got))
	t.Logf("logged %d, unread %d of %d bytes", logged, res.st.UnreadBytes, len(data))
	if res.st.Bytes != logged {
		t.Errorf("Stats.Bytes %d, sink got %d", res.st.Bytes, logged)
	}
	if logged+res.st.UnreadBytes != uint64(len(data)) {
		t.Errorf("logged %d + unread %d != written %d: bytes went uncounted", logged, res.st.UnreadBytes, len(data))
	}
	if res.st.UnreadBytes == 0 {
		t.Errorf("nothing left unread: the test proved nothing")
	}
	if !bytes.Equal(sink.got, data[:logged]) {
		t.Errorf("logged bytes are not the stream's prefix")
	}
}
