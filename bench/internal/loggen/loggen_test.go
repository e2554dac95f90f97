package loggen

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// criEncode writes data as CRI records the way a monitor would: full lines
// as F, and every chunk of at most max bytes without a newline as P.
func criEncode(data []byte, max int) []byte {
	var b bytes.Buffer
	ts := "2026-01-02T03:04:05.123456789+00:00"
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		switch {
		case i >= 0 && i <= max:
			fmt.Fprintf(&b, "%s stdout F %s\n", ts, data[:i])
			data = data[i+1:]
		default:
			n := min(max, len(data))
			fmt.Fprintf(&b, "%s stdout P %s\n", ts, data[:n])
			data = data[n:]
		}
	}
	return b.Bytes()
}

func TestPatternShape(t *testing.T) {
	for _, p := range Patterns {
		t.Run(p.Name, func(t *testing.T) {
			const size = 10_000
			data, err := io.ReadAll(iotest.OneByteReader(p.Reader(size)))
			if err != nil {
				t.Fatal(err)
			}
			if len(data) != size {
				t.Fatalf("len = %d, want %d", len(data), size)
			}
			bulk, err := io.ReadAll(p.Reader(size))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, bulk) {
				t.Fatal("one-byte reads and bulk reads differ")
			}
			nl := bytes.Count(data, []byte{'\n'})
			want := 0
			if p.Newline {
				want = size / p.RecordLen
			}
			if nl != want {
				t.Errorf("newlines = %d, want %d", nl, want)
			}
			if bytes.Contains(data, []byte{' '}) {
				t.Error("pattern contains a space")
			}
		})
	}
}

func TestVerifier(t *testing.T) {
	good, _ := io.ReadAll(Lines100.Reader(1000))
	swapped := append([]byte(nil), good...)
	copy(swapped[100:200], good[200:300])
	copy(swapped[200:300], good[100:200])
	cases := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{name: "exact", data: good},
		{name: "short", data: good[:999], wantErr: "got 999 bytes"},
		{name: "long", data: append(append([]byte(nil), good...), 'x'), wantErr: "more than"},
		{name: "reordered lines", data: swapped, wantErr: "first difference at byte 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(Lines100, 1000)
			for _, c := range [][]byte{tc.data[:len(tc.data)/3], tc.data[len(tc.data)/3:]} {
				if _, err := v.Write(c); err != nil {
					t.Fatal(err)
				}
			}
			err := v.Err()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Err = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeCRIRoundTrip(t *testing.T) {
	for _, p := range Patterns {
		for _, max := range []int{8192, 7, 1 << 20} {
			t.Run(fmt.Sprintf("%s/max%d", p.Name, max), func(t *testing.T) {
				const size = 300_000
				data, _ := io.ReadAll(p.Reader(size))
				v := NewVerifier(p, size)
				st, err := DecodeCRI(bytes.NewReader(criEncode(data, max)), v, nil)
				if err != nil {
					t.Fatalf("DecodeCRI: %v", err)
				}
				if err := v.Err(); err != nil {
					t.Fatalf("verify: %v", err)
				}
				if st.Records == 0 {
					t.Fatal("no records counted")
				}
			})
		}
	}
}

func TestDecodeCRIErrors(t *testing.T) {
	cases := []struct{ name, log, wantErr string }{
		{name: "bad timestamp", log: "yesterday stdout F x\n", wantErr: "bad timestamp"},
		{name: "bad stream", log: "2026-01-02T03:04:05Z stdin F x\n", wantErr: "unknown stream"},
		{name: "bad tag", log: "2026-01-02T03:04:05Z stdout X x\n", wantErr: "unknown tag"},
		{name: "unterminated", log: "2026-01-02T03:04:05Z stdout F x", wantErr: "no trailing newline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCRI(strings.NewReader(tc.log), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeCRIStderr(t *testing.T) {
	var out, errOut bytes.Buffer
	st, err := DecodeCRI(strings.NewReader("2026-01-02T03:04:05Z stderr F oops\n2026-01-02T03:04:05Z stdout P a\n"), &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "a" || errOut.String() != "oops\n" || st.Stderr != 4 || st.Partial != 1 {
		t.Fatalf("out %q err %q stats %+v", out.String(), errOut.String(), st)
	}
}

// TestRecordDefinition pins a record to its definition, byte by byte: the
// writer in the container and the verifier must agree, and a faster record
// must not change the stream.
func TestRecordDefinition(t *testing.T) {
	for _, p := range Patterns {
		if p.RecordLen > maxRecordLen {
			t.Fatalf("%s: RecordLen %d over maxRecordLen %d", p.Name, p.RecordLen, maxRecordLen)
		}
		got := make([]byte, p.RecordLen)
		for _, k := range []uint64{0, 1, 61, 62, 63, 1 << 20, 0xdeadbeef, 1<<64 - 1} {
			p.record(got, k)
			want := make([]byte, p.RecordLen)
			n, start := len(want), 0
			if p.Newline {
				n--
				want[n] = '\n'
			}
			if n >= 17 {
				copy(want, fmt.Sprintf("%016x-", k))
				start = 17
			}
			for j := start; j < n; j++ {
				want[j] = alphabet[(k+uint64(j))%uint64(len(alphabet))]
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s record %d = %q, want %q", p.Name, k, got, want)
			}
		}
	}
}
