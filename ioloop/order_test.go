package ioloop

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// timedRecord is one chunk a timedSink got.
type timedRecord struct {
	s Stream
	p string
	t time.Time
}

// timedSink records the chunks it gets with their read time, taking
// delay per chunk: a slow log disk.
type timedSink struct {
	delay time.Duration
	mu    sync.Mutex // the test reads recs while loops run
	recs  []timedRecord
}

func (k *timedSink) WriteChunk(s Stream, p []byte) error {
	return k.WriteChunkAt(s, p, time.Now())
}

func (k *timedSink) WriteChunkAt(s Stream, p []byte, t time.Time) error {
	time.Sleep(k.delay)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.recs = append(k.recs, timedRecord{s: s, p: string(p), t: t})
	return nil
}

func (k *timedSink) Reopen() error { return nil }
func (k *timedSink) Close() error  { return nil }

// lines returns the lines in the order the sink got them, and whether
// their read times never went back.
func (k *timedSink) lines() (lines []string, monotonic bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	monotonic = true
	for i, r := range k.recs {
		if i > 0 && r.t.Before(k.recs[i-1].t) {
			monotonic = false
		}
		lines = append(lines, strings.Split(strings.TrimSuffix(r.p, "\n"), "\n")...)
	}
	return lines, monotonic
}

// has reports whether the sink got a chunk of stream s.
func (k *timedSink) has(s Stream) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range k.recs {
		if r.s == s {
			return true
		}
	}
	return false
}

// pairInversions counts the N for which "err N" came before "out N".
func pairInversions(t *testing.T, lines []string, pairs int) int {
	t.Helper()
	pos := map[string]int{}
	for i, l := range lines {
		pos[l] = i
	}
	if len(pos) != 2*pairs || len(lines) != 2*pairs {
		t.Fatalf("%d lines (%d distinct), want %d", len(lines), len(pos), 2*pairs)
	}
	n := 0
	for i := 1; i <= pairs; i++ {
		if pos[fmt.Sprintf("err %d", i)] < pos[fmt.Sprintf("out %d", i)] {
			n++
		}
	}
	return n
}

// teeRecorder is one tee writer shared by both loops, like an attach
// client: it records the lines in the order it got them.
type teeRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (w *teeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, strings.Split(strings.TrimSuffix(string(p), "\n"), "\n")...)
	return len(p), nil
}

// runLoops runs a stdout and a stderr ReadLoop into log (and tee, if not
// nil) until both pipes reach EOF; write gets the pipes' write ends (and
// must close them).
func runLoops(t *testing.T, log *Log, write func(wo, we *os.File), tee ...io.Writer) {
	t.Helper()
	ro, wo, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	re, we, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, l := range []struct {
		r *os.File
		s Stream
	}{{ro, Stdout}, {re, Stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = l.r.Close() }()
			if _, err := ReadLoop(l.r, l.s, log, nil, tee...); err != nil {
				t.Errorf("%s loop: %v", l.s, err)
			}
		}()
	}
	// A stderr read before the stdout loop began is not ordered (see
	// ReadLoop): wait for it, as the monitor's container does not write
	// before it is started.
	for log.order.stdout.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	write(wo, we)
	wg.Wait()
}

// TestReadLoopOrderSlowSink: a process writing "out N" to stdout and then
// "err N" to stderr (busybox sh, one write each) gets its pairs in order,
// in the log and for a tee writer shared by both streams (as an attach
// client is), and its read times never go back, also when every log write
// is slow.
func TestReadLoopOrderSlowSink(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("needs /bin/busybox")
	}
	const pairs = 200
	script := fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo out $i; echo err $i >&2; i=$((i+1)); done`, pairs)
	for _, delay := range []time.Duration{0, 200 * time.Microsecond} {
		t.Run(fmt.Sprintf("delay=%v", delay), func(t *testing.T) {
			for range 5 {
				sink := &timedSink{delay: delay}
				tee := &teeRecorder{}
				runLoops(t, NewLog(sink), func(wo, we *os.File) {
					cmd := exec.Command("/bin/busybox", "sh", "-c", script)
					cmd.Stdout, cmd.Stderr = wo, we
					err := cmd.Run()
					_, _ = wo.Close(), we.Close()
					if err != nil {
						t.Error(err)
					}
				}, tee)
				lines, mono := sink.lines()
				if n := pairInversions(t, lines, pairs); n != 0 {
					t.Errorf("%d of %d pairs inverted in the log", n, pairs)
				}
				if n := pairInversions(t, tee.lines, pairs); n != 0 {
					t.Errorf("%d of %d pairs inverted for the tee writer (an attach client)", n, pairs)
				}
				if !mono {
					t.Error("a chunk's read time is older than the one before")
				}
			}
		})
	}
}

// TestReadLoopOrderStdoutFirst: when both pipes hold data as the loops
// start, there is no telling which was first: stdout is logged first.
func TestReadLoopOrderStdoutFirst(t *testing.T) {
	for range 20 {
		sink := &timedSink{}
		runLoops(t, NewLog(sink), func(wo, we *os.File) {
			for _, w := range []struct {
				f *os.File
				s string
			}{{wo, "out 1\n"}, {we, "err 1\n"}} {
				if _, err := w.f.WriteString(w.s); err != nil {
					t.Error(err)
				}
			}
			_, _ = wo.Close(), we.Close()
		})
		// The loops start after the writes (runLoops starts them first,
		// but they may read before the second write): out must never
		// follow err.
		if lines, _ := sink.lines(); pairInversions(t, lines, 1) != 0 {
			t.Fatalf("stderr logged before stdout: %q", lines)
		}
	}
}

// TestReadLoopOrderNoStarvation: a stdout that never stops does not keep
// a stderr line out of the log: the stdout loop gets one turn per held
// stderr chunk, not until its pipe is empty.
func TestReadLoopOrderNoStarvation(t *testing.T) {
	sink := &timedSink{}
	var stop atomic.Bool
	runLoops(t, NewLog(sink), func(wo, we *os.File) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			line := bytes.Repeat([]byte("o"), 4095)
			line = append(line, '\n')
			for !stop.Load() {
				if _, err := wo.Write(line); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		time.Sleep(10 * time.Millisecond) // the flood is under way
		if _, err := we.WriteString("err\n"); err != nil {
			t.Error(err)
		}
		deadline := time.Now().Add(time.Minute) // hang guard, not a timing assertion
		for !sink.has(Stderr) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !sink.has(Stderr) {
			t.Error("the stderr line was not logged while stdout kept writing")
		}
		stop.Store(true)
		<-done
		_, _ = wo.Close(), we.Close()
	})
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	return len(p), nil
}

// TestReadLoopBlockedTeeReopen: a tee writer that blocks holds up the
// container's reads (they are ordered), but not a ReopenLog, which waits
// only for a log write.
func TestReadLoopBlockedTeeReopen(t *testing.T) {
	c, _ := openTestCRI(t, 0)
	log := NewLog(c)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tee := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = ReadLoop(r, Stdout, log, nil, tee)
	}()
	if _, err := w.WriteString("x\n"); err != nil {
		t.Fatal(err)
	}
	<-tee.entered
	reopened := make(chan error, 1)
	go func() { reopened <- log.Reopen() }()
	select {
	case err := <-reopened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // hang guard
		t.Fatal("Reopen waited for the blocked tee writer")
	}
	close(tee.release)
	_ = w.Close()
	<-done
	_ = r.Close()
}

// stuckSink blocks the writes of stdout chunks until release is closed.
type stuckSink struct {
	entered chan struct{}
	release chan struct{}
}

func (k *stuckSink) WriteChunk(s Stream, _ []byte) error {
	if s == Stdout {
		select {
		case k.entered <- struct{}{}:
		default:
		}
		<-k.release
	}
	return nil
}
func (k *stuckSink) Reopen() error { return nil }
func (k *stuckSink) Close() error  { return nil }

// TestReadLoopOrderStuckWriteEOF: while stdout's log write is stuck (a
// frozen log disk), the stderr loop still sees its EOF and ends, with and
// without MaxLine, so the drain policy does not take stderr for a stream
// held open by a leftover process.
func TestReadLoopOrderStuckWriteEOF(t *testing.T) {
	for _, maxLine := range []int{0, 4096} {
		sink := &stuckSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
		log := NewLogWith(LogOptions{MaxLine: maxLine}, sink)
		ro, wo, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		re, we, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		outDone, errDone := make(chan struct{}), make(chan struct{})
		go func() { defer close(outDone); _, _ = ReadLoop(ro, Stdout, log, nil) }()
		go func() { defer close(errDone); _, _ = ReadLoop(re, Stderr, log, nil) }()
		if _, err := wo.WriteString("stuck\n"); err != nil {
			t.Fatal(err)
		}
		<-sink.entered
		_ = we.Close()
		select {
		case <-errDone:
		case <-time.After(time.Minute): // hang guard
			t.Errorf("maxLine %d: the stderr loop did not see its EOF while stdout's write was stuck", maxLine)
		}
		close(sink.release)
		_ = wo.Close()
		<-outDone
		<-errDone
		_, _ = ro.Close(), re.Close()
	}
}
