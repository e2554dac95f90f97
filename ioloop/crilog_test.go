package ioloop

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCRISplitting(t *testing.T) {
	const ts = "2026-07-06T07:58:52Z"
	long := strings.Repeat("x", 100_000)
	tests := []struct {
		name   string
		chunks []chunk
		want   string
	}{
		{"empty chunk", []chunk{{Stdout, ""}}, ""},
		{"only newline", []chunk{{Stdout, "\n"}}, ts + " stdout F \n"},
		{"one line", []chunk{{Stdout, "hello\n"}}, ts + " stdout F hello\n"},
		{"multiple lines", []chunk{{Stderr, "a\nbb\n\nccc\n"}},
			ts + " stderr F a\n" + ts + " stderr F bb\n" + ts + " stderr F \n" + ts + " stderr F ccc\n"},
		{"trailing partial", []chunk{{Stdout, "a\nrest"}},
			ts + " stdout F a\n" + ts + " stdout P rest\n"},
		{"only partial", []chunk{{Stdout, "no newline"}}, ts + " stdout P no newline\n"},
		{"partial then rest in next chunk (no cross-chunk buffering)",
			[]chunk{{Stdout, "hel"}, {Stdout, "lo\nwor"}, {Stdout, "ld\n"}},
			ts + " stdout P hel\n" + ts + " stdout F lo\n" + ts + " stdout P wor\n" + ts + " stdout F ld\n"},
		{"long line split by chunks", []chunk{{Stdout, long}, {Stdout, long}, {Stdout, "\n"}},
			ts + " stdout P " + long + "\n" + ts + " stdout P " + long + "\n" + ts + " stdout F \n"},
		{"carriage return untouched", []chunk{{Stdout, "a\r\nb\r"}},
			ts + " stdout F a\r\n" + ts + " stdout P b\r\n"},
		{"interleaved streams", []chunk{{Stdout, "o1\n"}, {Stderr, "e1\n"}, {Stdout, "o2"}},
			ts + " stdout F o1\n" + ts + " stderr F e1\n" + ts + " stdout P o2\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, path := openTestCRI(t, 0)
			c.now = fixedNow(testTime)
			for _, ch := range tt.chunks {
				if err := c.WriteChunk(ch.s, []byte(ch.p)); err != nil {
					t.Fatalf("WriteChunk: %v", err)
				}
			}
			got := readFile(t, path)
			if string(got) != tt.want {
				t.Fatalf("file:\n%q\nwant:\n%q", trunc(got), trunc([]byte(tt.want)))
			}
			out, errb, err := ParseCRILog(bytes.NewReader(got))
			if err != nil {
				t.Fatalf("ParseCRILog: %v", err)
			}
			wantOut, wantErr := joinStreams(tt.chunks)
			if !bytes.Equal(out, wantOut) || !bytes.Equal(errb, wantErr) {
				t.Fatalf("parsed back stdout %q stderr %q, want %q %q", trunc(out), trunc(errb), trunc(wantOut), trunc(wantErr))
			}
		})
	}
}

func trunc(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return string(b)
}

// A chunk whose records exceed recordFlushSize is written in several pieces;
// the result must be the same as one write.
func TestCRIBigChunkOfTinyLines(t *testing.T) {
	c, path := openTestCRI(t, 0)
	c.now = fixedNow(testTime)
	p := bytes.Repeat([]byte("a\n"), readBufSize/2)
	p = append(p, "tail"...)
	if err := c.WriteChunk(Stdout, p); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, path)
	if want := (readBufSize/2)*(20+10+2) + 20 + 10 + 5; len(got) != want {
		t.Fatalf("file has %d bytes, want %d", len(got), want)
	}
	out, _, err := ParseCRILog(bytes.NewReader(got))
	if err != nil || !bytes.Equal(out, p) {
		t.Fatalf("round trip failed: err=%v equal=%v", err, bytes.Equal(out, p))
	}
}

func TestCRITimestampFormat(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		want string
	}{
		{"zero nanos omit fraction", time.Date(2026, 7, 6, 7, 58, 52, 0, time.UTC), "2026-07-06T07:58:52Z"},
		{"trailing zeros trimmed", time.Date(2026, 7, 6, 7, 58, 52, 123450000, time.UTC), "2026-07-06T07:58:52.12345Z"},
		{"all nine digits", time.Date(2026, 7, 6, 7, 58, 52, 123456789, time.UTC), "2026-07-06T07:58:52.123456789Z"},
		{"one nanosecond", time.Date(2026, 7, 6, 7, 58, 52, 1, time.UTC), "2026-07-06T07:58:52.000000001Z"},
		{"local zone converted to UTC", time.Date(2026, 7, 6, 9, 58, 52, 500000000, time.FixedZone("CEST", 2*3600)), "2026-07-06T07:58:52.5Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, path := openTestCRI(t, 0)
			c.now = fixedNow(tt.t)
			if err := c.WriteChunk(Stdout, []byte("x\n")); err != nil {
				t.Fatal(err)
			}
			if got, want := string(readFile(t, path)), tt.want+" stdout F x\n"; got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		})
	}
}

// With the real clock, timestamps are canonical and never go backwards
// from chunk to chunk (wall clock permitting).
func TestCRIRealClockTimestamps(t *testing.T) {
	c, path := openTestCRI(t, 0)
	for i := range 200 {
		if err := c.WriteChunk(Stdout, fmt.Appendf(nil, "%d\n", i)); err != nil {
			t.Fatal(err)
		}
	}
	data := readFile(t, path)
	if _, _, err := ParseCRILog(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	var prev time.Time
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		ts, _, _ := strings.Cut(line, " ")
		tm, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatal(err)
		}
		if tm.Before(prev) {
			t.Logf("wall clock went backwards: %v after %v", tm, prev)
		}
		prev = tm
	}
}

// Size accounting follows conmon-rs: each record costs
// len(content)+len(timestamp)+10 (+1 if partial); the record that would push
// the counter past maxSize truncates the file first and is not counted;
// Reopen does not reset the counter.
func TestCRIMaxSize(t *testing.T) {
	const ts = "2026-07-06T07:58:52Z" // 20 bytes: "a\n" costs 32, "ab" (P) costs 33
	rec := func(tag, s string) string { return ts + " stdout " + tag + " " + s }
	type step struct {
		op          string // "write" or "reopen"
		p           string
		wantFile    string
		wantWritten uint64
	}
	tests := []struct {
		name    string
		maxSize uint64
		steps   []step
	}{
		{"unlimited", 0, []step{
			{"write", "a\nb\n", rec("F", "a\n") + rec("F", "b\n"), 64},
		}},
		{"exact fit does not truncate", 64, []step{
			{"write", "a\nb\n", rec("F", "a\n") + rec("F", "b\n"), 64},
		}},
		{"truncate mid chunk, trigger not counted", 100, []step{
			{"write", "a\nb\nc\nd\ne\nf\n", rec("F", "d\n") + rec("F", "e\n") + rec("F", "f\n"), 64},
			{"write", "g\n", rec("F", "d\n") + rec("F", "e\n") + rec("F", "f\n") + rec("F", "g\n"), 96},
			{"write", "h\n", rec("F", "h\n"), 0},
		}},
		{"partial record costs one more", 65, []step{
			{"write", "a\nab", rec("F", "a\n") + rec("P", "ab\n"), 65},
			{"write", "c\n", rec("F", "c\n"), 0},
		}},
		{"reopen keeps counter", 100, []step{
			{"write", "a\nb\n", rec("F", "a\n") + rec("F", "b\n"), 64},
			{"reopen", "", "", 64},
			{"write", "c\n", rec("F", "c\n"), 96},
			{"write", "d\n", rec("F", "d\n"), 0},
		}},
		{"record larger than max size still written", 10, []step{
			{"write", "a\nb\n", rec("F", "b\n"), 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, path := openTestCRI(t, tt.maxSize)
			c.now = fixedNow(testTime)
			for i, st := range tt.steps {
				var err error
				if st.op == "reopen" {
					err = c.Reopen()
				} else {
					err = c.WriteChunk(Stdout, []byte(st.p))
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got := string(readFile(t, path)); got != st.wantFile {
					t.Fatalf("step %d: file\n%q\nwant\n%q", i, got, st.wantFile)
				}
				if c.written != st.wantWritten {
					t.Fatalf("step %d: counter %d, want %d", i, c.written, st.wantWritten)
				}
				if _, _, err := ParseCRILog(strings.NewReader(st.wantFile)); err != nil {
					t.Fatalf("step %d: content after truncation does not parse: %v", i, err)
				}
			}
		})
	}
}

// conmon-rs's own unit test (cri.rs write_reopen): with a 30-byte timestamp
// each "x\n" costs 42, so a 150-byte limit truncates before "d".
func TestCRIMaxSizeConmonRSCase(t *testing.T) {
	c, path := openTestCRI(t, 150)
	c.now = fixedNow(time.Date(2026, 7, 6, 7, 58, 52, 123456789, time.UTC))
	if err := c.WriteChunk(Stdout, []byte("a\nb\nc\nd\ne\nf\n")); err != nil {
		t.Fatal(err)
	}
	out, _, err := ParseCRILog(bytes.NewReader(readFile(t, path)))
	if err != nil || string(out) != "d\ne\nf\n" {
		t.Fatalf("got %q, %v; want d, e, f", out, err)
	}
	if c.written != 84 {
		t.Fatalf("counter %d, want 84", c.written)
	}
}

// A counter overflow forces a truncation even without a max size.
func TestCRICounterOverflow(t *testing.T) {
	c, path := openTestCRI(t, 0)
	c.now = fixedNow(testTime)
	if err := c.WriteChunk(Stdout, []byte("a\n")); err != nil {
		t.Fatal(err)
	}
	c.written = math.MaxUint64 - 5
	if err := c.WriteChunk(Stdout, []byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := string(readFile(t, path)), "2026-07-06T07:58:52Z stdout F b\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if c.written != 0 {
		t.Fatalf("counter %d, want 0", c.written)
	}
}

// Rotation: rename the file, Reopen; the old file keeps every byte, the new
// one starts empty, nothing is lost or repeated.
func TestCRIReopenAfterRename(t *testing.T) {
	c, path := openTestCRI(t, 0)
	if err := c.WriteChunk(Stdout, []byte("before\npart")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reopen(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("new file after Reopen: %v, err %v; want empty", fi, err)
	}
	if err := c.WriteChunk(Stdout, []byte("ial\nafter\n")); err != nil {
		t.Fatal(err)
	}
	old, _, err := ParseCRILog(bytes.NewReader(readFile(t, path+".1")))
	if err != nil || string(old) != "before\npart" {
		t.Fatalf("old file: %q, %v", old, err)
	}
	cur, _, err := ParseCRILog(bytes.NewReader(readFile(t, path)))
	if err != nil || string(cur) != "ial\nafter\n" {
		t.Fatalf("new file: %q, %v", cur, err)
	}
}

// Reopen without rename truncates in place; a failed reopen keeps the old
// file in use.
func TestCRIReopenFailureKeepsFile(t *testing.T) {
	c, path := openTestCRI(t, 0)
	if err := c.WriteChunk(Stdout, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Replace the log path by a directory so the reopen cannot succeed.
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.Reopen(); err == nil {
		t.Fatal("Reopen onto a directory succeeded")
	}
	if err := c.WriteChunk(Stdout, []byte("two\n")); err != nil {
		t.Fatal(err)
	}
	got, _, err := ParseCRILog(bytes.NewReader(readFile(t, path+".1")))
	if err != nil || string(got) != "one\ntwo\n" {
		t.Fatalf("old file %q, %v; want both lines", got, err)
	}
}

func TestCRIFileMode(t *testing.T) {
	_, path := openTestCRI(t, 0)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestCRIOpenTruncatesAndFails(t *testing.T) {
	_, path := openTestCRI(t, 0)
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCRILog(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if b := readFile(t, path); len(b) != 0 {
		t.Fatalf("open did not truncate: %q", b)
	}
	if _, err := OpenCRILog("/nonexistent/dir/ctr.log", 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open in missing dir: %v, want ErrNotExist", err)
	}
}

func TestCRIErrors(t *testing.T) {
	t.Run("invalid stream", func(t *testing.T) {
		c, _ := openTestCRI(t, 0)
		if err := c.WriteChunk(Stream(7), []byte("x\n")); !errors.Is(err, ErrInvalidStream) {
			t.Fatalf("got %v, want ErrInvalidStream", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := openTestCRI(t, 0)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := c.WriteChunk(Stdout, []byte("x\n")); !errors.Is(err, ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
		if err := c.Reopen(); !errors.Is(err, ErrClosed) {
			t.Fatalf("reopen after close: %v", err)
		}
	})
	t.Run("write error is wrapped", func(t *testing.T) {
		// /dev/full fails every write with ENOSPC.
		c, err := OpenCRILog("/dev/full", 0)
		if err != nil {
			t.Skipf("no /dev/full: %v", err)
		}
		defer func() { _ = c.Close() }()
		err = c.WriteChunk(Stdout, []byte("x\n"))
		if !errors.Is(err, unix.ENOSPC) {
			t.Fatalf("got %v, want ENOSPC", err)
		}
		if !strings.Contains(err.Error(), "write cri log") {
			t.Fatalf("error %q does not say what failed", err)
		}
	})
}

func TestParseCRILogRejects(t *testing.T) {
	const ts = "2026-07-06T07:58:52Z"
	tests := []struct{ name, in string }{
		{"no trailing newline", ts + " stdout F x"},
		{"bad stream", ts + " stdin F x\n"},
		{"bad tag", ts + " stdout X x\n"},
		{"missing tag space", ts + " stdout Fx\n"},
		{"nine digit fraction with zeros", "2026-07-06T07:58:52.100000000Z stdout F x\n"},
		{"numeric offset", "2026-07-06T07:58:52+00:00 stdout F x\n"},
		{"not a time", "yesterday stdout F x\n"},
		{"no fields", "garbage\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseCRILog(strings.NewReader(tt.in)); !errors.Is(err, ErrMalformedLog) {
				t.Fatalf("got %v, want ErrMalformedLog", err)
			}
		})
	}
}

// A write that fails halfway (here: RLIMIT_FSIZE makes write(2) stop at the
// limit, then fail with EFBIG) leaves no torn record behind: the file keeps
// parsing, and later chunks continue it once space is back.
func TestCRITornWriteRolledBack(t *testing.T) {
	c, path := openTestCRI(t, 0)
	c.now = fixedNow(testTime)
	if err := c.WriteChunk(Stdout, []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 100
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	err := c.WriteChunk(Stdout, []byte(strings.Repeat("y", 200)+"\n"))
	if rerr := unix.Setrlimit(unix.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, unix.EFBIG) {
		t.Fatalf("write over the size limit: %v, want EFBIG", err)
	}
	if err := c.WriteChunk(Stdout, []byte("third\n")); err != nil {
		t.Fatal(err)
	}
	out, _, err := ParseCRILog(bytes.NewReader(readFile(t, path)))
	if err != nil || string(out) != "first\nthird\n" {
		t.Fatalf("after torn write: %q, %v", out, err)
	}
}
