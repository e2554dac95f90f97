package ioloop

import (
	"bytes"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FuzzAttachSocket runs one client of a real attach socket: it sends
// arbitrary stdin messages (in, cut into messages at the lengths in cuts;
// a zero length is an empty message; at most a few after the first empty
// one), ends its stdin by half-closing or closing, while the container writes out, cut the same way and spread
// over stdout and stderr. flags bit 0 is stop-after-stdin-EOF, bit 1 a
// full close instead of a half-close.
//
// The container's stdin must get exactly the bytes of the messages before
// the first empty one (which is stdin EOF, as a half-close is), each cut at
// the 128 KiB read buffer; CloseStdin must be called once exactly when the
// listener stops after stdin EOF. A half-closed client must get every
// output byte of each stream in order, in messages of at most
// 1+AttachMaxPayload bytes tagged with their stream, then one done
// message; nothing may be dropped for it. The server must then close
// without leaking a goroutine (TestMain runs goleak).
func FuzzAttachSocket(f *testing.F) {
	dir := f.TempDir()
	n := 0 // inputs of one process run one at a time
	f.Add([]byte("ls -l\nexit\n"), []byte{6, 5}, []byte("total 0\nbye\n"), byte(1))
	f.Add([]byte("ab\x00c\x00d"), []byte{4, 1, 0, 1}, []byte(nil), byte(0))
	f.Add(bytes.Repeat([]byte("y"), 20000), []byte(nil), bytes.Repeat([]byte("z"), 3*AttachMaxPayload+1), byte(2))
	f.Fuzz(func(t *testing.T, in, cuts, out []byte, flags byte) {
		n++
		path := filepath.Join(dir, "attach-"+strconv.Itoa(n))
		stop, fullClose := flags&1 != 0, flags&2 != 0
		stdin := &fakeStdin{}
		s := NewAttachServer(AttachOptions{Stdin: stdin})
		defer func() { _ = s.Close() }()
		outW, errW := s.Stream(Stdout), s.Stream(Stderr)
		if err := s.Listen(path, stop); err != nil {
			t.Fatal(err)
		}
		c := dial(t, path)
		fuzzWait(t, "client registered", func() bool { return s.Stats().Clients == 1 })

		// Stdin: the server reads messages until the first empty one.
		// After it, the client sends at most afterEOF more: nobody reads
		// them, and the kernel queues only a few (net.unix.max_dgram_qlen,
		// 10 by default) before a write blocks.
		const afterEOF = 8
		var want []byte
		eof, extra := false, 0
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second)) // a blocked write fails the input
		for _, m := range cutMessages(in, cuts) {
			if eof {
				if extra == afterEOF {
					break
				}
				extra++
			}
			if _, err := c.Write(m); err != nil {
				if errors.Is(err, unix.EMSGSIZE) {
					continue // larger than the socket's send buffer: never sent
				}
				t.Fatal(err)
			}
			if eof {
				continue
			}
			if len(m) == 0 {
				eof = true
				continue
			}
			want = append(want, m[:min(len(m), readBufSize)]...)
		}
		var err error
		if fullClose {
			err = c.Close()
		} else {
			err = c.CloseWrite()
		}
		if err != nil {
			t.Fatal(err)
		}
		fuzzWait(t, "stdin forwarded", func() bool { got, _ := stdin.state(); return len(got) >= len(want) })
		wantClosed := 0
		if stop {
			wantClosed = 1
			fuzzWait(t, "container stdin closed", func() bool { _, n := stdin.state(); return n >= 1 })
		}

		// Output, spread over both streams.
		var wantOut, wantErr []byte
		for _, ch := range cutChunks(out, cuts) {
			w, dst := outW, &wantOut
			if ch.s == Stderr {
				w, dst = errW, &wantErr
			}
			_, _ = w.Write([]byte(ch.p)) // never fails
			*dst = append(*dst, ch.p...)
		}
		_ = outW.Close() // never fails
		_ = errW.Close()
		if !fullClose {
			var gotOut, gotErr []byte
			frames := readFrames(t, c)
			for i, fr := range frames {
				switch {
				case fr.pipe == AttachPipeDone && i == len(frames)-1:
				case fr.pipe == AttachPipeStdout && len(fr.data) > 0:
					gotOut = append(gotOut, fr.data...)
				case fr.pipe == AttachPipeStderr && len(fr.data) > 0:
					gotErr = append(gotErr, fr.data...)
				default:
					t.Fatalf("message %d of %d: pipe %d with %d bytes", i, len(frames), fr.pipe, len(fr.data))
				}
			}
			if !bytes.Equal(gotOut, wantOut) || !bytes.Equal(gotErr, wantErr) {
				t.Fatalf("client got stdout %q stderr %q, want %q %q", gotOut, gotErr, wantOut, wantErr)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		got, closed := stdin.state()
		if got != string(want) || closed != wantClosed {
			t.Fatalf("container stdin got %q (closed %d times), want %q (closed %d times)", got, closed, want, wantClosed)
		}
		if st := s.Stats(); !fullClose && st.DroppedChunks != 0 {
			t.Fatalf("dropped %d chunks for a reading client", st.DroppedChunks)
		}
	})
}

// cutMessages splits data into messages at the lengths in cuts (a zero
// cut is an empty message); what is left after the cuts is one message.
func cutMessages(data, cuts []byte) [][]byte {
	var msgs [][]byte
	for _, c := range cuts {
		if len(data) == 0 {
			break
		}
		n := min(int(c), len(data))
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
	if len(data) > 0 {
		msgs = append(msgs, data)
	}
	return msgs
}

// fuzzWait is waitUntil with a finer poll, so an input costs
// milliseconds, not tens of them.
func fuzzWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}
