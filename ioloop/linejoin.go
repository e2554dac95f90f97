package ioloop

import (
	"bytes"
	"sync/atomic"
	"time"
)

// LogOptions shape a Log.
type LogOptions struct {
	// MaxLine > 0 joins the pieces of a line that the container's output
	// brought over several reads into one record of up to MaxLine bytes
	// (without its '\n'), as containerd's max_container_log_line_size
	// does: the sinks get whole lines, and a longer line is cut into
	// MaxLine-byte pieces (P records in the CRI log) followed by its rest
	// (the F record). A piece without '\n' is held until its line ends,
	// MaxLine is reached, or the stream ends, so a prompt without a newline
	// reaches the log late (attach clients still get it at once). The
	// memory is bounded by MaxLine per stream. 0 writes each read's
	// trailing piece as its own record right away (conmon-rs's behaviour).
	MaxLine int
}

// NewLogWith is NewLog with options.
func NewLogWith(opts LogOptions, sinks ...Sink) *Log {
	l := NewLog(sinks...)
	l.maxLine = max(opts.MaxLine, 0)
	return l
}

// lineJoiner holds the start of a stream's current line while its end has
// not been read (LogOptions.MaxLine). Guarded by Log.mu, but holding.
type lineJoiner struct {
	// buf holds at most maxLine bytes, never a '\n'.
	buf []byte
	// holding is len(buf) > 0, readable without Log.mu: a loop ending
	// with nothing held does not wait for the lock (a log write of the
	// other stream may be stuck).
	holding atomic.Bool
}

// keepJoinBuf is the largest buffer a lineJoiner keeps once its line was
// written: a long line's buffer (up to MaxLine) is given back, so only a
// stream in the middle of a long line holds that much.
const keepJoinBuf = 64 << 10

// joinLines hands p (read from s at t) to the sinks as whole lines of up to
// l.maxLine bytes, holding a trailing piece back for the next chunk. With
// mu held and maxLine > 0.
func (l *Log) joinLines(s Stream, p []byte, t time.Time) error {
	j := &l.lines[s]
	defer func() { j.holding.Store(len(j.buf) > 0) }()
	var errs error
	emit := func(b []byte) {
		if err := l.fanOut(s, b, t); err != nil && errs == nil {
			errs = err
		}
	}
	for len(p) > 0 {
		nl := bytes.IndexByte(p, '\n')
		if len(j.buf) == 0 {
			// Nothing held: whole lines go through as they are, without
			// a copy; only the trailing piece is held.
			last := bytes.LastIndexByte(p, '\n')
			if last == len(p)-1 {
				emit(p)
				return errs
			}
			if last >= 0 {
				emit(p[:last+1])
				p = p[last+1:]
			}
			for len(p) > l.maxLine { // more follows: a full piece
				emit(p[:l.maxLine])
				p = p[l.maxLine:]
			}
			j.buf = append(j.buf, p...)
			return errs
		}
		content, ended := p, false
		if nl >= 0 {
			content, ended = p[:nl], true
			p = p[nl+1:]
		} else {
			p = nil
		}
		for len(j.buf)+len(content) > l.maxLine {
			room := l.maxLine - len(j.buf)
			j.buf = append(j.buf, content[:room]...)
			content = content[room:]
			emit(j.buf)
			j.buf = j.buf[:0]
		}
		j.buf = append(j.buf, content...)
		if ended {
			j.buf = append(j.buf, '\n')
			emit(j.buf)
			j.reset()
		}
	}
	return errs
}

// reset empties the joiner, giving a large buffer back.
func (j *lineJoiner) reset() {
	if cap(j.buf) > keepJoinBuf {
		j.buf = nil
		return
	}
	j.buf = j.buf[:0]
}

// flushLine writes what is held of s's current line as a partial record
// (the stream ended without its '\n') and returns its size.
func (l *Log) flushLine(s Stream) (int, error) {
	if l.maxLine == 0 || !l.lines[s].holding.Load() {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushLineLocked(s)
}

func (l *Log) flushLineLocked(s Stream) (int, error) {
	j := &l.lines[s]
	n := len(j.buf)
	if n == 0 || l.closed {
		return 0, nil
	}
	err := l.fanOut(s, j.buf, time.Now())
	j.reset()
	j.holding.Store(false)
	return n, err
}
