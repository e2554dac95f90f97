package ioloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Stats are the counters of one read loop.
type Stats struct {
	Bytes  uint64 // bytes read from the stream
	Chunks uint64 // non-empty reads
	Lines  uint64 // newline characters read (complete lines)
	// Partials counts chunks that did not end with '\n', i.e. P records in
	// the CRI log (fewer when the Log joins lines: LogOptions.MaxLine).
	Partials uint64
	// WriteErrors counts failed writes: one per chunk per failing
	// destination (the Log, or one tee writer).
	WriteErrors uint64
	// DroppedBytes counts bytes a destination did not take: the whole chunk
	// when the Log failed (some sinks may still have it), the unwritten
	// rest when a tee writer failed.
	DroppedBytes uint64
	// UnreadBytes counts bytes still in the stream when its owner stopped
	// the loop with a read deadline: read and discarded, never handed to
	// a destination.
	UnreadBytes uint64
	// RateLimitedBytes counts bytes the container's log rate limit kept
	// from the Log under the drop policy (attach clients and tee writers
	// still got them): Bytes = bytes logged + RateLimitedBytes.
	RateLimitedBytes uint64
	// RateLimitGaps counts the marker records written for them, one per
	// run of dropped chunks (ratelimit.go).
	RateLimitGaps uint64
	// RateLimitWait is the time the loop waited for budget before
	// reading under the block policy.
	RateLimitWait time.Duration
}

// LogValue logs the stats as named attributes (stats.bytes=… with a text
// handler), so that readers of the daemon's log find each counter by its
// name, not by its place; the names are the read_loop span's attributes.
func (s Stats) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Uint64("bytes", s.Bytes),
		slog.Uint64("chunks", s.Chunks),
		slog.Uint64("lines", s.Lines),
		slog.Uint64("partials", s.Partials),
		slog.Uint64("write_errors", s.WriteErrors),
		slog.Uint64("dropped_bytes", s.DroppedBytes),
		slog.Uint64("unread_bytes", s.UnreadBytes),
		slog.Uint64("rate_limited_bytes", s.RateLimitedBytes),
		slog.Uint64("rate_limit_gaps", s.RateLimitGaps),
		slog.Duration("rate_limit_wait", s.RateLimitWait),
	)
}

// maxUnread bounds how much a loop stopped by a read deadline reads and
// discards to count what was left: a pipe holds at most pipeSize, more
// comes only from a writer still running, whose output after the stop is
// not waited for.
const maxUnread = 4 * pipeSize

// ReadLoop reads r (a pipe or a pty master; EIO, which a pty master returns
// once the terminal's last slave fd is closed, means EOF) until EOF or error
// and hands every chunk to log (may be nil) and then to each writer in tee
// (e.g. a terminal for `gomon run`; may be empty). At EOF it returns a nil
// error; otherwise the read error, wrapped. Closing r is how its owner stops
// it early (the error then wraps os.ErrClosed for an *os.File); what the
// pipe still held is then lost uncounted. Setting a read deadline on r (an
// *os.File) stops it instead at its next read, counting: the loop reads
// and discards what is left (UnreadBytes, up to maxUnread), logs it, and
// returns an error wrapping os.ErrDeadlineExceeded. A loop in the middle
// of a slow write finishes that write first.
//
// It never stops reading because a destination failed: a failing write is
// counted (WriteErrors, DroppedBytes), logged through logger once per failure
// burst (and once more when the destination recovers), and the next chunk is
// offered again, so the container is never blocked by a broken sink and the
// shortfall is visible. logger may be nil.
//
// Reads use 128 KiB buffers from a pool shared by all loops (see
// readBufSize). When r is an *os.File (or any syscall.Conn) on a pollable fd,
// the loop waits for readability before it takes a buffer, so a loop parked
// on a quiet container holds no buffer; on a pipe it also asks for a
// pipeSize (1 MiB) pipe buffer and batches the reads of a fast writer (see
// batchDelay). Writers see each chunk only during their call.
//
// With a log, the container's loops share its read lock (see order.go): a
// loop reads (without blocking) and hands the chunk to log and tee while
// holding it, so the log and the tee writers see the chunks of both
// streams in the order they were read, each stamped with the time of its
// read, and stdout's before stderr's when both pipes held data at once. A
// tee writer that blocks therefore holds up the other stream too. The
// order holds from the moment the stdout loop has begun: start it before
// the container writes (the monitor starts its loops before the runtime's
// create).
func ReadLoop(r io.Reader, s Stream, log *Log, logger *slog.Logger, tee ...io.Writer) (Stats, error) {
	return ReadLoopCounted(r, s, log, nil, logger, tee...)
}

// ReadLoopCounted is ReadLoop that also keeps cnt (may be nil) up to date
// after every chunk handed to log, for metrics read while the loop runs.
func ReadLoopCounted(r io.Reader, s Stream, log *Log, cnt *Counters, logger *slog.Logger, tee ...io.Writer) (Stats, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("stream", s.String())
	var st Stats
	cr := newChunkReader(r)
	cr.ordered(log, s)
	// A panic in a sink or a tee writer (recovered by the caller, which
	// may run the loop again) must not leave the read lock held, nor the
	// other stream waiting for this one's turn: the order is given up.
	// Both calls do nothing after a normal end.
	defer func() { cr.release(); cr.unorder() }()
	// dests[0] is the Log, dests[1+i] is tee[i].
	dests := make([]destState, 1+len(tee))
	gate := newRateGate(log, s, logger, cr) // nil without a rate limit
	for {
		gate.wait(&st)
		bp, n, err := cr.read()
		if n > 0 {
			p := (*bp)[:n]
			st.Bytes += uint64(n)
			st.Chunks++
			lines := uint64(bytes.Count(p, []byte{'\n'}))
			st.Lines += lines
			partial := p[n-1] != '\n'
			if partial {
				st.Partials++
			}
			if log != nil {
				records := lines
				if partial {
					records++
				}
				if gate.pass(log, &st, p) {
					werr := log.writeChunkAt(s, p, cr.at)
					dests[0].record(logger, &st, "log", werr, uint64(n))
					if cnt != nil {
						cnt.logged(uint64(n), records, partial, werr)
					}
				} else {
					cnt.Drop(DropRateLimit, uint64(n), records)
				}
			}
			for i, w := range tee {
				m, werr := w.Write(p)
				if werr == nil && m < n {
					werr = io.ErrShortWrite
				}
				dests[1+i].record(logger, &st, teeName(i), werr, uint64(n-min(max(m, 0), n)))
			}
		}
		cr.release()
		if bp != nil {
			putReadBuf(bp)
		}
		if err == nil {
			continue
		}
		gate.finish(log, &st)
		cr.unorder()
		if log != nil { // the end of a line that never came (LogOptions.MaxLine)
			n, werr := log.flushLine(s)
			if n > 0 {
				dests[0].record(logger, &st, "log", werr, uint64(n))
			}
		}
		for i := range dests {
			dests[i].finish(logger, destName(i))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && isHandedOff(r) {
			// Stopped for a handoff: what the stream holds is the next
			// reader's (see StopForHandoff).
			return st, fmt.Errorf("read %s: %w", s, ErrHandedOff)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			st.UnreadBytes = cr.discard()
			if log != nil {
				cnt.Drop(DropUnread, st.UnreadBytes, 0)
			}
			if st.UnreadBytes > 0 {
				logger.Warn("output stream stopped with output left unread, dropping it",
					"unread_bytes", st.UnreadBytes)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, unix.EIO) {
			return st, nil
		}
		return st, fmt.Errorf("read %s: %w", s, err)
	}
}

func destName(i int) string {
	if i == 0 {
		return "log"
	}
	return teeName(i - 1)
}

func teeName(i int) string { return "tee" + strconv.Itoa(i) }

// destState tracks the current failure burst of one destination.
type destState struct {
	failing bool
	errors  uint64 // failed writes in this burst
	dropped uint64 // bytes dropped in this burst
}

func (d *destState) record(logger *slog.Logger, st *Stats, name string, err error, dropped uint64) {
	if err == nil {
		if d.failing {
			logger.Info("output destination recovered", "destination", name,
				"write_errors", d.errors, "dropped_bytes", d.dropped)
			*d = destState{}
		}
		return
	}
	st.WriteErrors++
	st.DroppedBytes += dropped
	if !d.failing {
		logger.Warn("output destination failing, dropping output until it recovers",
			"destination", name, "error", err)
		d.failing = true
	}
	d.errors++
	d.dropped += dropped
}

// finish reports a burst that lasted until the end of the stream.
func (d *destState) finish(logger *slog.Logger, name string) {
	if d.failing {
		logger.Warn("output destination still failing at end of stream", "destination", name,
			"write_errors", d.errors, "dropped_bytes", d.dropped)
	}
}

// chunkReader reads chunks into pooled buffers.
type chunkReader struct {
	r  io.Reader
	rc syscall.RawConn // nil: use r.Read
	// pipe is set when rc is a pipe: only pipe reads are batched.
	pipe bool
	// hot is set when the last read from the pipe brought at least
	// batchMin bytes: see batchDelay.
	hot bool
	// quota, when set, is the container's rate limit under the block
	// policy: each read is capped to the budget it reserves just before
	// the read(2), and a read finding none returns nothing (the loop then
	// waits for budget, see rateGate).
	quota *RateLimiter

	// log, when set, orders this loop's chunks with the other stream's
	// (see order.go); s is this loop's stream.
	log *Log
	s   Stream
	// locked is set while the current chunk holds log's read lock: from
	// its read until release.
	locked bool
	// at is when the current chunk was read.
	at time.Time
}

// batchDelay and batchMin batch the reads of a container that writes
// fast. When a read finds the pipe empty right after a read that brought
// at least batchMin bytes, the writer is busy: parking on the poller now
// would wake us again after its next write (64 KiB for most writers), a
// park and a wake-up (several context switches in the Go scheduler) per
// 64 KiB. Sleeping batchDelay instead lets the pipe (pipeSize) fill, so
// the reads that follow find full buffers and one wake-up serves hundreds
// of KiB. A quiet or slowly writing container never brings batchMin bytes
// in one read and is read as soon as data arrives; a burst costs at most
// batchDelay of extra latency for its tail.
const (
	batchDelay = 1 * time.Millisecond
	batchMin   = 16 << 10
)

func newChunkReader(r io.Reader) *chunkReader {
	cr := &chunkReader{r: r}
	if sc, ok := r.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cr.rc = rc
			cr.pipe = growPipe(rc)
		}
	}
	return cr
}

// pipeSize is the capacity asked for the pipes the read loops drain
// (F_SETPIPE_SZ). With the default 64 KiB a writer producing output fast
// fills the pipe while we write a chunk out and then sleeps until we read
// again, so writer and loop alternate, with wake-ups on both sides for
// every pipeful, and contend for the pipe's lock. With 1 MiB the writer
// keeps running while we write to the log, and batched reads (batchDelay)
// find data ready. The kernel allocates a pipe's pages only as data is
// buffered, so a quiet container's pipe costs no more than before.
// Measured on 100-byte lines (bench/, `make bench BENCH_FLAGS='-only
// logs'`): 473 -> 603 MB/s, 1.48 -> 1.25 CPU s/GB with 32 KiB reads.
const pipeSize = 1 << 20

// growPipe reports whether rc is a pipe and asks for a pipeSize pipe
// buffer, best effort: that fails with EPERM for an unprivileged user over
// /proc/sys/fs/pipe-user-pages-soft, and the loop works the same with the
// default size.
func growPipe(rc syscall.RawConn) bool {
	isPipe := false
	_ = rc.Control(func(fd uintptr) {
		sz, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return // not a pipe: a pty master, a socket
		}
		isPipe = true
		if sz < pipeSize {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) // best effort, see above
		}
	})
	return isPipe
}

// read returns a pooled buffer holding n > 0 bytes (and possibly an error
// that came with them), or a nil buffer and n == 0 with an error (io.EOF at
// end of stream) or, from a misbehaving io.Reader, without one. The caller returns the buffer with
// putReadBuf. For an ordered reader (see order.go) a chunk comes with
// the Log's read lock held, which the caller drops with release once it has
// handed the chunk on; cr.at is the time of its read.
func (cr *chunkReader) read() (*[]byte, int, error) {
	if cr.rc != nil {
		bp, n, err, ok := cr.rawRead()
		if ok && n == 0 && err == nil { // empty after a burst
			time.Sleep(batchDelay)
			bp, n, err, ok = cr.rawRead() // not hot now: waits if still empty
		}
		cr.hot = cr.pipe && n >= batchMin
		if ok {
			return bp, n, err
		}
		// The poller could not wait (r was closed, or its fd cannot be
		// polled): use plain reads from now on; they block when they must
		// and report a closed file as os.ErrClosed.
		cr.rc = nil
		cr.unorder() // such reads cannot hold the lock
	}
	bp := getReadBuf()
	buf := cr.budget(*bp)
	if len(buf) == 0 {
		putReadBuf(bp)
		return nil, 0, nil // no budget: the caller waits for it
	}
	n, err := cr.r.Read(buf)
	cr.refund(buf, n)
	if n > 0 {
		// A read that may block cannot hold the lock: only the hand-off
		// is ordered, stamped with the time of the read.
		cr.stamp()
		if cr.log != nil {
			cr.log.order.mu.Lock()
			cr.locked = true
		}
		return bp, n, err // the caller hands on the data before it looks at err
	}
	putReadBuf(bp)
	return nil, 0, err
}

// budget returns b, capped to the budget reserved for one read under the
// block policy (possibly empty); refund returns what the read of n bytes
// into it did not use.
func (cr *chunkReader) budget(b []byte) []byte {
	if cr.quota == nil {
		return b
	}
	return b[:cr.quota.reserve(len(b))]
}

func (cr *chunkReader) refund(b []byte, n int) {
	if cr.quota != nil {
		cr.quota.refund(len(b) - max(n, 0))
	}
}

// rawRead waits for readability without holding a buffer, then takes one
// and reads (an ordered reader under its Log's read lock: see order.go).
// ok is false when the poller itself failed. When the pipe is empty and
// hot is set it clears hot and returns no buffer, no error and ok, without
// waiting.
func (cr *chunkReader) rawRead() (bp *[]byte, n int, err error, ok bool) {
	var opErr error
	werr := cr.rc.Read(func(fd uintptr) bool {
		b := getReadBuf()
		buf := cr.budget(*b)
		if len(buf) == 0 {
			putReadBuf(b)
			return true // no budget: returns nothing, the loop waits for it, holding no lock
		}
		lk := readUnlocked
		if cr.log != nil {
			lk = cr.lockRead(fd)
		}
		if lk == readWait {
			n, opErr = -1, unix.EAGAIN // as if empty: wait outside the lock
		} else {
			for {
				n, opErr = unix.Read(int(fd), buf)
				if !errors.Is(opErr, unix.EINTR) {
					break
				}
			}
		}
		cr.refund(buf, n)
		if n > 0 {
			cr.stamp()
		}
		if cr.log != nil && lk == readUnlocked && n > 0 {
			cr.lockAfterRead()
			lk = readLocked
		}
		if cr.log != nil && lk == readLocked {
			cr.readDone(n)
		}
		if errors.Is(opErr, unix.EAGAIN) {
			putReadBuf(b)
			if cr.hot {
				cr.hot = false
				opErr = nil
				return true // the caller sleeps batchDelay and reads again
			}
			return false // wait for readability, holding no buffer
		}
		bp = b
		return true
	})
	if werr != nil {
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			return nil, 0, werr, true // the owner stops the loop: see ReadLoop
		}
		return nil, 0, nil, false
	}
	switch {
	case bp == nil: // empty after a burst, see hot
		return nil, 0, nil, true
	case opErr != nil:
		putReadBuf(bp)
		return nil, 0, os.NewSyscallError("read", opErr), true
	case n == 0:
		putReadBuf(bp)
		return nil, 0, io.EOF, true
	}
	return bp, n, nil, true
}

// discard reads what is left in the stream without waiting, up to
// maxUnread bytes, and returns how much it read. Only a pollable stream
// (read without blocking) can be emptied; for others it returns 0.
func (cr *chunkReader) discard() uint64 {
	if cr.rc == nil {
		return 0
	}
	bp := getReadBuf()
	defer putReadBuf(bp)
	var total uint64
	_ = cr.rc.Control(func(fd uintptr) {
		for total < maxUnread {
			n, err := unix.Read(int(fd), *bp)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n <= 0 {
				return // EAGAIN: empty; 0: EOF
			}
			total += uint64(n)
		}
	})
	return total
}
