// Package netguard keeps gomon's listening sockets serving through what a
// hostile neighbour or an unlucky node does to them: accept errors (fd
// exhaustion and the like) and connection floods.
//
// An accept loop that returns on an error would leave the daemon without
// its API (conmon.sock) or its streaming port; on conmon.sock that used to
// end the daemon and, with it, every container of the pod. AcceptRetry
// paces the retries instead. Limiter caps the connections held per socket,
// so a flood cannot exhaust the daemon's fds or memory.
package netguard

import (
	"container/list"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Backoff bounds of AcceptRetry: the first retry comes soon (a burst of
// EMFILE usually ends as soon as a connection closes), later ones at most
// once a second so a lasting fault costs no CPU.
const (
	MinAcceptBackoff = 5 * time.Millisecond
	MaxAcceptBackoff = time.Second
	// episodeGap separates episodes of accept errors: errors that come
	// within it of the previous one (a flood flapping at the fd limit)
	// belong to the same episode and are not logged again.
	episodeGap = 10 * time.Second
)

// AcceptRetry paces one accept loop through accept errors and logs each
// episode of them twice at most: when it starts and when accept first
// succeeds again. It is owned by the accept loop's goroutine, except
// Errors.
type AcceptRetry struct {
	Log  *slog.Logger
	What string // the socket, for the log

	inEpisode bool      // an episode is running or recovering
	recovered bool      // its recovery was logged
	since     time.Time // start of the episode
	lastFail  time.Time
	failures  int // in this episode
	delay     time.Duration
	total     atomic.Int64
}

// Failed records err and waits before the next accept, doubling the wait
// up to MaxAcceptBackoff. It returns false, at once, if done is closed.
func (r *AcceptRetry) Failed(err error, done <-chan struct{}) bool {
	r.total.Add(1)
	now := time.Now()
	if !r.inEpisode || now.Sub(r.lastFail) > episodeGap {
		r.inEpisode, r.recovered = true, false
		r.since, r.failures = now, 0
		r.Log.Warn("accept failing; retrying with backoff until it recovers",
			"socket", r.What, "error", err, "transient", Transient(err))
	}
	r.failures++
	r.lastFail = now
	if r.delay == 0 {
		r.delay = MinAcceptBackoff
	} else {
		r.delay = min(2*r.delay, MaxAcceptBackoff)
	}
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}

// Succeeded records a successful accept: the backoff starts again from
// its minimum, and the first success of an episode is logged.
func (r *AcceptRetry) Succeeded() {
	r.delay = 0
	if !r.inEpisode || r.recovered {
		return
	}
	r.recovered = true
	r.Log.Info("accept recovered", "socket", r.What, "failures", r.failures,
		"duration", time.Since(r.since).Round(time.Millisecond))
}

// Accept returns the next connection l accepts and lim admits. Accept
// errors are retried through r, and connections lim refuses are closed
// and skipped. It returns an error only when l is closed (net.ErrClosed)
// or done is closed while it backs off (that accept error).
func Accept(l net.Listener, lim *Limiter, r *AcceptRetry, done <-chan struct{}) (*Conn, error) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || !r.Failed(err, done) {
				return nil, err
			}
			continue
		}
		r.Succeeded()
		if lc := lim.Admit(c); lc != nil {
			return lc, nil
		}
	}
}

// Errors returns the number of accept errors seen so far. Safe for
// concurrent use.
func (r *AcceptRetry) Errors() int64 { return r.total.Load() }

// Transient reports whether an accept error is one that passes on its
// own: the process or system is out of fds or memory, or a connection was
// aborted before it was accepted. Other errors are retried too (the
// daemon's containers stay monitored either way), but logged as such.
func Transient(err error) bool {
	for _, e := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Limiter caps the connections one socket holds at once. A connection is
// "quiet" from its admission until the server marks it Active (it has
// sent its first bytes, or its request head). At the cap, a new
// connection takes the place of the oldest quiet one, which is closed; if
// none is quiet the new connection is closed at once. So a flood of
// connections that say nothing can neither exhaust fds nor lock out a
// client that speaks promptly, and a connection that has been served is
// never dropped for a newcomer. Rejections and evictions are counted and
// logged once per flood. Safe for concurrent use.
type Limiter struct {
	max  int
	log  *slog.Logger
	what string
	// OnFloodOver, if set before the first Admit, is called (without
	// locks held, on the goroutine that closed the connection) when a
	// flood has ended, e.g. to hand the memory its connections used back
	// to the OS.
	OnFloodOver func()

	// mu guards the fields below and the elem and released fields of
	// every Conn.
	mu              sync.Mutex
	live            int       // admitted, not yet closed
	quiet           list.List // of *Conn not yet active, oldest first
	flooding        bool      // the limit was reached, not yet relieved
	episodeRejected int       // in this flood
	episodeEvicted  int       // in this flood

	rejected, evicted atomic.Int64
}

// NewLimiter returns a Limiter of at most limit connections (at least 1).
func NewLimiter(limit int, what string, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{max: max(limit, 1), log: log, what: what}
}

// Conn is an admitted connection. Closing it frees its place.
type Conn struct {
	net.Conn
	l        *Limiter
	active   atomic.Bool
	elem     *list.Element // guarded by l.mu; in l.quiet while quiet
	released bool          // guarded by l.mu
}

// Admit takes c in, or closes it and returns nil when the socket is full
// of active connections.
func (l *Limiter) Admit(c net.Conn) *Conn {
	var evict *Conn
	l.mu.Lock()
	if l.live >= l.max {
		if front := l.quiet.Front(); front != nil {
			evict = front.Value.(*Conn)
			l.releaseLocked(evict) // cannot end the flood: the socket is full
			l.evicted.Add(1)
			l.episodeEvicted++
		} else {
			l.rejected.Add(1)
			l.episodeRejected++
		}
		if !l.flooding {
			l.flooding = true
			l.log.Warn("connection limit reached; closing the oldest quiet connection or, if none, the new one",
				"socket", l.what, "limit", l.max)
		}
		if evict == nil {
			l.mu.Unlock()
			_ = c.Close() // refused; nothing was read from it
			return nil
		}
	}
	lc := &Conn{Conn: c, l: l}
	lc.elem = l.quiet.PushBack(lc)
	l.live++
	l.mu.Unlock()
	if evict != nil {
		_ = evict.Conn.Close() // its server sees the close and ends
	}
	return lc
}

// releaseLocked frees c's place once and reports whether that ended a
// flood. Called with l.mu held.
func (l *Limiter) releaseLocked(c *Conn) (floodOver bool) {
	if c.released {
		return false
	}
	c.released = true
	if c.elem != nil {
		l.quiet.Remove(c.elem)
		c.elem = nil
	}
	l.live--
	// A flood is over once there is room for a quarter of the limit
	// again, so a flood that hovers at the limit is logged once.
	if l.flooding && l.live <= l.max*3/4 {
		l.flooding = false
		l.log.Info("connection flood over", "socket", l.what,
			"rejected", l.episodeRejected, "evicted", l.episodeEvicted)
		l.episodeRejected, l.episodeEvicted = 0, 0
		return true
	}
	return false
}

// Active marks c as served: it no longer gives way to newcomers. Cheap
// after the first call.
func (c *Conn) Active() {
	if c.active.Swap(true) {
		return
	}
	c.l.mu.Lock()
	if c.elem != nil {
		c.l.quiet.Remove(c.elem)
		c.elem = nil
	}
	c.l.mu.Unlock()
}

// Close closes the connection and frees its place. It is idempotent.
func (c *Conn) Close() error {
	c.l.mu.Lock()
	over := c.l.releaseLocked(c)
	c.l.mu.Unlock()
	if over && c.l.OnFloodOver != nil {
		c.l.OnFloodOver()
	}
	return c.Conn.Close()
}

// LimiterStats are a Limiter's counters.
type LimiterStats struct {
	Live     int   // connections held now
	Rejected int64 // closed at once: the socket was full of active ones
	Evicted  int64 // quiet connections closed to make room
}

// Stats returns the counters.
func (l *Limiter) Stats() LimiterStats {
	l.mu.Lock()
	live := l.live
	l.mu.Unlock()
	return LimiterStats{Live: live, Rejected: l.rejected.Load(), Evicted: l.evicted.Load()}
}
