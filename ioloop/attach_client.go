package ioloop

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/internal/netguard"
)

// attachClient is one attach connection. Its reader forwards stdin; its
// writer drains the output queue. Whichever of the two ends last closes the
// connection and removes the client.
type attachClient struct {
	conn              *net.UnixConn
	lc                *netguard.Conn // conn's place in the server's limiter; closed by release
	stopAfterStdinEOF bool
	wake              chan struct{} // capacity 1: "the queue or the state changed"
	released          chan struct{} // closed when the client is forgotten (release)

	// mu guards the fields below.
	mu         sync.Mutex
	queue      []attachMsg // guarded by mu
	queued     int         // guarded by mu; payload bytes in queue
	doneQueued bool        // guarded by mu; nothing is queued after done
	closing    bool        // guarded by mu; server closing: flush, then close
	gone       bool        // guarded by mu; the peer hung up: stop writing
	writerDone bool        // guarded by mu
	refs       int         // guarded by mu; running goroutines (reader, writer)
	dropped    uint64      // guarded by mu; chunks dropped (queue full)
	droppedB   uint64      // guarded by mu; bytes dropped
	sent       uint64      // guarded by mu; chunks written
}

// enqueue queues m unless the client is past done or its queue is full
// (then m is dropped and counted). It never blocks.
func (c *attachClient) enqueue(m attachMsg, limit int) {
	c.mu.Lock()
	switch {
	case c.doneQueued || c.gone || c.writerDone:
		c.mu.Unlock()
		return
	case m.pipe != AttachPipeDone && c.queued+len(m.data) > limit:
		c.dropped++
		c.droppedB += uint64(len(m.data))
		c.mu.Unlock()
		return
	}
	c.queue = append(c.queue, m)
	c.queued += len(m.data)
	if m.pipe == AttachPipeDone {
		c.doneQueued = true
	}
	c.mu.Unlock()
	c.poke()
}

func (c *attachClient) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// shutdown starts the client's end: with done (Close), queue the done
// message; without it (a handoff), end after what is queued, as if the
// connection dropped. Bound the flush by deadline, and close the
// connection once the writer is finished.
func (c *attachClient) shutdown(deadline time.Time, done bool) {
	_ = c.conn.SetWriteDeadline(deadline) // fails only when already closed
	c.mu.Lock()
	c.closing = true
	if done && !c.doneQueued && !c.gone {
		c.queue = append(c.queue, attachMsg{pipe: AttachPipeDone})
		c.doneQueued = true
	}
	writerDone := c.writerDone
	c.mu.Unlock()
	if writerDone {
		stopReader(c.conn)
		return
	}
	c.poke()
}

// next waits for the next message. ok is false when the writer should
// stop without writing more (peer gone, or closing with an empty queue).
func (c *attachClient) next() (attachMsg, bool) {
	for {
		c.mu.Lock()
		if c.gone {
			c.mu.Unlock()
			return attachMsg{}, false
		}
		if len(c.queue) > 0 {
			m := c.queue[0]
			c.queue[0] = attachMsg{}
			c.queue = c.queue[1:]
			c.queued -= len(m.data)
			c.mu.Unlock()
			return m, true
		}
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return attachMsg{}, false
		}
		<-c.wake
	}
}

// writeLoop is the client's writer goroutine. A panic in it ends this
// client only (hangUp); the release still runs.
func (s *AttachServer) writeLoop(c *attachClient) {
	defer s.wg.Done()
	defer contain.Recover(s.log, contain.Attach, func(*contain.PanicError) {
		c.hangUp(true)
		s.release(c)
	})
	var frame []byte
	for {
		m, ok := c.next()
		if !ok {
			break
		}
		if frame == nil {
			frame = make([]byte, 0, 1+AttachMaxPayload)
		}
		if testHookAttachWrite != nil {
			testHookAttachWrite(m.pipe, m.data)
		}
		if err := writeFrames(c.conn, frame, m); err != nil {
			s.log.Debug("attach client not writable", "error", err)
			break
		}
		c.mu.Lock()
		c.sent++
		c.mu.Unlock()
		if m.pipe == AttachPipeDone {
			break
		}
	}
	c.mu.Lock()
	c.writerDone = true
	c.queue, c.queued = nil, 0
	closing := c.closing
	c.mu.Unlock()
	if closing {
		stopReader(c.conn)
	}
	s.release(c)
}

// writeFrames writes m as seqpacket messages of at most 1+AttachMaxPayload
// bytes, using frame as scratch space.
func writeFrames(conn *net.UnixConn, frame []byte, m attachMsg) error {
	if m.pipe == AttachPipeDone {
		_, err := conn.Write([]byte{AttachPipeDone})
		return err
	}
	for p := m.data; len(p) > 0; {
		n := min(len(p), AttachMaxPayload)
		frame = append(frame[:0], m.pipe)
		frame = append(frame, p[:n]...)
		if _, err := conn.Write(frame); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// readLoop is the client's reader goroutine: client messages go to the
// container's stdin unchanged. NUL bytes are data: conmon-rs v1.0 drops
// them (v0.7.3 cut the message at the first one), which corrupts binary
// input and Ctrl-@ keystrokes; no client relies on it, so gomon does not.
// Reads take a pooled 128 KiB buffer (readBufSize) only once a message is
// ready; the Go client writes at most 32 KiB per message (io.Copy's
// buffer), and a larger message would be cut at 128 KiB (conmon-rs cuts at
// 8 KiB).
//
// A panic in it (in the container's stdin, say) ends this client only: it
// is hung up (hangUp), and the release still runs.
func (s *AttachServer) readLoop(c *attachClient) {
	defer s.wg.Done()
	defer s.release(c)
	defer contain.Recover(s.log, contain.Attach, func(*contain.PanicError) { c.hangUp(false) })
	cr := newChunkReader(c.conn)
	for {
		bp, n, err := cr.read()
		if n > 0 {
			s.writeStdin((*bp)[:n])
		}
		if bp != nil {
			putReadBuf(bp)
		}
		if err == nil {
			if n == 0 { // a misbehaving reader; conns always report EOF
				err = io.EOF
			} else {
				continue
			}
		}
		if !errors.Is(err, io.EOF) {
			return // closed by us, or a connection error
		}
		if c.stopAfterStdinEOF && s.stdin != nil {
			s.log.Debug("attach client stdin EOF, closing container stdin")
			s.stdin.CloseStdin()
		}
		if peerHungUp(c.conn) {
			// The client closed the connection, not just its writing
			// side: nobody will read output any more.
			c.mu.Lock()
			c.gone = true
			c.mu.Unlock()
			c.poke()
		}
		return
	}
}

// testHookAttachWrite, when set by a test, is called before each message
// is written to a client: a seam to inject a panic in a writer.
var testHookAttachWrite func(pipe byte, data []byte)

// hangUp ends a client after a panic in one of its goroutines: nothing
// more is queued or written, and the other goroutine is ended: a panicked
// writer stops the reader (stopReader); a panicked reader is done with the
// connection, which is closed, ending a write in progress. writer says the
// writer panicked, and will not run its own end.
func (c *attachClient) hangUp(writer bool) {
	c.mu.Lock()
	c.gone = true
	if writer {
		c.writerDone = true
		c.queue, c.queued = nil, 0
	}
	c.mu.Unlock()
	c.poke()
	if writer {
		stopReader(c.conn)
		return
	}
	closeConn(c.conn)
}

// release drops one goroutine's reference; the last one closes the
// connection, forgets the client and reports drops.
func (s *AttachServer) release(c *attachClient) {
	c.mu.Lock()
	c.refs--
	last := c.refs == 0
	dropped, droppedB, sent := c.dropped, c.droppedB, c.sent
	c.mu.Unlock()
	if !last {
		return
	}
	closeConn(c.conn) // both goroutines are done with it
	_ = c.lc.Close()  // frees its place; the connection is closed already
	s.mu.Lock()
	delete(s.clients, c)
	s.mu.Unlock()
	close(c.released)
	s.droppedChunks.Add(dropped)
	s.droppedBytes.Add(droppedB)
	if dropped > 0 {
		s.log.Warn("attach client was too slow, output dropped for it",
			"dropped_chunks", dropped, "dropped_bytes", droppedB, "sent_messages", sent)
	} else {
		s.log.Debug("attach client disconnected", "sent_messages", sent)
	}
}

// peerHungUp reports whether the peer closed its socket entirely (POLLHUP),
// as opposed to only shutting down its writing side (POLLRDHUP).
func peerHungUp(conn *net.UnixConn) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	cerr := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			hup = fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0
		}
	})
	return cerr != nil || hup
}

// stopReader makes the client's reader return at its next message
// boundary: its read deadline passes. The reader takes messages in order,
// so it stops after a prefix of the client's input and never past its
// stdin EOF. It is not a close: the last goroutine to finish closes the
// connection (closeConn), so the queued input is discarded only once
// nobody reads it. A discard while the reader runs would race it: the
// discard could take the client's EOF (an empty message) and leave the
// reader the input typed after it.
func stopReader(conn *net.UnixConn) {
	_ = conn.SetReadDeadline(time.Now()) // fails only when closed: then the reader has ended
}

// closeConn closes an attach connection, nobody reading it any more,
// without resetting it. Closing a unix socket whose receive queue still
// holds client messages (input sent after the client's stdin EOF, or
// racing the close) makes the client's next read fail with ECONNRESET
// before it sees the output and done message already queued for it. So the
// queued input is discarded first; then our reading side is shut down, so
// later client writes fail (EPIPE) instead of queueing, and what slipped
// in before that is discarded too.
func closeConn(conn *net.UnixConn) {
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(discardInput) // fails only when closed
		if conn.CloseRead() == nil {
			_ = rc.Control(discardInput)
		}
	}
	_ = conn.Close() // nothing to do on error: the connection is gone either way
}

// discardInput reads and drops the queued messages without waiting. A
// one-byte buffer suffices: a seqpacket read drops the rest of its
// message. An empty read is an empty message or the end of input (the
// peer or we shut the direction down); it stops the loop unless bytes are
// still queued. Empty messages at the very end of the queue can remain.
func discardInput(fd uintptr) {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // EAGAIN: nothing queued
		}
		if n == 0 {
			if queued, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err != nil || queued == 0 {
				return
			}
		}
	}
}
