package ioloop

import (
	"bytes"
	"fmt"
	"io"
	"time"
)

// ParseCRILog reads a CRI log as CRILog writes it and reconstructs the exact
// byte streams the container wrote: F records keep their '\n', P records lose
// the '\n' that was added to them. It is strict, for tests: every record
// must be "<timestamp> <stdout|stderr> <F|P> <content>\n" with the timestamp
// in conmon-rs v1.0's canonical form (UTC, "Z", trailing zeros of the
// fraction trimmed), and the last record must be complete. Errors wrap
// ErrMalformedLog and name the 1-based record number.
func ParseCRILog(r io.Reader) (stdout, stderr []byte, err error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("read cri log: %w", err)
	}
	for rec := 1; len(data) > 0; rec++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return stdout, stderr, fmt.Errorf("record %d: %w: no trailing newline", rec, ErrMalformedLog)
		}
		line := data[:i+1]
		data = data[i+1:]

		sp := bytes.IndexByte(line, ' ')
		if sp < 0 {
			return stdout, stderr, fmt.Errorf("record %d: %w: no timestamp", rec, ErrMalformedLog)
		}
		if err := checkCRITimestamp(line[:sp]); err != nil {
			return stdout, stderr, fmt.Errorf("record %d: %w", rec, err)
		}
		line = line[sp+1:]
		var dst *[]byte
		switch {
		case bytes.HasPrefix(line, []byte("stdout ")):
			dst = &stdout
		case bytes.HasPrefix(line, []byte("stderr ")):
			dst = &stderr
		default:
			return stdout, stderr, fmt.Errorf("record %d: %w: bad stream", rec, ErrMalformedLog)
		}
		line = line[len("stdout "):]
		if len(line) < 2 || line[1] != ' ' {
			return stdout, stderr, fmt.Errorf("record %d: %w: bad tag", rec, ErrMalformedLog)
		}
		content := line[2:]
		switch line[0] {
		case 'F':
			*dst = append(*dst, content...)
		case 'P':
			if len(content) < 2 {
				return stdout, stderr, fmt.Errorf("record %d: %w: empty partial record", rec, ErrMalformedLog)
			}
			*dst = append(*dst, content[:len(content)-1]...)
		default:
			return stdout, stderr, fmt.Errorf("record %d: %w: bad tag %q", rec, ErrMalformedLog, line[0])
		}
	}
	return stdout, stderr, nil
}

// checkCRITimestamp accepts only the canonical v1.0 form: it must parse as
// RFC 3339 and format back to the same bytes in UTC.
func checkCRITimestamp(ts []byte) error {
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return fmt.Errorf("%w: timestamp: %w", ErrMalformedLog, err)
	}
	if got := t.UTC().Format(time.RFC3339Nano); got != string(ts) {
		return fmt.Errorf("%w: timestamp %q is not canonical UTC (want %q)", ErrMalformedLog, ts, got)
	}
	return nil
}
