package ioloop

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func openTestJSON(t testing.TB, maxSize uint64) (*JSONLog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctr.json")
	j, err := OpenJSONLog(path, maxSize)
	if err != nil {
		t.Fatalf("OpenJSONLog: %v", err)
	}
	j.now = fixedNow(testTime)
	t.Cleanup(func() { _ = j.Close() })
	return j, path
}

func TestJSONShape(t *testing.T) {
	const pre = `{"timestamp":1783324732,"pipe":"stdout","message":`
	tests := []struct {
		name   string
		stream Stream
		in     string
		want   string
	}{
		{"empty chunk", Stdout, "", ""},
		{"one line", Stdout, "hello\n", pre + `"hello"}` + "\n"},
		{"stderr", Stderr, "oops\n", `{"timestamp":1783324732,"pipe":"stderr","message":"oops"}` + "\n"},
		{"trimmed", Stdout, " \t padded  \r\n", pre + `"padded"}` + "\n"},
		{"only newline", Stdout, "\n", pre + `""}` + "\n"},
		{"two lines and fragment", Stdout, "a\nb\nfrag", pre + `"a"}` + "\n" + pre + `"b"}` + "\n" + pre + `"frag"}` + "\n"},
		{"escapes like serde_json", Stdout, "q\"b\\\x01\x1f\x7f<>&\u2028 é\n", pre + `"q\"b\\\u0001\u001f` + "\x7f<>&\u2028 é" + `"}` + "\n"},
		{"inner control escapes", Stdout, "a\tb\rc\bd\fe\n", pre + `"a\tb\rc\bd\fe"}` + "\n"},
		{"unicode space trimmed", Stdout, "\u00a0\u2003x\u3000\n", pre + `"x"}` + "\n"},
		{"invalid utf-8 replaced", Stdout, "a\xffb\n", pre + "\"a\uFFFDb\"}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, path := openTestJSON(t, 0)
			if err := j.WriteChunk(tt.stream, []byte(tt.in)); err != nil {
				t.Fatal(err)
			}
			got := string(readFile(t, path))
			if got != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
			// Every line is a JSON object Go can read back, keys in order.
			for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				if line == "" {
					continue
				}
				var e struct {
					Timestamp int64  `json:"timestamp"`
					Pipe      string `json:"pipe"`
					Message   string `json:"message"`
				}
				dec := json.NewDecoder(strings.NewReader(line))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&e); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				if e.Timestamp != testTime.Unix() || e.Pipe != tt.stream.String() {
					t.Fatalf("decoded %+v", e)
				}
			}
		})
	}
}

// Lossy decoding must match Rust's String::from_utf8_lossy (one U+FFFD per
// maximal invalid subpart), not Go's one-per-byte.
func TestAppendLossyUTF8(t *testing.T) {
	const r = "\uFFFD"
	tests := []struct{ name, in, want string }{
		{"valid", "héllo €𝄞", "héllo €𝄞"},
		{"lone continuation", "\x80", r},
		{"truncated 3-byte at end", "\xe2\x82", r},
		{"truncated 4-byte before ascii (Rust doc example)", "Hello \xF0\x90\x80World", "Hello " + r + "World"},
		{"surrogate is three subparts", "\xed\xa0\x80", r + r + r},
		{"overlong is two subparts", "\xc0\xaf", r + r},
		{"Unicode table 3-8", "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", "a" + r + r + r + "b" + r + "c" + r + r + "d"},
		{"F5 and FF", "\xf5\xff", r + r},
		{"valid U+FFFD stays", r, r},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(appendLossyUTF8(nil, []byte(tt.in))); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if got := string(refLossyUTF8([]byte(tt.in))); got != tt.want {
				t.Fatalf("reference got %q, want %q", got, tt.want)
			}
		})
	}
}

// Size accounting: serialized length + 1 is added first; over maxSize the
// file is truncated and the counter reset to 0 (the entry is not counted).
func TestJSONMaxSize(t *testing.T) {
	entry := `{"timestamp":1783324732,"pipe":"stdout","message":"a"}` + "\n"
	n := uint64(len(entry))
	j, path := openTestJSON(t, 2*n)
	if err := j.WriteChunk(Stdout, []byte("a\na\n")); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, path)); got != entry+entry || j.written != 2*n {
		t.Fatalf("file %q counter %d", got, j.written)
	}
	if err := j.Reopen(); err != nil {
		t.Fatal(err)
	}
	if j.written != 2*n {
		t.Fatalf("Reopen changed counter to %d", j.written)
	}
	if err := j.WriteChunk(Stdout, []byte("a\na\n")); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, path)); got != entry+entry || j.written != n {
		t.Fatalf("after truncation: file %q counter %d, want 2 entries and %d", got, j.written, n)
	}
}

func TestJSONBigChunk(t *testing.T) {
	j, path := openTestJSON(t, 0)
	p := bytes.Repeat([]byte("ab\n"), 20000)
	if err := j.WriteChunk(Stderr, p); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(readFile(t, path)), "\n"), "\n")
	if len(lines) != 20000 {
		t.Fatalf("%d entries, want 20000", len(lines))
	}
	for _, l := range lines {
		if l != `{"timestamp":1783324732,"pipe":"stderr","message":"ab"}` {
			t.Fatalf("bad entry %q", l)
		}
	}
}

func TestJSONFileMode(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	_, path := openTestJSON(t, 0)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644 under umask 022", fi.Mode().Perm())
	}
}

func TestJSONErrors(t *testing.T) {
	j, _ := openTestJSON(t, 0)
	if err := j.WriteChunk(0, []byte("x")); !errors.Is(err, ErrInvalidStream) {
		t.Fatalf("got %v", err)
	}
	_ = j.Close()
	if err := j.WriteChunk(Stdout, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v", err)
	}
}

func TestJSONTimestampBeforeEpoch(t *testing.T) {
	j, path := openTestJSON(t, 0)
	j.now = fixedNow(time.Unix(-5, 0))
	if err := j.WriteChunk(Stdout, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, path)); !strings.HasPrefix(got, `{"timestamp":0,`) {
		t.Fatalf("got %q", got)
	}
}

// refLossyUTF8 is an independent, table-driven implementation of the
// maximal-subpart replacement (Unicode Table 3-7), used as a test oracle.
func refLossyUTF8(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			out = append(out, c)
			i++
			continue
		}
		var need int
		lo, hi := byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c == 0xE0:
			need, lo = 2, 0xA0
		case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
			need = 2
		case c == 0xED:
			need, hi = 2, 0x9F
		case c == 0xF0:
			need, lo = 3, 0x90
		case c >= 0xF1 && c <= 0xF3:
			need = 3
		case c == 0xF4:
			need, hi = 3, 0x8F
		default:
			out = append(out, "\uFFFD"...)
			i++
			continue
		}
		j := i + 1
		for k := 0; k < need; k++ {
			if j >= len(b) || b[j] < lo || b[j] > hi {
				break
			}
			lo, hi = 0x80, 0xBF
			j++
		}
		if j-i == need+1 {
			out = append(out, b[i:j]...)
		} else {
			out = append(out, "\uFFFD"...)
		}
		i = j
	}
	return out
}
