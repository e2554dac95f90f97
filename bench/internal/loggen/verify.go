package loggen

import (
	"bytes"
	"fmt"
	"io"
)

// Verifier is an io.Writer that compares everything written to it with the
// expected stream. It never returns a write error, so a caller can feed it
// the whole log and then ask Err for the first difference.
type Verifier struct {
	want     io.Reader
	size     int64
	got      int64
	buf      []byte
	mismatch error
}

// NewVerifier expects exactly the first size bytes of pattern p.
func NewVerifier(p Pattern, size int64) *Verifier {
	return &Verifier{want: p.Reader(size), size: size}
}

// Write compares b with the next len(b) expected bytes.
func (v *Verifier) Write(b []byte) (int, error) {
	n := len(b)
	if v.mismatch != nil {
		v.got += int64(n)
		return n, nil
	}
	for len(b) > 0 {
		chunk := b
		if len(chunk) > 64<<10 {
			chunk = chunk[:64<<10]
		}
		if cap(v.buf) < len(chunk) {
			v.buf = make([]byte, len(chunk))
		}
		want := v.buf[:len(chunk)]
		m, _ := io.ReadFull(v.want, want)
		if m < len(chunk) {
			v.mismatch = fmt.Errorf("got more than the %d bytes written", v.size)
			break
		}
		if !bytes.Equal(chunk, want) {
			i := 0
			for chunk[i] == want[i] {
				i++
			}
			v.mismatch = fmt.Errorf("first difference at byte %d: got %q, want %q",
				v.got+int64(i), excerpt(chunk, i), excerpt(want, i))
			break
		}
		v.got += int64(len(chunk))
		b = b[len(chunk):]
	}
	if v.mismatch != nil {
		v.got += int64(len(b))
	}
	return n, nil
}

// Err reports the first difference, or a short stream, or nil when every
// expected byte arrived exactly once and in order.
func (v *Verifier) Err() error {
	if v.mismatch != nil {
		return v.mismatch
	}
	if v.got != v.size {
		return fmt.Errorf("got %d bytes, want %d", v.got, v.size)
	}
	return nil
}

// excerpt returns up to 16 bytes of b from i.
func excerpt(b []byte, i int) []byte {
	end := min(i+16, len(b))
	return b[i:end]
}
