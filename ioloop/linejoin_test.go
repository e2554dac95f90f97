package ioloop

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinLines feeds chunks through a Log with MaxLine and checks the
// chunks its sink gets (each is one or more records).
func TestJoinLines(t *testing.T) {
	tests := []struct {
		name    string
		maxLine int
		chunks  []string
		want    []string // what the sink gets, in order
	}{
		{"whole lines pass", 4, []string{"ab\ncd\n"}, []string{"ab\ncd\n"}},
		{"joined across reads", 10, []string{"ab", "c\nde", "f\n"}, []string{"abc\n", "def\n"}},
		{"exactly max then newline", 3, []string{"abc", "\n"}, []string{"abc\n"}},
		{"max reached, more follows", 3, []string{"abc", "d\n"}, []string{"abc", "d\n"}},
		{"long piece cut at once", 3, []string{"abcdefg"}, []string{"abc", "def", "g"}},
		{"held piece grows past max", 4, []string{"ab", "cdefghij", "k\n"}, []string{"abcd", "efgh", "ijk\n"}},
		{"trailing piece at end", 10, []string{"ab\ncd"}, []string{"ab\n", "cd"}},
		{"off", 0, []string{"ab", "c\n"}, []string{"ab", "c\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var chunks []chunk
			sink := &chunkSink{got: &chunks}
			l := NewLogWith(LogOptions{MaxLine: tt.maxLine}, sink)
			for _, c := range tt.chunks {
				if err := l.WriteChunk(Stdout, []byte(c)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := l.flushLine(Stdout); err != nil { // what ReadLoop does at the end
				t.Fatal(err)
			}
			var got []string
			for _, c := range chunks {
				got = append(got, c.p)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("sink got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestJoinLinesStreamsApart: each stream's line is held on its own.
func TestJoinLinesStreamsApart(t *testing.T) {
	var chunks []chunk
	l := NewLogWith(LogOptions{MaxLine: 100}, &chunkSink{got: &chunks})
	for _, c := range []chunk{{Stdout, "o1"}, {Stderr, "e1"}, {Stdout, "o2\n"}, {Stderr, "e2\n"}} {
		if err := l.WriteChunk(c.s, []byte(c.p)); err != nil {
			t.Fatal(err)
		}
	}
	want := []chunk{{Stdout, "o1o2\n"}, {Stderr, "e1e2\n"}}
	if len(chunks) != len(want) || chunks[0] != want[0] || chunks[1] != want[1] {
		t.Fatalf("got %+v, want %+v", chunks, want)
	}
}

// TestJoinLinesClose: Close writes a held piece as a partial record.
func TestJoinLinesClose(t *testing.T) {
	c, path := openTestCRI(t, 0)
	c.now = fixedNow(testTime)
	l := NewLogWith(LogOptions{MaxLine: 100}, c)
	if err := l.WriteChunk(Stderr, []byte("prompt: ")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); len(got) != 0 {
		t.Fatalf("held piece written before its line ended: %q", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, path)); !strings.HasSuffix(got, " stderr P prompt: \n") {
		t.Fatalf("log %q, want the held piece as a P record", got)
	}
}

// chunkSink records every chunk.
type chunkSink struct{ got *[]chunk }

func (k *chunkSink) WriteChunk(s Stream, p []byte) error {
	*k.got = append(*k.got, chunk{s: s, p: string(p)})
	return nil
}
func (k *chunkSink) Reopen() error { return nil }
func (k *chunkSink) Close() error  { return nil }

// TestLongLineThroughPipe: a 1 MiB line written through a pipe (read in
// 128 KiB chunks or less) is one F record with MaxLine 2 MiB, and 16
// records (15 P, 1 F) of 64 KiB with MaxLine 64 KiB, in the CRI and the
// JSON log alike.
func TestLongLineThroughPipe(t *testing.T) {
	line := make([]byte, 1<<20)
	for i := range line {
		line[i] = 'a' + byte(i%26)
	}
	for _, tt := range []struct {
		maxLine    int
		wantRecs   int
		wantRecLen int
	}{
		{2 << 20, 1, 1 << 20},
		{64 << 10, 16, 64 << 10},
	} {
		dir := t.TempDir()
		cri, err := OpenCRILog(filepath.Join(dir, "cri.log"), 0)
		if err != nil {
			t.Fatal(err)
		}
		js, err := OpenJSONLog(filepath.Join(dir, "json.log"), 0)
		if err != nil {
			t.Fatal(err)
		}
		log := NewLogWith(LogOptions{MaxLine: tt.maxLine}, cri, js)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			// Several writes, so the line surely spans several reads.
			for off := 0; off < len(line); off += 100 << 10 {
				_, _ = w.Write(line[off:min(off+100<<10, len(line))])
			}
			_, _ = w.Write([]byte("\n"))
			_ = w.Close()
		}()
		st, err := ReadLoop(r, Stdout, log, nil)
		_ = r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Chunks < 2 {
			t.Errorf("maxLine %d: the line came in %d read(s): the test needs several", tt.maxLine, st.Chunks)
		}
		if err := log.Close(); err != nil {
			t.Fatal(err)
		}

		raw := readFile(t, filepath.Join(dir, "cri.log"))
		recs := bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
		var joined []byte
		for i, rec := range recs {
			f := bytes.SplitN(rec, []byte(" "), 4)
			wantTag := "P"
			if i == len(recs)-1 {
				wantTag = "F"
			}
			if string(f[2]) != wantTag || len(f[3]) != tt.wantRecLen {
				t.Errorf("maxLine %d: record %d is %s with %d bytes, want %s with %d", tt.maxLine, i, f[2], len(f[3]), wantTag, tt.wantRecLen)
			}
			joined = append(joined, f[3]...)
		}
		if len(recs) != tt.wantRecs || !bytes.Equal(joined, line) {
			t.Errorf("maxLine %d: %d CRI records joining to %d bytes (equal: %v), want %d records of the line",
				tt.maxLine, len(recs), len(joined), bytes.Equal(joined, line), tt.wantRecs)
		}

		raw = readFile(t, filepath.Join(dir, "json.log"))
		entries := bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n"))
		joined = joined[:0]
		for _, e := range entries {
			var v struct{ Message string }
			if err := json.Unmarshal(e, &v); err != nil {
				t.Fatal(err)
			}
			joined = append(joined, v.Message...)
		}
		if len(entries) != tt.wantRecs || !bytes.Equal(joined, line) {
			t.Errorf("maxLine %d: %d JSON entries joining to %d bytes, want %d entries of the line",
				tt.maxLine, len(entries), len(joined), tt.wantRecs)
		}
	}
}
