package ioloop

import (
	"bytes"
	"fmt"
	"math/bits"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"
)

// JSONLog is the JSON log driver of conmon-rs v1.0 (docs/contract.md, "JSON log"): one
// object per line,
//
//	{"timestamp":<unix seconds>,"pipe":"stdout","message":"<text>"}
//
// with the keys in that order. Lines are split per chunk as in CRILog (a
// trailing fragment is its own entry). The message is the line decoded as
// UTF-8 the way Rust's String::from_utf8_lossy does (each maximal invalid
// subpart becomes one U+FFFD) and trimmed of leading and trailing Unicode
// white space; it is escaped like serde_json (no HTML escaping, control
// characters as \n-style or \u00xx escapes).
//
// A JSONLog is not safe for concurrent use; Log serialises access.
type JSONLog struct {
	file    *logFile
	maxSize uint64
	// written counts serialized bytes (+1 per newline) since the last size
	// truncation; Reopen does not reset it.
	written uint64
	scratch []byte // lossy-decoded line, reused
	now     func() time.Time
}

var _ TimedSink = (*JSONLog)(nil)

// OpenJSONLog opens (creating or truncating) the JSON log file at path with
// mode 0666 filtered by the process umask (0644 with the usual 022), as
// conmon-rs does. maxSize > 0 makes the file truncate in place once the
// counted size exceeds it; 0 means unlimited. Paths are checked as in
// OpenCRILog.
func OpenJSONLog(path string, maxSize uint64) (*JSONLog, error) {
	f, err := openLogFile(path, 0o666)
	if err != nil {
		return nil, fmt.Errorf("open json log: %w", err)
	}
	return &JSONLog{file: f, maxSize: maxSize, now: time.Now}, nil
}

// WriteChunk writes one JSON object per line of p stamped with the
// current time: WriteChunkAt(s, p, now).
func (j *JSONLog) WriteChunk(s Stream, p []byte) error {
	return j.WriteChunkAt(s, p, j.now())
}

// WriteChunkAt writes one JSON object per line of p, normally with one
// write(2). All entries of a chunk share one timestamp, t: the time the
// chunk was read.
func (j *JSONLog) WriteChunkAt(s Stream, p []byte, t time.Time) error {
	if j.file.f == nil {
		return fmt.Errorf("write json log: %w", ErrClosed)
	}
	if !s.valid() {
		return fmt.Errorf("write json log: %w: %d", ErrInvalidStream, uint8(s))
	}
	if len(p) == 0 {
		return nil
	}
	secs := max(t.Unix(), 0)

	bp := getRecordBuf()
	defer putRecordBuf(bp)
	buf := (*bp)[:0]
	committed := j.written
	for len(p) > 0 {
		line, rest, _ := nextLine(p)
		p = rest

		start := len(buf)
		buf = append(buf, `{"timestamp":`...)
		buf = strconv.AppendInt(buf, secs, 10)
		buf = append(buf, `,"pipe":"`...)
		buf = append(buf, s.String()...)
		buf = append(buf, `","message":`...)
		j.scratch = appendLossyUTF8(j.scratch[:0], line)
		buf = appendJSONString(buf, bytes.TrimFunc(j.scratch, unicode.IsSpace))
		buf = append(buf, '}')
		// conmon-rs adds the serialized length + 1 first, then truncates and
		// resets the counter when the total is over maxSize.
		next, carry := bits.Add64(j.written, uint64(len(buf)-start)+1, 0)
		buf = append(buf, '\n')
		if carry != 0 || (j.maxSize > 0 && next > j.maxSize) {
			n := copy(buf, buf[start:]) // earlier entries would be truncated away
			buf = buf[:n]
			if err := j.file.truncate(); err != nil {
				j.written = committed
				*bp = buf
				return fmt.Errorf("truncate json log at max size: %w", err)
			}
			next, committed = 0, 0
		}
		j.written = next
		if len(buf) >= recordFlushSize && len(p) > 0 {
			if err := j.file.write(buf); err != nil {
				j.written = committed
				*bp = buf
				return fmt.Errorf("write json log: %w", err)
			}
			committed = j.written
			buf = buf[:0]
		}
	}
	*bp = buf
	if err := j.file.write(buf); err != nil {
		j.written = committed
		return fmt.Errorf("write json log: %w", err)
	}
	return nil
}

// Reopen fsyncs the file and opens its name again with create+truncate, in
// the directory resolved at open. The size counter is not reset.
func (j *JSONLog) Reopen() error {
	if err := j.file.reopen(); err != nil {
		return fmt.Errorf("reopen json log: %w", err)
	}
	return nil
}

// Close closes the file; a second Close does nothing.
func (j *JSONLog) Close() error {
	return j.file.close()
}

// appendLossyUTF8 appends src to dst with every maximal invalid UTF-8
// subpart replaced by one U+FFFD, the Unicode-recommended practice that
// Rust's String::from_utf8_lossy follows. (Go's own decoders replace every
// invalid byte, which would differ from conmon-rs on truncated sequences.)
func appendLossyUTF8(dst, src []byte) []byte {
	for len(src) > 0 {
		// Copy the valid run in one go.
		i := 0
		for i < len(src) {
			if c := src[i]; c < utf8.RuneSelf {
				i++
				continue
			}
			r, size := utf8.DecodeRune(src[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		dst = append(dst, src[:i]...)
		src = src[i:]
		if len(src) == 0 {
			break
		}
		// src starts with an invalid sequence; its maximal subpart is the
		// longest prefix that could still begin a valid encoding (that is
		// what utf8.FullRune reports as incomplete), at least one byte.
		k := 1
		for k < len(src) && k < utf8.UTFMax-1 && !utf8.FullRune(src[:k+1]) {
			k++
		}
		dst = utf8.AppendRune(dst, utf8.RuneError)
		src = src[k:]
	}
	return dst
}

// appendJSONString appends s (valid UTF-8) as a JSON string literal escaped
// the way serde_json does.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i, c := range s {
		var esc string
		switch {
		case c == '"':
			esc = `\"`
		case c == '\\':
			esc = `\\`
		case c >= 0x20:
			continue
		case c == '\b':
			esc = `\b`
		case c == '\f':
			esc = `\f`
		case c == '\n':
			esc = `\n`
		case c == '\r':
			esc = `\r`
		case c == '\t':
			esc = `\t`
		}
		dst = append(dst, s[start:i]...)
		if esc != "" {
			dst = append(dst, esc...)
		} else {
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendJSONLog opens the JSON log file at path like OpenJSONLog, but
// keeps what it holds and writes after it (see AppendCRILog).
func AppendJSONLog(path string, maxSize uint64) (*JSONLog, error) {
	f, err := openLogFileMode(path, 0o666, false)
	if err != nil {
		return nil, fmt.Errorf("open json log: %w", err)
	}
	return &JSONLog{file: f, maxSize: maxSize, written: uint64(max(f.off, 0)), now: time.Now}, nil
}
