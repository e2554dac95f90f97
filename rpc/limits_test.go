package rpc

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/gomon-dev/gomon/rpc/proto"
)

// flakyListener fails its first accepts with the errors in fails, then
// accepts from the real listener.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.fails) > 0 {
		err := l.fails[0]
		l.fails = l.fails[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: accept errors such as EMFILE used to end
// Serve, and with it the daemon and its pod.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "conmon.sock")
	inner, err := net.Listen("unix", sock)
	must(t, err)
	emfile := &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	l := &flakyListener{Listener: inner, fails: []error{emfile, emfile, emfile, &net.OpError{Op: "accept", Err: syscall.ENOBUFS}}}
	s := NewServer(&recorder{}, testInfo, nil)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		must(t, s.Close())
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})

	c, err := net.Dial("unix", sock)
	must(t, err)
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, rel := proto.Conmon(conn.Bootstrap(ctx)).Version(ctx, nil)
	defer rel()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("Version after accept errors: %v", err)
	}
	if got := s.LimitStats().AcceptErrors; got != 4 {
		t.Errorf("AcceptErrors = %d, want 4", got)
	}
}

// header is a one-segment stream header announcing words words.
func header(words uint32) []byte {
	h := make([]byte, 8)
	binary.LittleEndian.PutUint32(h[4:], words)
	return h
}

// TestOversizedMessageRefused: a message announced over MaxMessageSize
// ends its connection at once, without the allocation; the server goes
// on serving.
func TestOversizedMessageRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "conmon.sock")
	l, err := net.Listen("unix", sock)
	must(t, err)
	s := NewServer(&recorder{}, testInfo, nil)
	go func() { _ = s.Serve(l) }() // ends with Close below
	t.Cleanup(func() { must(t, s.Close()) })

	for _, tt := range []struct {
		name string
		hdr  []byte
	}{
		{"just over the limit", header(MaxMessageSize/8 - 1 + 1)},
		{"capnp-go's default", header(64<<20/8 - 1)},
		{"too many segments", []byte{0xff, 0xff, 0, 0, 1, 0, 0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", sock)
			must(t, err)
			defer func() { _ = c.Close() }()
			_, err = c.Write(tt.hdr)
			must(t, err)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("connection not closed by the server: %v", err)
			}
		})
	}
	if got := s.LimitStats().TooLarge; got != 3 {
		t.Errorf("TooLarge = %d, want 3", got)
	}

	// A legitimate large request (1 MiB of metadata) is served.
	c, err := net.Dial("unix", sock)
	must(t, err)
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, rel := proto.Conmon(conn.Bootstrap(ctx)).Version(ctx, func(p proto.Conmon_version_Params) error {
		r, err := p.NewRequest()
		if err != nil {
			return err
		}
		md, err := r.NewMetadata(1)
		if err != nil {
			return err
		}
		if err := md.At(0).SetKey("baggage"); err != nil {
			return err
		}
		return md.At(0).SetValue(strings.Repeat("x", 1<<20))
	})
	defer rel()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("Version with 1 MiB of metadata: %v", err)
	}
}

// TestMessageGrowsWithWhatArrives: a large message sent in pieces, as a
// slow peer would, is read in chunks and joined correctly.
func TestMessageGrowsWithWhatArrives(t *testing.T) {
	a, b := net.Pipe()
	defer func() { _ = a.Close() }()
	s := NewServer(&recorder{}, testInfo, nil)
	cd := &codec{conn: b, s: s}
	const words = 1 << 18 // 2 MiB
	msg := make([]byte, 8+8*words)
	copy(msg, header(words))
	go func() {
		// In pieces, as a slow peer would send it.
		for off := 0; off < len(msg); off += 100 << 10 {
			_, _ = a.Write(msg[off:min(off+100<<10, len(msg))])
		}
	}()
	m, err := cd.Decode()
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if size, err := m.TotalSize(); err != nil || size != 8+8*words {
		t.Errorf("decoded message of %d bytes (%v), want %d", size, err, 8+8*words)
	}
}

// TestPendingBytesBounded: when other connections already hold
// MaxPendingBytes of partial messages, a large message is refused, and a
// small one (under 64 KiB) is still read.
func TestPendingBytesBounded(t *testing.T) {
	s := NewServer(&recorder{}, testInfo, nil)
	s.lim.pending.Store(MaxPendingBytes) // what stalled peers hold
	decode := func(words uint32) error {
		a, b := net.Pipe()
		defer func() { _, _ = a.Close(), b.Close() }()
		msg := make([]byte, 8+8*int(words))
		copy(msg, header(words))
		go func() { _, _ = a.Write(msg) }() // ends when b is closed
		_, err := (&codec{conn: b, s: s}).Decode()
		return err
	}
	if err := decode(1 << 17); !errors.Is(err, ErrServerBusy) { // 1 MiB
		t.Errorf("1 MiB message with the budget spent: %v, want ErrServerBusy", err)
	}
	if err := decode(1 << 10); err != nil { // 8 KiB
		t.Errorf("8 KiB message with the budget spent: %v", err)
	}
	if got := s.LimitStats().Busy; got != 1 {
		t.Errorf("Busy = %d, want 1", got)
	}
	if got := s.lim.pending.Load(); got != MaxPendingBytes {
		t.Errorf("pending %d after both decodes, want %d (nothing leaked)", got, MaxPendingBytes)
	}
}

// TestSendToNonReaderEnds: a peer that does not read its answers makes
// the send fail after MessageTimeout instead of blocking for good.
func TestSendToNonReaderEnds(t *testing.T) {
	a, b := net.Pipe() // unbuffered: nothing is taken unless a reads
	defer func() { _, _ = a.Close(), b.Close() }()
	cd := &codec{conn: b, enc: capnp.NewEncoder(b), s: NewServer(&recorder{}, testInfo, nil)}
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	must(t, err)
	_, err = capnp.NewRootStruct(seg, capnp.ObjectSize{DataSize: 8})
	must(t, err)
	start := time.Now()
	if err := cd.Encode(msg); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Encode to a peer that does not read: %v, want a deadline error", err)
	}
	if d := time.Since(start); d < MessageTimeout/2 {
		t.Errorf("send abandoned after %v, before the %v deadline", d, MessageTimeout)
	}
}
