package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// streamSize is the size of the stream the log tests push through.
const streamSize = 50 << 20

// mixedStream returns deterministic bytes of full lines of random lengths
// (a few far longer than a read buffer, so they become P…P F records),
// ending with a partial line.
func mixedStream(size int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 0, size)
	for len(b) < size-100 {
		n := r.IntN(200)
		if r.IntN(50) == 0 {
			n = 40000 + r.IntN(100000)
		}
		for range n {
			b = append(b, byte('!'+r.IntN(90)))
		}
		b = append(b, '\n')
	}
	b = b[:min(len(b), size-100)]
	return append(b, []byte("no newline at the end")...)
}

// streamBundle makes a bundle whose container cats data to stdout.
func streamBundle(t *testing.T, data []byte) string {
	bundle := monitortest.Bundle(t, "cat", "/data")
	if err := os.WriteFile(filepath.Join(bundle, "rootfs/data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return bundle
}

// gate is a Stdout tee that pauses the stream every step bytes and lets
// the test act (rename + ReopenLog) while the container is still writing.
type gate struct {
	step    int64
	seen    atomic.Int64
	next    int64
	left    int // pauses still to make
	reached chan struct{}
	resume  chan struct{}
}

func (g *gate) Write(p []byte) (int, error) {
	n := g.seen.Add(int64(len(p)))
	if g.left > 0 && n >= g.next {
		g.left--
		g.next += g.step
		g.reached <- struct{}{}
		<-g.resume
	}
	return len(p), nil
}

func TestLogStreamByteExact(t *testing.T) {
	data := mixedStream(streamSize)
	tests := []struct {
		name    string
		reopens int
		maxSize uint64
	}{
		{name: "plain"},
		{name: "reopen20", reopens: 20},
		{name: "maxsize", maxSize: 1 << 20},
	}
	m := newTestMonitor(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPaths(t)
			id := "stream-" + tt.name
			req := p.request(id, streamBundle(t, data))
			req.LogDrivers[0].MaxSize = tt.maxSize
			g := &gate{reached: make(chan struct{}), resume: make(chan struct{})}
			if tt.reopens > 0 {
				g.step = int64(len(data) / (tt.reopens + 1))
				g.next = g.step
				g.left = tt.reopens
			}
			req.Stdout = g
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := m.CreateContainer(ctx, req); err != nil {
				t.Fatal(err)
			}
			if err := m.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
			var rotated []string
			for i := range tt.reopens {
				<-g.reached
				old := fmt.Sprintf("%s.%02d", p.log, i)
				if err := os.Rename(p.log, old); err != nil {
					t.Fatal(err)
				}
				if err := m.ReopenLog(ctx, id); err != nil {
					t.Fatal(err)
				}
				rotated = append(rotated, old)
				g.resume <- struct{}{}
			}
			st, err := m.Wait(ctx, id)
			if err != nil || st.Code != 0 {
				t.Fatalf("wait: %+v %v", st, err)
			}
			// Concatenate the rotated files in order, as kubelet reads them.
			var all bytes.Buffer
			for _, f := range append(rotated, p.log) {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				all.Write(b)
			}
			joined := filepath.Join(p.dir, "joined.log")
			if err := os.WriteFile(joined, all.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, stderr := parseLog(t, joined)
			if len(stderr) != 0 {
				t.Errorf("stderr has %d bytes", len(stderr))
			}
			if tt.maxSize > 0 {
				if uint64(all.Len()) > tt.maxSize {
					t.Errorf("log is %d bytes, max %d", all.Len(), tt.maxSize)
				}
				if len(stdout) == 0 || !bytes.HasSuffix(data, stdout) {
					t.Errorf("truncated log (%d bytes of content) is not a suffix of the stream", len(stdout))
				}
				return
			}
			if !bytes.Equal(stdout, data) {
				t.Errorf("log content differs: got %d bytes, want %d; first difference at %d",
					len(stdout), len(data), firstDiff(stdout, data))
			}
			if tt.reopens > 0 && len(rotated) != tt.reopens {
				t.Errorf("rotated %d times", len(rotated))
			}
			_ = m.Delete(ctx, id)
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestStdinPipe feeds Input through the container and back.
func TestStdinPipe(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	req := p.request("stdin", monitortest.Bundle(t, "cat"))
	req.Stdin = true
	req.Input = r
	go func() {
		_, _ = io.WriteString(w, "from stdin\npartial")
		_ = w.Close()
	}()
	if st := runToExit(t, m, req); st.Code != 0 {
		t.Fatalf("status %+v", st)
	}
	stdout, _ := parseLog(t, p.log)
	if string(stdout) != "from stdin\npartial" {
		t.Fatalf("stdout = %q", stdout)
	}
}
