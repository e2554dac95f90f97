package netguard

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pair returns the server end of a fresh connection and registers the
// closing of both ends.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { _, _ = a.Close(), b.Close() })
	return a, b
}

// closed reports whether the peer of c has closed its end.
func closed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

func TestLimiterEvictsQuietThenRejects(t *testing.T) {
	var logs bytes.Buffer
	l := NewLimiter(3, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	var admitted []*Conn
	var clients []net.Conn
	for range 3 {
		s, c := pair(t)
		lc := l.Admit(s)
		if lc == nil {
			t.Fatal("refused below the limit")
		}
		admitted = append(admitted, lc)
		clients = append(clients, c)
	}
	admitted[1].Active()
	admitted[2].Active()

	// At the limit: the one quiet connection (the first) gives way.
	s, c4 := pair(t)
	fourth := l.Admit(s)
	if fourth == nil {
		t.Fatal("newcomer refused although a quiet connection could give way")
	}
	if !closed(clients[0]) {
		t.Error("the quiet connection was not closed")
	}
	if got := l.Stats(); got.Live != 3 || got.Evicted != 1 || got.Rejected != 0 {
		t.Errorf("stats %+v, want 3 live, 1 evicted", got)
	}

	// The newcomer is quiet itself; once it is active, the next one is
	// refused.
	fourth.Active()
	s, c5 := pair(t)
	if l.Admit(s) != nil {
		t.Fatal("admitted over the limit with every connection active")
	}
	if !closed(c5) {
		t.Error("the refused connection was not closed")
	}
	if got := l.Stats(); got.Live != 3 || got.Rejected != 1 {
		t.Errorf("stats %+v, want 3 live, 1 rejected", got)
	}

	// Closing frees the place (twice is harmless).
	_ = admitted[1].Close()
	_ = admitted[1].Close()
	_ = admitted[2].Close()
	if got := l.Stats(); got.Live != 1 {
		t.Errorf("live %d after two closes, want 1", got.Live)
	}
	s, _ = pair(t)
	if l.Admit(s) == nil {
		t.Error("refused after places were freed")
	}
	_ = c4
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("%d limit warnings for one flood, want 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "connection flood over"); n != 1 {
		t.Errorf("%d flood-over lines, want 1:\n%s", n, logs.String())
	}
}

func TestAcceptRetryLogsOncePerEpisode(t *testing.T) {
	var logs bytes.Buffer
	r := AcceptRetry{Log: slog.New(slog.NewTextHandler(&logs, nil)), What: "test"}
	done := make(chan struct{})
	for range 5 {
		if !r.Failed(syscall.EMFILE, done) {
			t.Fatal("Failed returned false with done open")
		}
	}
	r.Succeeded()
	// Flapping at the fd limit stays one episode.
	for range 3 {
		r.Failed(syscall.EMFILE, done)
		r.Succeeded()
	}
	if n := strings.Count(logs.String(), "accept failing"); n != 1 {
		t.Errorf("%d failure lines, want 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "accept recovered"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, logs.String())
	}
	if r.Errors() != 8 {
		t.Errorf("Errors() = %d, want 8", r.Errors())
	}
	close(done)
	if r.Failed(syscall.EMFILE, done) {
		t.Error("Failed returned true after done was closed")
	}
}

func TestTransient(t *testing.T) {
	for _, err := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		&net.OpError{Op: "accept", Err: syscall.EMFILE}} {
		if !Transient(err) {
			t.Errorf("Transient(%v) = false", err)
		}
	}
	if Transient(syscall.EBADF) {
		t.Error("Transient(EBADF) = true")
	}
}
