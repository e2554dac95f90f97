// Package loggen defines the deterministic byte streams the log benchmark's
// containers write, and checks what a monitor logged against them.
//
// A stream is a sequence of fixed-size records. Record k of a pattern is a
// pure function of k, so the writer inside the container (cmd/loggen) and
// the verifier in the harness produce the same bytes without sharing state,
// and a lost, duplicated or reordered chunk shows up as a mismatch.
package loggen

import (
	"fmt"
	"io"
	"strings"
)

// Pattern is one record layout.
type Pattern struct {
	// Name is the flag value and the label in the results.
	Name string
	// RecordLen is the size of one record in bytes, newline included.
	RecordLen int
	// Newline ends each record with '\n' when true; otherwise the stream is
	// one endless line.
	Newline bool
}

// The patterns the benchmark uses.
var (
	// Lines100 is 100-byte lines: a 16-digit hex record number, filler
	// and '\n'.
	Lines100 = Pattern{Name: "lines100", RecordLen: 100, Newline: true}
	// LongLine is a single line without any newline, in 64-byte records.
	LongLine = Pattern{Name: "longline", RecordLen: 64, Newline: false}
	// Lines2 is 2-byte lines: one character and '\n'.
	Lines2 = Pattern{Name: "lines2", RecordLen: 2, Newline: true}
)

// Patterns lists every pattern, in report order.
var Patterns = []Pattern{Lines100, LongLine, Lines2}

// ByName returns the pattern called name.
func ByName(name string) (Pattern, error) {
	for _, p := range Patterns {
		if p.Name == name {
			return p, nil
		}
	}
	return Pattern{}, fmt.Errorf("unknown pattern %q", name)
}

// alphabet never contains '\n' or ' ', so the filler cannot end a line.
const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// filler is alphabet repeated: byte j of record k's filler is
// alphabet[(k+j) % len(alphabet)], so a record's filler is one slice of it.
// Copying a slice instead of computing every byte keeps the writer far
// cheaper than any monitor, so the log benchmark measures the monitor.
var filler = strings.Repeat(alphabet, 1+(maxRecordLen+len(alphabet)-1)/len(alphabet))

// maxRecordLen bounds RecordLen (the filler must cover a whole record).
const maxRecordLen = 128

const hexDigits = "0123456789abcdef"

// record writes record k into b, which is RecordLen bytes long: for records
// of 17 bytes or more a 16-digit hex record number and '-', then filler,
// then '\n' when p.Newline.
func (p Pattern) record(b []byte, k uint64) {
	n := len(b)
	if p.Newline {
		n--
		b[n] = '\n'
	}
	start := 0
	if n >= 17 {
		const digits = 16
		for i, v := digits-1, k; i >= 0; i, v = i-1, v>>4 {
			b[i] = hexDigits[v&0xf]
		}
		b[digits] = '-'
		start = digits + 1
	}
	off := int((k + uint64(start)) % uint64(len(alphabet)))
	copy(b[start:n], filler[off:off+n-start])
}

// Reader returns the first size bytes of pattern p as an io.Reader.
func (p Pattern) Reader(size int64) io.Reader {
	return &stream{p: p, left: size, rec: make([]byte, p.RecordLen)}
}

// stream produces a pattern's bytes record by record.
type stream struct {
	p    Pattern
	left int64  // bytes still to produce
	k    uint64 // next record number
	rec  []byte // current record
	off  int    // bytes of rec already returned; len(rec) means "need next"
	init bool
}

// Read fills b with the next bytes of the stream.
func (s *stream) Read(b []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if !s.init {
		s.off = len(s.rec)
		s.init = true
	}
	if int64(len(b)) > s.left {
		b = b[:s.left]
	}
	n := 0
	for n < len(b) {
		if s.off == len(s.rec) {
			// Fast path: whole records straight into b.
			for len(b)-n >= len(s.rec) {
				s.p.record(b[n:n+len(s.rec)], s.k)
				s.k++
				n += len(s.rec)
			}
			if n == len(b) {
				break
			}
			s.p.record(s.rec, s.k)
			s.k++
			s.off = 0
		}
		c := copy(b[n:], s.rec[s.off:])
		s.off += c
		n += c
	}
	s.left -= int64(n)
	return n, nil
}
