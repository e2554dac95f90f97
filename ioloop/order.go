package ioloop

import (
	"sync"
	"sync/atomic"
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
// A loop finding the read lock busy waits for it only if its pipe holds
// data: an empty pipe is waited for outside the lock, and an EOF is read
// without it, so one stream's stuck log write (a frozen log disk) never
// hides the other stream's end from the drain policy
// (monitor/container.go), which would take it for a pipe held open by a
// leftover process. Data that arrives at a pipe just then, or after its
// EOF was seen (a new writer), is handed on under the lock taken after the
// read, with the same stdout check; only its read is not ordered.
//
// Cost: a single stream pays one more uncontended lock per chunk (the read
// lock, besides the sinks' lock it took already before), and the stderr
// loop one ioctl per chunk while the stdout loop runs.

// readOrder is the Log's read lock and its record of the stdout loop for
// the stderr loop's check. Lock order: mu before Log.mu.
type readOrder struct {
	// mu is the read lock; it guards the fields below but stdoutEnded.
	mu sync.Mutex
	// stdout is the stdout loop's pipe once that loop reads under the
	// read lock; nil before (or for a loop that cannot poll). Atomic, not
	// under mu: a loop that starts while the other stream's log write is
	// stuck (holding mu) must not wait for it.
	stdout atomic.Pointer[syscall.RawConn]
	// stdoutEnded is set, without mu, when the stdout loop ended or
	// stopped reading under the lock (see unorder).
	stdoutEnded atomic.Bool
	// held is set while the stderr loop holds a chunk back for the
	// stdout loop's turn; stdoutDone once that turn is over.
	held, stdoutDone bool
	// cond signals changes of the fields above; its L is &mu (set by
	// NewLog).
	cond sync.Cond
}

// stdoutRunning reports whether a stdout loop reads under the lock (with
// mu held).
func (o *readOrder) stdoutRunning() bool {
	return o.stdout.Load() != nil && !o.stdoutEnded.Load()
}

// ordered makes cr take l's read lock around each chunk of stream s (see
// above): rawRead takes it before the read and release drops it after the
// chunk was handed on. A nil l leaves cr unordered (exec sessions).
func (cr *chunkReader) ordered(l *Log, s Stream) {
	if l == nil {
		return
	}
	cr.log, cr.s = l, s
	if s == Stdout && cr.rc != nil {
		rc := cr.rc
		l.order.stdout.Store(&rc)
	}
}

// readLock is how lockRead lets a read go on.
type readLock uint8

const (
	readLocked   readLock = iota // under the read lock
	readWait                     // lock busy, pipe empty: wait for it outside the lock
	readUnlocked                 // lock busy, pipe at EOF: read the EOF without it
)

// lockRead takes cr's Log read lock for a read of fd (ordered readers
// only). When the lock is busy (the other stream hands a chunk on, maybe
// into a log write that is stuck), it waits for it only if fd holds data
// to order: an empty pipe is waited for outside the lock (readWait), and
// a pipe at EOF is read without it (readUnlocked), so a stuck write on one
// stream does not hide the other stream's end from the drain policy
// (monitor/container.go).
func (cr *chunkReader) lockRead(fd uintptr) readLock {
	o := &cr.log.order
	if !o.mu.TryLock() {
		switch pipeState(fd) {
		case fdEmpty:
			return readWait
		case fdEOF:
			return readUnlocked
		}
		o.mu.Lock()
	}
	cr.acquired()
	return readLocked
}

// lockAfterRead takes the read lock for a chunk read without it (data
// after an EOF was seen: a writer reappeared).
func (cr *chunkReader) lockAfterRead() {
	cr.log.order.mu.Lock()
	cr.acquired()
}

// acquired runs with the read lock just taken: the stdout loop waits
// while a held stderr chunk goes before its next read.
func (cr *chunkReader) acquired() {
	if cr.s != Stdout {
		return
	}
	for o := &cr.log.order; o.held && o.stdoutDone; {
		o.cond.Wait()
	}
}

// readDone ends a read under the read lock: it keeps the lock for a chunk
// (n > 0) until release, and drops it otherwise. A stderr chunk read
// while stdout's pipe holds data waits here for the stdout loop's turn.
func (cr *chunkReader) readDone(n int) {
	o := &cr.log.order
	if n <= 0 {
		cr.stdoutTurnOver()
		o.mu.Unlock()
		return
	}
	cr.locked = true // until release, after the hand-off
	if cr.s != Stderr || !o.stdoutRunning() || !pipeHasData(*o.stdout.Load()) {
		return
	}
	o.held, o.stdoutDone = true, false
	for o.held && !o.stdoutDone && !o.stdoutEnded.Load() {
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
// to reads that block (without the lock). It does not wait for the read
// lock, which a stuck log write of the other stream may hold: a waiting
// stderr loop holds no lock, so the wake-up can wait for it elsewhere.
func (cr *chunkReader) unorder() {
	if cr.log == nil || cr.s != Stdout {
		return
	}
	o := &cr.log.order
	if o.stdoutEnded.Swap(true) {
		return
	}
	wake := func() {
		o.cond.Broadcast()
		o.mu.Unlock()
	}
	if o.mu.TryLock() {
		wake()
		return
	}
	// Taking the lock orders the wake-up after a stderr loop's check of
	// stdoutEnded: it cannot be lost. This goroutine ends with the
	// holder's chunk.
	go func() {
		o.mu.Lock()
		wake()
	}()
}

// stamp records the time of the chunk just read.
func (cr *chunkReader) stamp() { cr.at = time.Now() }

// fdState is what a pipe (or pty, or socket) holds for its reader.
type fdState uint8

const (
	fdData  fdState = iota // bytes to read, or unknown
	fdEmpty                // nothing now, a writer is left
	fdEOF                  // nothing, and no writer left
)

// pipeState tells whether fd has data, is empty, or is at EOF, without
// reading. Unknown counts as data: the caller then waits for the lock.
func pipeState(fd uintptr) fdState {
	n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
	if err != nil || n > 0 {
		return fdData
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return fdData
	}
	if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 && pfd[0].Revents&unix.POLLIN == 0 {
		return fdEOF
	}
	if pfd[0].Revents&unix.POLLIN != 0 {
		return fdData // arrived since the ioctl
	}
	return fdEmpty
}

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
