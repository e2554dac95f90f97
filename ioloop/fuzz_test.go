package ioloop

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ so plain `go test` runs
// them.

// FuzzSplitLines checks the record splitter: the pieces concatenate to the
// input, every piece but the last ends with its only '\n', the last is
// either a complete line or a partial without '\n', and none is empty.
func FuzzSplitLines(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var joined []byte
		p := data
		for len(p) > 0 {
			line, rest, partial := nextLine(p)
			if len(line) == 0 {
				t.Fatal("empty piece")
			}
			if n := bytes.Count(line, []byte{'\n'}); partial && n != 0 || !partial && (n != 1 || line[len(line)-1] != '\n') {
				t.Fatalf("piece %q partial=%v", line, partial)
			}
			if partial && len(rest) != 0 {
				t.Fatal("partial piece before the end of the chunk")
			}
			joined = append(joined, line...)
			p = rest
		}
		if !bytes.Equal(joined, data) {
			t.Fatalf("pieces join to %q, want %q", joined, data)
		}
	})
}

// cutChunks splits data into chunks at lengths taken from cuts, alternating
// streams by the parity of each cut byte.
func cutChunks(data, cuts []byte) []chunk {
	var chunks []chunk
	for i := 0; len(data) > 0; i++ {
		n, s := len(data), Stdout
		if i < len(cuts) {
			n = min(int(cuts[i]), len(data))
			if cuts[i]%2 == 1 {
				s = Stderr
			}
		}
		chunks = append(chunks, chunk{s, string(data[:n])})
		data = data[n:]
	}
	return chunks
}

// FuzzCRIRoundTrip writes arbitrary chunks through CRILog and parses the
// file back: both streams must come back byte-exact, with canonical
// timestamps.
func FuzzCRIRoundTrip(f *testing.F) {
	path := filepath.Join(f.TempDir(), "ctr.log") // reused: inputs run one at a time per process
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		c, err := OpenCRILog(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		chunks := cutChunks(data, cuts)
		for _, ch := range chunks {
			if err := c.WriteChunk(ch.s, []byte(ch.p)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		out, errb, err := ParseCRILog(bytes.NewReader(readFile(t, path)))
		if err != nil {
			t.Fatal(err)
		}
		wantOut, wantErr := joinStreams(chunks)
		if !bytes.Equal(out, wantOut) || !bytes.Equal(errb, wantErr) {
			t.Fatalf("round trip: stdout %q stderr %q, want %q %q", out, errb, wantOut, wantErr)
		}
	})
}

// FuzzJSONWriter writes an arbitrary chunk through JSONLog: every line must
// be a JSON object with keys timestamp, pipe, message in that order, one per
// piece of the chunk, and the message must be the piece decoded lossily
// (checked against an independent implementation) and trimmed.
func FuzzJSONWriter(f *testing.F) {
	path := filepath.Join(f.TempDir(), "ctr.json") // reused: inputs run one at a time per process
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := OpenJSONLog(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		j.now = fixedNow(testTime)
		if err := j.WriteChunk(Stderr, data); err != nil {
			t.Fatal(err)
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		got := readFile(t, path)
		if !utf8.Valid(got) {
			t.Fatal("output is not valid UTF-8")
		}
		lines := strings.SplitAfter(string(got), "\n")
		if lines[len(lines)-1] != "" {
			t.Fatal("output does not end with a newline")
		}
		lines = lines[:len(lines)-1]
		p := data
		for i, line := range lines {
			if len(p) == 0 {
				t.Fatalf("entry %d has no matching piece", i)
			}
			piece, rest, _ := nextLine(p)
			p = rest
			const prefix = `{"timestamp":1783324732,"pipe":"stderr","message":"`
			if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "\"}\n") {
				t.Fatalf("entry %q has the wrong shape", line)
			}
			var e struct {
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("entry %q: %v", line, err)
			}
			want := strings.TrimFunc(string(refLossyUTF8(piece)), unicode.IsSpace)
			if e.Message != want {
				t.Fatalf("message %q, want %q", e.Message, want)
			}
		}
		if len(p) != 0 {
			t.Fatalf("%d bytes produced no entry", len(p))
		}
	})
}
