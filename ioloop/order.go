package ioloop

import (
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The order of a container's output across its two streams.
//
// A container that writes "out 1" to stdout and then "err 1" to stderr
// must find them in that order in its log. Each stream has its own read
// loop, and the two goroutines race: measured with 200 such pairs written
// by busybox sh in a runc container (monitor/logorder_test.go), up to all
// 200 pairs came out inverted, and the inversions were already in the
// order of the reads, not only of the writes: often both pipes held data
// when the loops woke (a fast writer fills both before either goroutine
// runs; in one run each stream was read once, all 200 lines at a time),
// and whichever goroutine ran first read first. Taking the timestamp at
// read time alone would not help; the reads themselves must be ordered.
//
// So a container's reads are serialised through its Log: a loop takes the
// Log's read lock (readOrder.mu) before its (non-blocking) read and keeps
// it until the chunk has been handed to the log and to its tee writers
// (attach clients), so the log and the attach clients see the chunks in
// the order they were read, each stamped with the time of its read. No
// lock is held while a loop waits for its pipe: the wait is the poller's,
// outside the lock. The read lock is not the lock of the Log's sinks
// (Log.mu, taken inside it for the log write): a ReopenLog waits for a
// log write, as before, but not for a slow tee writer.
//
// When both pipes hold data at the moment of a read, there is no telling
// which was written first. gomon then puts stdout first, as C conmon's
// event loop does (its stdout source is dispatched before stderr's when
// both are ready): right after its read, the stderr loop asks the kernel
// how much stdout's pipe holds (FIONREAD), and if it is not empty it
// holds its chunk back until the stdout loop has read and handed on one
// chunk. So a stdout write that came before a stderr write is never
// logged after it: when the stderr read returned, that stdout write was
// in the pipe (or already logged). The check is after the read, not
// before: a check before it leaves a window in which the container writes
// to both pipes (measured: 1 to 5 of 200 pairs still inverted with 10
// containers at once). The stdout loop gets one turn, not until its pipe
// is empty, so a flooding stdout cannot starve stderr, and it waits for
// the held stderr chunk before it reads again; neither loop waits while
// the other waits for it. A stdout loop that ends (EOF, a deadline, a
// close) releases a waiting stderr loop. A held chunk is stamped again
// when it goes on, after the stdout chunk, so the timestamps in the log
// never go back.
//
// Cost: a single stream pays one more uncontended lock per chunk (the read
// lock, besides the sinks' lock it took already before), and the stderr
// loop one ioctl per chunk while the stdout loop runs.

// readOrder is the Log's read lock and its record of the stdout loop for
// the stderr loop's check. Lock order: mu before Log.mu.
type readOrder struct {
	// mu is the read lock; it guards the fields below.
	mu sync.Mutex
	// stdout is the stdout loop's pipe while that loop reads under the
	// read lock; nil otherwise (no loop, a loop that ended, or one that
	// cannot poll and so reads without the lock).
	stdout syscall.RawConn
	// held is set while the stderr loop holds a chunk back for the
	// stdout loop's turn; stdoutDone once that turn is over.
	held, stdoutDone bool
	// cond signals changes of the fields above; its L is &mu (set by
	// NewLog).
	cond sync.Cond
}

// ordered makes cr take l's read lock around each chunk of stream s (see
// above): rawRead takes it before the read and release drops it after the
// chunk was handed on. A nil l leaves cr unordered (exec sessions).
func (cr *chunkReader) ordered(l *Log, s Stream) {
	if l == nil {
		return
	}
	cr.log, cr.s = l, s
	l.order.mu.Lock()
	defer l.order.mu.Unlock()
	if s == Stdout && cr.rc != nil {
		l.order.stdout = cr.rc
	}
}

// lockRead takes cr's Log read lock for a read (ordered readers only). The
// stdout loop waits there while a held stderr chunk goes before its next
// read.
func (cr *chunkReader) lockRead() {
	l := cr.log
	l.order.mu.Lock()
	if cr.s != Stdout {
		return
	}
	for o := &l.order; o.held && o.stdoutDone; {
		o.cond.Wait()
	}
}

// readDone ends a read under the read lock: it keeps the lock for a chunk
// (n > 0) until release, and drops it otherwise. A stderr chunk read
// while stdout's pipe holds data waits here for the stdout loop's turn.
func (cr *chunkReader) readDone(n int) {
	l := cr.log
	o := &l.order
	if n <= 0 {
		cr.stdoutTurnOver()
		o.mu.Unlock()
		return
	}
	cr.locked = true // until release, after the hand-off
	if cr.s != Stderr || o.stdout == nil || !pipeHasData(o.stdout) {
		return
	}
	o.held, o.stdoutDone = true, false
	for o.held && !o.stdoutDone && o.stdout != nil {
		o.cond.Wait()
	}
	o.held = false
	o.cond.Broadcast() // a stdout loop waiting for its next read
	// Stamped again: the stdout chunk logged meanwhile was read later,
	// and a log's timestamps must not go back (readers such as Loki
	// refuse older entries in a stream).
	cr.stamp()
}

// stdoutTurnOver tells a stderr loop holding a chunk back that the
// stdout loop has had its turn (with the read lock held).
func (cr *chunkReader) stdoutTurnOver() {
	if o := &cr.log.order; cr.s == Stdout && o.held && !o.stdoutDone {
		o.stdoutDone = true
		o.cond.Broadcast()
	}
}

// release drops the read lock taken for the current chunk, if any.
func (cr *chunkReader) release() {
	if cr.locked {
		cr.locked = false
		cr.stdoutTurnOver()
		cr.log.order.mu.Unlock()
	}
}

// unorder takes the stdout loop out of the stderr loop's check, waking a
// stderr loop waiting for it: when the loop ends, or when it falls back
// to reads that block (without the lock).
func (cr *chunkReader) unorder() {
	if cr.log == nil || cr.s != Stdout {
		return
	}
	o := &cr.log.order
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stdout = nil
	o.cond.Broadcast()
}

// stamp records the time of the chunk just read.
func (cr *chunkReader) stamp() { cr.at = time.Now() }

// pipeHasData reports whether the pipe behind rc holds unread bytes. An
// fd that is closed or does not answer counts as empty.
func pipeHasData(rc syscall.RawConn) bool {
	n := 0
	if err := rc.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD; on error n stays 0
	}); err != nil {
		return false
	}
	return n > 0
}
