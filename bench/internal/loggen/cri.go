package loggen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// CRIStats counts what DecodeCRI saw.
type CRIStats struct {
	Records  int64 // log lines
	Partial  int64 // records tagged P
	Stderr   int64 // bytes of stderr content (the benchmark writes none)
	LogBytes int64 // size of the log itself
}

// DecodeCRI reads a CRI (k8s-file) log, `<RFC3339Nano> <stream> <P|F>
// <content>\n` per record, and writes the stdout stream it encodes to out:
// a record's content, plus '\n' for F records (a P record's own newline is
// added by the writer and is not content). stderr content goes to errOut
// when not nil. Every record's timestamp must parse.
func DecodeCRI(r io.Reader, out, errOut io.Writer) (CRIStats, error) {
	var st CRIStats
	br := bufio.NewReaderSize(r, 256<<10)
	var long []byte // a record longer than the reader's buffer
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if len(long) > 0 {
			long = append(long, line...)
			line = long
		}
		if len(line) > 0 {
			st.LogBytes += int64(len(line))
			if line[len(line)-1] != '\n' {
				return st, fmt.Errorf("record %d: no trailing newline", st.Records+1)
			}
			if perr := decodeRecord(line[:len(line)-1], out, errOut, &st); perr != nil {
				return st, fmt.Errorf("record %d: %w", st.Records+1, perr)
			}
			st.Records++
		}
		long = long[:0]
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("read log: %w", err)
		}
	}
}

// decodeRecord handles one record without its final newline.
func decodeRecord(line []byte, out, errOut io.Writer, st *CRIStats) error {
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return fmt.Errorf("no fields in %q", excerpt(line, 0))
	}
	if _, err := time.Parse(time.RFC3339Nano, string(ts)); err != nil {
		return fmt.Errorf("bad timestamp: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return fmt.Errorf("no tag in %q", excerpt(line, 0))
	}
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok && len(rest) != 1 {
		return fmt.Errorf("no content separator in %q", excerpt(line, 0))
	}
	if !ok {
		tag, content = rest, nil
	}
	var w io.Writer
	switch string(stream) {
	case "stdout":
		w = out
	case "stderr":
		w = errOut
		st.Stderr += int64(len(content))
	default:
		return fmt.Errorf("unknown stream %q", stream)
	}
	var nl bool
	switch string(tag) {
	case "F":
		nl = true
	case "P":
		st.Partial++
	default:
		return fmt.Errorf("unknown tag %q", tag)
	}
	if w == nil {
		return nil
	}
	if _, err := w.Write(content); err != nil {
		return fmt.Errorf("write content: %w", err)
	}
	if nl {
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("write newline: %w", err)
		}
	}
	return nil
}
