package ioloop

import (
	"errors"
	"sync/atomic"
	"syscall"
)

// DropReason says why log output was dropped: the outcome "dropped" of
// the gomon.log.bytes and gomon.log.records metrics carries it.
type DropReason uint8

// The drop reasons.
const (
	// DropDiskFull: the log write failed with ENOSPC or EDQUOT.
	DropDiskFull DropReason = iota
	// DropSinkError: the log write failed otherwise (a deleted log
	// directory, journald at its deadline, a closed log).
	DropSinkError
	// DropRateLimit: a rate limiter refused the chunk. Nothing in the read
	// loop drops for this reason yet; the limiter counts its drops with
	// Counters.Drop(DropRateLimit, ...).
	DropRateLimit
	// DropUnread: the stream was stopped (the drain policy) with output
	// left in it, read and discarded without being logged (Stats'
	// UnreadBytes); its records are not counted.
	DropUnread

	// NumDropReasons is the number of reasons, for arrays indexed by one.
	NumDropReasons
)

// String is the reason's metric attribute value.
func (r DropReason) String() string {
	switch r {
	case DropDiskFull:
		return "disk_full"
	case DropSinkError:
		return "sink_error"
	case DropRateLimit:
		return "rate_limit"
	case DropUnread:
		return "unread"
	default:
		return "unknown"
	}
}

// Counters are one read loop's log counters, kept live for metrics that
// are read while the loop runs (Stats is only returned at its end). The
// loop adds to them after every chunk: a handful of atomic adds per chunk
// of up to 128 KiB, none per line. A loop given nil Counters does no such
// work. Safe for concurrent use: the loop writes, any goroutine reads.
//
// A record is what one chunk becomes in the CRI log: one per complete
// line, plus one partial (P) record when the chunk does not end in '\n'.
type Counters struct {
	// WrittenBytes and WrittenRecords count what the Log took.
	WrittenBytes, WrittenRecords atomic.Uint64
	// DroppedBytes and DroppedRecords count what it did not, by reason.
	DroppedBytes, DroppedRecords [NumDropReasons]atomic.Uint64
	// Partials counts partial records (Stats.Partials), logged or not.
	Partials atomic.Uint64
}

// Drop counts bytes and records that never reached the log, for reason.
// It is the hook for droppers outside the read loop's own write path
// (a rate limiter: DropRateLimit). c may be nil.
func (c *Counters) Drop(reason DropReason, bytes, records uint64) {
	if c == nil || reason >= NumDropReasons {
		return
	}
	c.DroppedBytes[reason].Add(bytes)
	c.DroppedRecords[reason].Add(records)
}

// logged counts one chunk handed to the Log: written when err is nil,
// else dropped for the reason err gives.
func (c *Counters) logged(n, records uint64, partial bool, err error) {
	if partial {
		c.Partials.Add(1)
	}
	if err == nil {
		c.WrittenBytes.Add(n)
		c.WrittenRecords.Add(records)
		return
	}
	c.Drop(dropReasonOf(err), n, records)
}

// dropReasonOf classifies a failed log write.
func dropReasonOf(err error) DropReason {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return DropDiskFull
	}
	return DropSinkError
}
