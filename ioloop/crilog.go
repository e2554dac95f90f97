package ioloop

import (
	"fmt"
	"math/bits"
	"time"
)

// CRILog is the Kubernetes CRI log driver: one file of records
//
//	<timestamp> <stdout|stderr> <F|P> <content>
//
// as kubelet reads them (docs/contract.md, "CRI log"). Every chunk is cut after each
// '\n'; each complete line (with its '\n') becomes an F record, a trailing
// piece without '\n' becomes a P record with a '\n' appended. Nothing is
// buffered across chunks.
//
// Timestamps use conmon-rs v1.0's format: UTC, RFC 3339 with "Z", fractional
// seconds with trailing zeros trimmed and no fraction at all when the
// nanoseconds are zero (Go's time.RFC3339Nano layout on a UTC time produces
// exactly that). v0.7.3 wrote 9 digits and a local offset; kubelet's parser
// (time.RFC3339Nano) accepts both, so gomon follows the newest release.
//
// A CRILog is not safe for concurrent use; Log serialises access.
type CRILog struct {
	file    *logFile
	maxSize uint64 // 0 = unlimited
	// written counts record bytes since the last size truncation, as
	// conmon-rs does: a record that triggers truncation is written but not
	// counted, and Reopen does not reset it.
	written uint64
	// ts is the formatted timestamp of the current chunk, in a reused buffer.
	ts  []byte
	now func() time.Time
}

var _ TimedSink = (*CRILog)(nil)

// criOverhead is the length of " stdout " plus "F " around the timestamp and
// the content; conmon-rs charges it (with the timestamp) for every record.
const criOverhead = 10

// OpenCRILog opens (creating or truncating, mode 0600) the CRI log file at
// path. maxSize > 0 makes the file truncate in place whenever the next record
// would push it past maxSize bytes; 0 means unlimited. A path that names a
// symbolic link or anything but a regular file of one link is refused with
// ErrUnsafeLogPath; its directory is resolved once, here, for every Reopen.
func OpenCRILog(path string, maxSize uint64) (*CRILog, error) {
	f, err := openLogFile(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open cri log: %w", err)
	}
	return &CRILog{file: f, maxSize: maxSize, ts: make([]byte, 0, 40), now: time.Now}, nil
}

// WriteChunk writes the records of one chunk, stamped with the current
// time: WriteChunkAt(s, p, now).
func (c *CRILog) WriteChunk(s Stream, p []byte) error {
	return c.WriteChunkAt(s, p, c.now())
}

// WriteChunkAt writes the records of one chunk, normally with one
// write(2). All records of a chunk share one timestamp, t: the time the
// chunk was read.
//
// The timestamp is formatted per chunk rather than cached for up to 100
// ms as in conmon-rs: a chunk is one read(2) of the container stream, so
// formatting once per chunk already costs a fraction of the read and write
// syscalls, and a later chunk never carries an older, stale time. ReadLoop
// reads and writes a container's chunks under Log's lock (see order.go),
// so records of stdout and stderr appear in the file in the order of their
// timestamps (as far as the wall clock is monotonic).
func (c *CRILog) WriteChunkAt(s Stream, p []byte, t time.Time) error {
	if c.file.f == nil {
		return fmt.Errorf("write cri log: %w", ErrClosed)
	}
	if !s.valid() {
		return fmt.Errorf("write cri log: %w: %d", ErrInvalidStream, uint8(s))
	}
	if len(p) == 0 {
		return nil
	}
	c.ts = t.UTC().AppendFormat(c.ts[:0], time.RFC3339Nano)
	tag := " stdout "
	if s == Stderr {
		tag = " stderr "
	}
	base := uint64(len(c.ts)) + criOverhead

	bp := getRecordBuf()
	defer putRecordBuf(bp)
	buf := (*bp)[:0]
	committed := c.written // counter value matching what is in the file
	for len(p) > 0 {
		line, rest, partial := nextLine(p)
		p = rest
		cost := base + uint64(len(line))
		if partial {
			cost++
		}
		next, carry := bits.Add64(c.written, cost, 0)
		if carry != 0 || (c.maxSize > 0 && next > c.maxSize) {
			// Truncate in place before this record. Records still in buf
			// would be cut away by the truncation anyway: drop them.
			buf = buf[:0]
			if err := c.file.truncate(); err != nil {
				c.written = committed
				*bp = buf
				return fmt.Errorf("truncate cri log at max size: %w", err)
			}
			next, committed = 0, 0
		}
		c.written = next

		buf = append(buf, c.ts...)
		buf = append(buf, tag...)
		if partial {
			buf = append(buf, 'P', ' ')
			buf = append(buf, line...)
			buf = append(buf, '\n')
		} else {
			buf = append(buf, 'F', ' ')
			buf = append(buf, line...)
		}
		if len(buf) >= recordFlushSize && len(p) > 0 {
			if err := c.file.write(buf); err != nil {
				c.written = committed
				*bp = buf
				return fmt.Errorf("write cri log: %w", err)
			}
			committed = c.written
			buf = buf[:0]
		}
	}
	*bp = buf // keep a grown buffer for the pool
	if err := c.file.write(buf); err != nil {
		c.written = committed
		return fmt.Errorf("write cri log: %w", err)
	}
	return nil
}

// Reopen fsyncs the file and opens its name again with create+truncate, in
// the directory resolved by OpenCRILog, for log rotation (rename, then
// Reopen). The size counter is not reset, as in conmon-rs. If opening fails
// (also with ErrUnsafeLogPath), writes keep going to the old file.
func (c *CRILog) Reopen() error {
	if err := c.file.reopen(); err != nil {
		return fmt.Errorf("reopen cri log: %w", err)
	}
	return nil
}

// Close closes the file. Further writes fail with ErrClosed; a second Close
// does nothing.
func (c *CRILog) Close() error {
	return c.file.close()
}

// AppendCRILog opens the CRI log file at path like OpenCRILog, but keeps
// what it holds and writes after it: the log of a container that a new
// gomon process takes over after an upgrade in place (docs/upgrade.md).
// The size limit counts the file's current size as already written.
func AppendCRILog(path string, maxSize uint64) (*CRILog, error) {
	f, err := openLogFileMode(path, 0o600, false)
	if err != nil {
		return nil, fmt.Errorf("open cri log: %w", err)
	}
	return &CRILog{file: f, maxSize: maxSize, written: uint64(max(f.off, 0)), ts: make([]byte, 0, 40), now: time.Now}, nil
}
