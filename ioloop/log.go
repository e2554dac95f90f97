package ioloop

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sink receives a container's output chunk by chunk, as read from the pipe
// or pty. Implementations are not required to be safe for concurrent use;
// Log serialises all calls.
type Sink interface {
	// WriteChunk records one chunk read from stream s. p is only valid
	// during the call. An empty p writes nothing. On error the chunk may be
	// partly recorded; the next call starts afresh.
	WriteChunk(s Stream, p []byte) error
	// Reopen fsyncs the current file and opens the same path again with
	// create+truncate (log rotation: the caller renames the file first).
	// Sinks without a file do nothing.
	Reopen() error
	// Close releases the sink. Calls after Close fail with ErrClosed, except
	// Close, which does nothing.
	Close() error
}

// TimedSink is a Sink that records when a chunk was read. Log hands a
// read loop's chunks to it with the time of their read (see order.go);
// WriteChunk uses the time of the call.
type TimedSink interface {
	Sink
	// WriteChunkAt is WriteChunk for a chunk read at t.
	WriteChunkAt(s Stream, p []byte, t time.Time) error
}

// Log fans one container's output out to several sinks. It is safe for
// concurrent use: the stdout and stderr read loops call WriteChunk while
// ReopenLog calls Reopen. One mutex serialises every call, so a chunk's
// records are never interleaved with another chunk's, and a Reopen falls
// between two chunks: no byte is lost or written twice across a rotation.
// The container's reads are ordered by another lock, taken before it (see
// order.go).
type Log struct {
	mu sync.Mutex
	// sinks are only used with mu held; timed[i] is sinks[i] as a
	// TimedSink, or nil.
	sinks []Sink
	timed []TimedSink
	// closed is set by Close, after which sinks are not used.
	closed bool
	// limiter is the container's log rate limit, read by its read loops
	// (nil: none); set before they start (SetRateLimiter, ratelimit.go).
	limiter *RateLimiter
	// order is the read loops' ordering, with its own lock.
	order readOrder
	// maxLine is LogOptions.MaxLine; lines, indexed by Stream, hold the
	// start of each stream's current line when maxLine > 0. Guarded by
	// mu.
	maxLine int
	lines   [Stderr + 1]lineJoiner
}

// NewLog returns a Log writing to sinks, in order. A Log without sinks
// accepts and discards everything.
func NewLog(sinks ...Sink) *Log {
	timed := make([]TimedSink, len(sinks))
	for i, s := range sinks {
		timed[i], _ = s.(TimedSink) // nil: not timed
	}
	l := &Log{sinks: sinks, timed: timed}
	l.order.cond.L = &l.order.mu
	return l
}

// WriteChunk hands p to every sink, stamped with the current time. A
// failing sink does not keep the chunk from the others; the returned
// error joins the sinks' errors.
func (l *Log) WriteChunk(s Stream, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	return l.writeChunkAt(s, p, time.Now())
}

// writeChunkAt is WriteChunk for a chunk read at t.
func (l *Log) writeChunkAt(s Stream, p []byte, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("write log: %w", ErrClosed)
	}
	if l.maxLine > 0 && s.valid() {
		return l.joinLines(s, p, t)
	}
	return l.fanOut(s, p, t)
}

// fanOut hands p to every sink, with mu held.
func (l *Log) fanOut(s Stream, p []byte, t time.Time) error {
	var errs []error
	for i, sink := range l.sinks {
		var err error
		if ts := l.timed[i]; ts != nil {
			err = ts.WriteChunkAt(s, p, t)
		} else {
			err = sink.WriteChunk(s, p)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("write log: %w", errors.Join(errs...))
	}
	return nil
}

// Reopen reopens every sink (CRI-O's ReopenContainerLog after kubelet
// renamed the files). Every sink is tried; errors are joined.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("reopen log: %w", ErrClosed)
	}
	var errs []error
	for _, sink := range l.sinks {
		if err := sink.Reopen(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("reopen log: %w", errors.Join(errs...))
	}
	return nil
}

// Close writes what is held of a line (LogOptions.MaxLine) and closes
// every sink. It is idempotent; later writes fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	var errs []error
	for _, s := range []Stream{Stdout, Stderr} {
		if _, err := l.flushLineLocked(s); err != nil {
			errs = append(errs, err)
		}
	}
	l.closed = true
	for _, sink := range l.sinks {
		if err := sink.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("close log: %w", errors.Join(errs...))
	}
	return nil
}
