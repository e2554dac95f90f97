package ioloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"
)

// scriptedReader returns one scripted chunk per Read, then io.EOF.
type scriptedReader struct{ chunks [][]byte }

func (r *scriptedReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	if n < len(r.chunks[0]) {
		r.chunks[0] = r.chunks[0][n:]
	} else {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

// recordingSink records chunks and fails the calls whose index is in fail.
type recordingSink struct {
	calls  int
	fail   map[int]bool
	got    []byte
	reopen int
	closed bool
}

func (s *recordingSink) WriteChunk(_ Stream, p []byte) error {
	i := s.calls
	s.calls++
	if s.fail[i] {
		return fmt.Errorf("sink call %d: %w", i, unix.ENOSPC)
	}
	s.got = append(s.got, p...)
	return nil
}
func (s *recordingSink) Reopen() error { s.reopen++; return nil }
func (s *recordingSink) Close() error  { s.closed = true; return nil }

// failingWriter fails the writes whose index is in fail, writing half first.
type failingWriter struct {
	calls int
	fail  map[int]bool
	got   []byte
}

func (w *failingWriter) Write(p []byte) (int, error) {
	i := w.calls
	w.calls++
	if w.fail[i] {
		w.got = append(w.got, p[:len(p)/2]...)
		return len(p) / 2, errors.New("terminal gone")
	}
	w.got = append(w.got, p...)
	return len(p), nil
}

func TestReadLoopFailingSink(t *testing.T) {
	var chunks [][]byte
	var all []byte
	for i := range 10 {
		c := []byte(strings.Repeat(fmt.Sprint(i), 10+i) + "\n")
		if i == 5 {
			c = c[:len(c)-1] // a partial
		}
		chunks = append(chunks, c)
		all = append(all, c...)
	}
	sizes := func(idx ...int) (n uint64) {
		for _, i := range idx {
			n += uint64(len(chunks[i]))
		}
		return n
	}
	good := &recordingSink{}
	bad := &recordingSink{fail: map[int]bool{2: true, 3: true, 4: true, 7: true}}
	tee := &failingWriter{fail: map[int]bool{9: true}}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))

	st, err := ReadLoop(&scriptedReader{chunks: append([][]byte(nil), chunks...)}, Stdout, NewLog(good, bad), logger, tee)
	if err != nil {
		t.Fatalf("ReadLoop: %v", err)
	}
	want := Stats{
		Bytes: uint64(len(all)), Chunks: 10, Lines: 9, Partials: 1,
		WriteErrors:  5,
		DroppedBytes: sizes(2, 3, 4, 7) + (sizes(9) - sizes(9)/2),
	}
	if st != want {
		t.Fatalf("stats %+v\nwant  %+v", st, want)
	}
	if !bytes.Equal(good.got, all) {
		t.Fatal("the healthy sink missed output because another sink failed")
	}
	var wantBad []byte
	for i, c := range chunks {
		if !bad.fail[i] {
			wantBad = append(wantBad, c...)
		}
	}
	if !bytes.Equal(bad.got, wantBad) {
		t.Fatal("failing sink was not retried with later chunks")
	}
	if bad.calls != 10 {
		t.Fatalf("failing sink got %d calls, want 10", bad.calls)
	}
	// Two bursts of the Log, one of the tee: one warning each, plus two
	// recoveries and one "still failing" at the end.
	out := logs.String()
	if n := strings.Count(out, "dropping output until it recovers"); n != 3 {
		t.Fatalf("%d burst warnings, want 3:\n%s", n, out)
	}
	if n := strings.Count(out, "recovered"); n != 2 {
		t.Fatalf("%d recoveries, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "still failing at end of stream"); n != 1 {
		t.Fatalf("%d end-of-stream warnings, want 1:\n%s", n, out)
	}
}

func TestReadLoopReaderEnds(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		r       io.Reader
		wantErr error
		want    Stats
	}{
		{"error after data", io.MultiReader(strings.NewReader("abc"), iotestErrReader{boom}), boom,
			Stats{Bytes: 3, Chunks: 1, Partials: 1}},
		{"EOF together with data", iotest.DataErrReader(strings.NewReader("a\nb\n")), nil,
			Stats{Bytes: 4, Chunks: 1, Lines: 2}},
		{"error together with data", dataAndErr{"x\n", boom}, boom, Stats{Bytes: 2, Chunks: 1, Lines: 1}},
		{"EIO is EOF", iotestErrReader{unix.EIO}, nil, Stats{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recordingSink{}
			st, err := ReadLoop(tt.r, Stderr, NewLog(sink), nil)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if st != tt.want {
				t.Fatalf("stats %+v, want %+v", st, tt.want)
			}
			if uint64(len(sink.got)) != tt.want.Bytes {
				t.Fatalf("sink got %q", sink.got)
			}
		})
	}
}

// dataAndErr returns its data and its error from the first Read.
type dataAndErr struct {
	data string
	err  error
}

func (d dataAndErr) Read(p []byte) (int, error) { return copy(p, d.data), d.err }

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

// Closing the read end stops the loop with an error wrapping os.ErrClosed.
func TestReadLoopClosedPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	done := make(chan error, 1)
	go func() {
		_, err := ReadLoop(r, Stdout, nil, nil)
		done <- err
	}()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = r.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("got %v, want os.ErrClosed", err)
	}
}

// genStream writes random output to w: lines of mixed lengths (some longer
// than a read buffer), partial writes, empty lines, binary bytes, in random
// write sizes. It returns what it wrote.
func genStream(rng *rand.Rand, w io.Writer, total int) ([]byte, error) {
	var out []byte
	for len(out) < total {
		var piece []byte
		switch k := rng.IntN(100); {
		case k < 60: // ordinary line
			piece = randLine(rng, rng.IntN(200))
			piece = append(piece, '\n')
		case k < 70: // empty line
			piece = []byte{'\n'}
		case k < 85: // partial write, no newline
			piece = randLine(rng, 1+rng.IntN(300))
		case k < 99: // several lines at once
			for range 1 + rng.IntN(50) {
				piece = append(piece, randLine(rng, rng.IntN(120))...)
				piece = append(piece, '\n')
			}
		default: // long line
			piece = randLine(rng, readBufSize+rng.IntN(3*readBufSize))
			piece = append(piece, '\n')
		}
		if _, err := w.Write(piece); err != nil {
			return out, err
		}
		out = append(out, piece...)
	}
	return out, nil
}

func randLine(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if rng.IntN(50) == 0 {
			b[i] = byte(rng.IntN(256))
			if b[i] == '\n' {
				b[i] = 0
			}
		} else {
			b[i] = byte(' ' + rng.IntN(95))
		}
	}
	return b
}

// End to end: two real pipes (stdout, stderr) with 12 MB of random output,
// both read loops sharing one Log with a CRI and a JSON sink. The CRI log
// must parse back byte-exact and the JSON log must have one entry per CRI
// record.
func TestReadLoopPipesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cri, err := OpenCRILog(filepath.Join(dir, "ctr.log"), 0)
	if err != nil {
		t.Fatal(err)
	}
	js, err := OpenJSONLog(filepath.Join(dir, "ctr.json"), 0)
	if err != nil {
		t.Fatal(err)
	}
	log := NewLog(cri, js)

	const perStream = 6 << 20
	type result struct {
		wrote []byte
		st    Stats
		err   error
	}
	run := func(s Stream, seed uint64) result {
		r, w, err := os.Pipe()
		if err != nil {
			return result{err: err}
		}
		var wg sync.WaitGroup
		var wrote []byte
		var werr error
		wg.Go(func() {
			defer func() { _ = w.Close() }()
			wrote, werr = genStream(rand.New(rand.NewPCG(seed, seed)), w, perStream)
		})
		st, err := ReadLoop(r, s, log, nil)
		_ = r.Close()
		wg.Wait()
		return result{wrote, st, errors.Join(err, werr)}
	}
	var wg sync.WaitGroup
	var out, errs result
	wg.Go(func() { out = run(Stdout, 1) })
	wg.Go(func() { errs = run(Stderr, 2) })
	wg.Wait()
	if err := errors.Join(out.err, errs.err, log.Close()); err != nil {
		t.Fatal(err)
	}

	gotOut, gotErr, err := ParseCRILog(bytes.NewReader(readFile(t, filepath.Join(dir, "ctr.log"))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotOut, out.wrote) {
		t.Fatalf("stdout differs: got %d bytes, wrote %d", len(gotOut), len(out.wrote))
	}
	if !bytes.Equal(gotErr, errs.wrote) {
		t.Fatalf("stderr differs: got %d bytes, wrote %d", len(gotErr), len(errs.wrote))
	}
	for _, r := range []result{out, errs} {
		if r.st.Bytes != uint64(len(r.wrote)) || r.st.WriteErrors != 0 || r.st.DroppedBytes != 0 {
			t.Fatalf("stats %+v for %d bytes", r.st, len(r.wrote))
		}
		if r.st.Lines != uint64(bytes.Count(r.wrote, []byte{'\n'})) {
			t.Fatalf("Lines %d, want %d", r.st.Lines, bytes.Count(r.wrote, []byte{'\n'}))
		}
	}
	criRecords := bytes.Count(readFile(t, filepath.Join(dir, "ctr.log")), []byte{'\n'})
	jsonRecords := bytes.Count(readFile(t, filepath.Join(dir, "ctr.json")), []byte{'\n'})
	wantRecords := int(out.st.Lines + out.st.Partials + errs.st.Lines + errs.st.Partials)
	if criRecords != wantRecords || jsonRecords != wantRecords {
		t.Fatalf("records: cri %d json %d, want %d", criRecords, jsonRecords, wantRecords)
	}
	t.Logf("stdout %+v", out.st)
	t.Logf("stderr %+v", errs.st)
}

// Concurrency marker: rotation (rename + Reopen) racing both writers loses
// and repeats nothing; concatenating the rotated files in order gives the
// exact streams. Run with -race.
func TestLogReopenConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ctr.log")
	cri, err := OpenCRILog(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	log := NewLog(cri)
	var wg sync.WaitGroup
	var want [3][]byte
	for _, s := range []Stream{Stdout, Stderr} {
		wg.Go(func() {
			for i := range 3000 {
				p := fmt.Appendf(nil, "%s line %d\n", s, i)
				if i%7 == 0 {
					p = p[:len(p)-1] // partial chunk
				}
				if err := log.WriteChunk(s, p); err != nil {
					t.Error(err)
					return
				}
				want[s] = append(want[s], p...)
			}
		})
	}
	rotations := 0
	wg.Go(func() {
		for i := range 50 {
			if err := os.Rename(path, fmt.Sprintf("%s.%03d", path, i)); err != nil {
				t.Error(err)
				return
			}
			if err := log.Reopen(); err != nil {
				t.Error(err)
				return
			}
			rotations++
		}
	})
	wg.Wait()
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := range rotations {
		all = append(all, readFile(t, fmt.Sprintf("%s.%03d", path, i))...)
	}
	all = append(all, readFile(t, path)...)
	out, errb, err := ParseCRILog(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, want[Stdout]) || !bytes.Equal(errb, want[Stderr]) {
		t.Fatalf("rotation lost or repeated bytes: stdout %d/%d stderr %d/%d",
			len(out), len(want[Stdout]), len(errb), len(want[Stderr]))
	}
}

func TestLogFanOutAndClose(t *testing.T) {
	a, b := &recordingSink{}, &recordingSink{fail: map[int]bool{0: true}}
	l := NewLog(a, b)
	err := l.WriteChunk(Stdout, []byte("x\n"))
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("WriteChunk error %v does not wrap the sink's", err)
	}
	if string(a.got) != "x\n" {
		t.Fatal("healthy sink skipped")
	}
	if err := l.WriteChunk(Stdout, nil); err != nil || a.calls != 1 {
		t.Fatalf("empty chunk: %v, calls %d", err, a.calls)
	}
	if err := l.Reopen(); err != nil || a.reopen != 1 || b.reopen != 1 {
		t.Fatalf("Reopen: %v", err)
	}
	if err := l.Close(); err != nil || !a.closed || !b.closed {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.WriteChunk(Stdout, []byte("y")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := l.Reopen(); !errors.Is(err, ErrClosed) {
		t.Fatalf("reopen after Close: %v", err)
	}
}

// openPtmx opens a pty master as a plain *os.File (so ReadLoop takes its
// raw, pollable path) and returns it with the slave's path.
func openPtmx(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty support: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// A pty master returns EIO once the slave side is closed; ReadLoop treats
// that as a clean EOF after draining what was written.
func TestReadLoopPtyEIO(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) (io.ReadCloser, string)
	}{
		{"containerd console", func(t *testing.T) (io.ReadCloser, string) {
			c, slave, err := console.NewPty()
			if err != nil {
				t.Skipf("no pty support: %v", err)
			}
			return c, slave
		}},
		{"raw os.File", func(t *testing.T) (io.ReadCloser, string) { return openPtmx(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, slavePath := tt.open(t)
			defer func() { _ = master.Close() }()
			slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cri, err := OpenCRILog(filepath.Join(dir, "ctr.log"), 0)
			if err != nil {
				t.Fatal(err)
			}
			log := NewLog(cri)
			var tee bytes.Buffer
			type res struct {
				st  Stats
				err error
			}
			done := make(chan res, 1)
			go func() {
				st, err := ReadLoop(master, Stdout, log, nil, &tee)
				done <- res{st, err}
			}()
			if _, err := slave.Write([]byte("hello\nworld\npartial")); err != nil {
				t.Fatal(err)
			}
			_ = slave.Close()
			r := <-done
			if r.err != nil {
				t.Fatalf("ReadLoop on pty after slave close: %v (EIO must be EOF)", r.err)
			}
			if err := log.Close(); err != nil {
				t.Fatal(err)
			}
			out, _, err := ParseCRILog(bytes.NewReader(readFile(t, filepath.Join(dir, "ctr.log"))))
			if err != nil {
				t.Fatal(err)
			}
			const want = "hello\r\nworld\r\npartial" // the pty's ONLCR adds \r
			if string(out) != want || tee.String() != want {
				t.Fatalf("log %q tee %q, want %q", out, tee.String(), want)
			}
			if r.st.Bytes != uint64(len(want)) {
				t.Fatalf("stats %+v", r.st)
			}
		})
	}
}

// notifyWriter collects everything and closes reached once it holds at
// least want bytes. Only the read loop writes to it.
type notifyWriter struct {
	mu      sync.Mutex
	buf     []byte
	want    int
	reached chan struct{}
}

func (w *notifyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before := len(w.buf)
	w.buf = append(w.buf, p...)
	if before < w.want && len(w.buf) >= w.want {
		close(w.reached)
	}
	return len(p), nil
}

// TestReadLoopPipeBursts writes bursts large enough to make the loop batch
// its reads (see batchDelay), each followed by a pause in which the pipe is
// empty, then a small tail and EOF: every byte must arrive, in order.
func TestReadLoopPipeBursts(t *testing.T) {
	tests := []struct {
		name   string
		bursts []int
	}{
		{name: "one burst of batchMin", bursts: []int{batchMin}},
		{name: "bursts over a read buffer", bursts: []int{3 * readBufSize, batchMin + 1, 5 * readBufSize}},
		{name: "small then large", bursts: []int{10, 2 * batchMin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Close() }()
			var want []byte
			nw := &notifyWriter{reached: make(chan struct{})}
			type result struct {
				st  Stats
				err error
			}
			done := make(chan result, 1)
			go func() {
				st, err := ReadLoop(r, Stdout, nil, nil, nw)
				done <- result{st, err}
			}()
			for i, n := range tt.bursts {
				burst := bytes.Repeat([]byte{byte('a' + i)}, n)
				want = append(want, burst...)
				nw.mu.Lock()
				nw.want, nw.reached = len(want), make(chan struct{})
				reached := nw.reached
				nw.mu.Unlock()
				if _, err := w.Write(burst); err != nil {
					t.Fatal(err)
				}
				<-reached // the loop drained the pipe: the next read finds it empty
			}
			want = append(want, "tail\n"...)
			if _, err := w.Write([]byte("tail\n")); err != nil {
				t.Fatal(err)
			}
			_ = w.Close()
			res := <-done
			if res.err != nil {
				t.Fatalf("ReadLoop: %v", res.err)
			}
			if !bytes.Equal(nw.buf, want) {
				t.Fatalf("got %d bytes, want %d (first difference at %d)", len(nw.buf), len(want), firstDiff(nw.buf, want))
			}
			if res.st.Bytes != uint64(len(want)) {
				t.Fatalf("Stats.Bytes = %d, want %d", res.st.Bytes, len(want))
			}
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

// TestReadLoopGrowsPipe checks that a read loop asks for a pipeSize pipe.
func TestReadLoopGrowsPipe(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		t.Skipf("SKIPPED: cannot read pipe-max-size: %v", err)
	}
	var maxSize int
	if _, err := fmt.Sscan(string(raw), &maxSize); err != nil {
		t.Fatalf("parse pipe-max-size %q: %v", raw, err)
	}
	if maxSize < pipeSize {
		t.Skipf("SKIPPED: pipe-max-size %d < %d", maxSize, pipeSize)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	done := make(chan error, 1)
	go func() {
		_, err := ReadLoop(r, Stdout, nil, nil)
		done <- err
	}()
	// The loop grows the pipe before its first read; a byte it has read
	// proves it got that far.
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if err := <-done; err != nil {
		t.Fatalf("ReadLoop: %v", err)
	}
	sz, err := unix.FcntlInt(r.Fd(), unix.F_GETPIPE_SZ, 0)
	_ = r.Close()
	if err != nil {
		t.Fatalf("F_GETPIPE_SZ: %v", err)
	}
	if sz < pipeSize {
		t.Fatalf("pipe size %d, want at least %d", sz, pipeSize)
	}
}
