package ioloop

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// benchCRIWrite writes full 32 KiB chunks of lineLen-byte lines (newline
// included) to a CRI log in a temp file. Every 1024 chunks the file is
// emptied outside the timer so the benchmark measures formatting and
// write(2), not disk space.
func benchCRIWrite(b *testing.B, lineLen int) {
	line := append(bytes.Repeat([]byte("x"), lineLen-1), '\n')
	p := bytes.Repeat(line, readBufSize/lineLen)
	c, err := OpenCRILog(filepath.Join(b.TempDir(), "ctr.log"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	lines := len(p) / lineLen
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := c.WriteChunk(Stdout, p); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 1023 {
			b.StopTimer()
			if err := c.file.f.Truncate(0); err != nil {
				b.Fatal(err)
			}
			if _, err := c.file.f.Seek(0, io.SeekStart); err != nil {
				b.Fatal(err)
			}
			c.file.off = 0
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lines), "ns/line")
}

// BenchmarkCRIWrite100B: 100-byte lines, the logging yardstick of
// docs/architecture.md, "Performance budgets".
func BenchmarkCRIWrite100B(b *testing.B) { benchCRIWrite(b, 100) }

// BenchmarkCRIWrite2B: "x\n" lines, the worst case for per-record overhead.
func BenchmarkCRIWrite2B(b *testing.B) { benchCRIWrite(b, 2) }

// BenchmarkReadLoopPipeCRI100B: end to end through a real pipe, a writer
// goroutine producing 100-byte lines as fast as it can.
func BenchmarkReadLoopPipeCRI100B(b *testing.B) { benchReadLoopPipe(b, pipeBench{}) }

// BenchmarkReadLoopPipeCRI100BLimited: the same under a log rate limit far
// above the load (1 PiB/s), the cost of the bucket itself.
func BenchmarkReadLoopPipeCRI100BLimited(b *testing.B) {
	benchReadLoopPipe(b, pipeBench{lim: RateLimit{Rate: maxSize, Burst: maxSize}})
}

// BenchmarkReadLoopPipeCRI100BCounted is BenchmarkReadLoopPipeCRI100B with
// the live metric counters on: the cost of metrics on the log path.
func BenchmarkReadLoopPipeCRI100BCounted(b *testing.B) {
	benchReadLoopPipe(b, pipeBench{cnt: new(Counters)})
}

// BenchmarkReadLoopPipeSmallWrites: a writer producing one 100-byte line
// per write(2), so most reads bring one line: the per-chunk cost (locks,
// timestamp, syscalls) dominates.
func BenchmarkReadLoopPipeSmallWrites(b *testing.B) {
	benchReadLoopPipe(b, pipeBench{lineWrites: true})
}

// BenchmarkReadLoopPipeStderrCRI100B: 100-byte lines flooding stderr while
// the container's stdout loop runs idle beside it, the case where the
// stderr loop checks stdout's pipe before every hand-off.
func BenchmarkReadLoopPipeStderrCRI100B(b *testing.B) {
	benchReadLoopPipe(b, pipeBench{stderr: true})
}

// pipeBench is one variant of the read-loop-through-a-pipe benchmark.
type pipeBench struct {
	lineWrites bool      // one line per write(2), not readBufSize of them
	stderr     bool      // write to stderr, with an idle stdout loop beside it
	lim        RateLimit // the log's rate limit (zero: none)
	cnt        *Counters // the loop's metric counters (nil: none)
}

func benchReadLoopPipe(b *testing.B, v pipeBench) {
	p := append(bytes.Repeat([]byte("x"), 99), '\n')
	if !v.lineWrites {
		p = bytes.Repeat(p, readBufSize/100)
	}
	c, err := OpenCRILog(filepath.Join(b.TempDir(), "ctr.log"), 256<<20)
	if err != nil {
		b.Fatal(err)
	}
	log := NewLog(c)
	defer func() { _ = log.Close() }()
	if v.lim.Enabled() {
		log.SetRateLimiter(NewRateLimiter(v.lim, nil))
	}
	stream := Stdout
	if v.stderr {
		stream = Stderr
		ro, wo, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		idle := make(chan struct{})
		go func() {
			defer close(idle)
			_, _ = ReadLoop(ro, Stdout, log, nil)
		}()
		defer func() {
			_ = wo.Close()
			<-idle
			_ = ro.Close()
		}()
	}
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	go func() {
		defer func() { _ = w.Close() }()
		for range b.N {
			if _, err := w.Write(p); err != nil {
				return
			}
		}
	}()
	st, err := ReadLoopCounted(r, stream, log, v.cnt, nil)
	b.StopTimer()
	_ = r.Close()
	if err != nil || st.Bytes != uint64(b.N*len(p)) {
		b.Fatalf("%v, %+v", err, st)
	}
	if v.cnt != nil && v.cnt.WrittenBytes.Load() != st.Bytes {
		b.Fatalf("counted %d bytes written, read %d", v.cnt.WrittenBytes.Load(), st.Bytes)
	}
}
