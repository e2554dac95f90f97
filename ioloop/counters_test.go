package ioloop

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// errBroken is a log write failure that is not a full disk.
var errBroken = errors.New("sink broken")

// brokenSink fails the calls in enospc with ENOSPC and those in broken
// with errBroken.
type brokenSink struct {
	calls          int
	enospc, broken map[int]bool
}

func (s *brokenSink) WriteChunk(Stream, []byte) error {
	i := s.calls
	s.calls++
	switch {
	case s.enospc[i]:
		return fmt.Errorf("write: %w", unix.ENOSPC)
	case s.broken[i]:
		return errBroken
	}
	return nil
}
func (s *brokenSink) Reopen() error { return nil }
func (s *brokenSink) Close() error  { return nil }

// TestReadLoopCounters checks the live counters against the chunks a
// scripted stream delivered: written and dropped (by reason) bytes and
// records, and partials.
func TestReadLoopCounters(t *testing.T) {
	chunks := [][]byte{
		[]byte("a\nb\n"),    // 0: written, 2 records
		[]byte("ccc"),       // 1: written, 1 partial record
		[]byte("d\ne\nf"),   // 2: disk full, 3 records (one partial)
		[]byte("gg\n"),      // 3: sink error, 1 record
		[]byte("h\ni\nj\n"), // 4: written, 3 records
	}
	sink := &brokenSink{enospc: map[int]bool{2: true}, broken: map[int]bool{3: true}}
	var cnt Counters
	st, err := ReadLoopCounted(&scriptedReader{chunks: chunks}, Stdout, NewLog(sink), &cnt, nil)
	if err != nil {
		t.Fatalf("ReadLoopCounted: %v", err)
	}
	check := func(name string, got, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	check("written bytes", cnt.WrittenBytes.Load(), 4+3+6)
	check("written records", cnt.WrittenRecords.Load(), 2+1+3)
	check("disk full bytes", cnt.DroppedBytes[DropDiskFull].Load(), 5)
	check("disk full records", cnt.DroppedRecords[DropDiskFull].Load(), 3)
	check("sink error bytes", cnt.DroppedBytes[DropSinkError].Load(), 3)
	check("sink error records", cnt.DroppedRecords[DropSinkError].Load(), 1)
	check("rate limit bytes", cnt.DroppedBytes[DropRateLimit].Load(), 0)
	check("partials", cnt.Partials.Load(), st.Partials)
	var dropped uint64
	for r := range NumDropReasons {
		dropped += cnt.DroppedBytes[r].Load()
	}
	check("written+dropped", cnt.WrittenBytes.Load()+dropped, st.Bytes)
	check("stats dropped", st.DroppedBytes, dropped)
}

func TestCountersDropHook(t *testing.T) {
	var c *Counters
	c.Drop(DropRateLimit, 1, 1) // nil: no-op
	c = new(Counters)
	c.Drop(DropRateLimit, 10, 2)
	c.Drop(NumDropReasons, 10, 2) // out of range: ignored
	if c.DroppedBytes[DropRateLimit].Load() != 10 || c.DroppedRecords[DropRateLimit].Load() != 2 {
		t.Fatalf("rate limit drops not counted: %d bytes %d records",
			c.DroppedBytes[DropRateLimit].Load(), c.DroppedRecords[DropRateLimit].Load())
	}
	for r, want := range map[DropReason]string{DropDiskFull: "disk_full", DropSinkError: "sink_error", DropRateLimit: "rate_limit", DropUnread: "unread"} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", r, r.String(), want)
		}
	}
}
