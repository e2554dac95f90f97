package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gomon-dev/gomon/cmd/gomon/internal/cli"
	"github.com/gomon-dev/gomon/ioloop"
)

// journalSocketEnv, when set, replaces journalSocket in the launcher and
// the daemon. It exists for tests that must run the real binary against a
// journald they control (a stalled or a stale one); it names only where
// gomon's own log goes, never anything a container writes.
const journalSocketEnv = "_GOMON_TEST_JOURNAL_SOCKET"

// journalSocket is where the daemon's own log goes with the systemd
// driver: ioloop.JournalSocket, or journalSocketEnv when set. A variable so
// tests can point it at a socket of their own.
var journalSocket = func() string {
	if p := os.Getenv(journalSocketEnv); p != "" {
		return p
	}
	return ioloop.JournalSocket
}()

// Limits of the daemon's own journald logging. Logging never waits for
// journald: a record is queued and one goroutine sends it; what does not
// fit or is not taken in time is dropped, counted and reported in a record
// of its own once journald takes records again.
const (
	// journalSendTimeout bounds how long one record may wait for a
	// congested journald, the same bound as the containers' journald sink.
	journalSendTimeout = 2 * time.Second
	// journalQueueRecords and journalQueueBytes bound the records waiting
	// to be sent (a goroutine dump on SIGUSR1 is one record of up to 1 MiB).
	journalQueueRecords = 4096
	journalQueueBytes   = 4 << 20
	// journalCloseTimeout bounds the final flush at shutdown, which the
	// conmon-rs client waits for (10 s for the whole process).
	journalCloseTimeout = time.Second
)

// Limits of the fallback log file, <run-dir>/gomon.log, written when the
// daemon's log has nowhere else to go. The run dir is usually on a tmpfs
// (memory), so the file is rotated once: at most fallbackLogMax bytes in
// gomon.log plus as much in gomon.log.1.
const (
	fallbackLogName = "gomon.log"
	fallbackLogMax  = 4 << 20
)

// journalReachable reports (as a nil error) whether something receives
// datagrams on journalSocket: connecting tells a listening journald from a
// socket file left behind by a dead one (ECONNREFUSED) or none at all.
func journalReachable() error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: journalSocket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("connect to journal: %w", err)
	}
	_ = c.Close() // only a probe
	return nil
}

// levelTrace is conmon-rs's "trace", below slog's Debug.
const levelTrace = cli.LevelTrace

// slogLevel is the level of the daemon's own log for a --log-level name.
func slogLevel(s string) slog.Level { return cli.SlogLevel(s) }

// newLogger builds the server's own logger for --log-driver and
// --log-level: "none" and "off" discard; "stdout" writes text lines with
// timestamps to stdout; "systemd" sends to the journal without ever
// blocking its caller (see journalQueue).
//
// When the journal cannot be reached (no systemd on this host, or a
// socket file nobody listens on), or stdout's reader goes away, the log
// goes to stderr or, when stderr is /dev/null (as the conmon-rs client
// leaves it for the systemd driver), to <runDir>/gomon.log; the first
// record there says why, once.
func newLogger(driver, level, runDir string) (*slog.Logger, func()) {
	if driver == "none" || level == "off" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	opts := &slog.HandlerOptions{Level: slogLevel(level)}
	if driver == "stdout" {
		o := newLogOutput(os.Stdout, "stdout", runDir)
		return slog.New(slog.NewTextHandler(o, opts)), o.close
	}
	// systemd
	err := journalReachable()
	var sender *ioloop.JournalSender
	if err == nil {
		sender, err = ioloop.NewJournalSender(journalSocket)
	}
	if err == nil {
		q := newJournalQueue(sender)
		go q.run()
		return slog.New(&journalHandler{q: q, level: opts.Level.Level()}), q.close
	}
	var out *logOutput
	if stderrUsable() {
		out = newLogOutput(os.Stderr, "stderr", runDir)
	} else {
		out = newLogOutput(nil, "", runDir)
	}
	log := slog.New(slog.NewTextHandler(out, opts))
	log.Warn("no systemd journal reachable; logging here instead",
		"socket", journalSocket, "error", err, "destination", out.destination())
	return log, out.close
}

// stderrUsable reports whether stderr leads somewhere: open, and not
// /dev/null.
func stderrUsable() bool {
	fi, err := os.Stderr.Stat()
	if err != nil {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// logOutput is where the daemon's text log goes: w until a write to it
// fails with EPIPE (its reader went away: gomon ignores SIGPIPE, so the
// write fails instead of killing the daemon), then <runDir>/gomon.log,
// whose first line says so. With w nil it is the file from the start.
type logOutput struct {
	runDir string

	mu   sync.Mutex // guards the fields below and serialises writes
	w    io.Writer
	name string
	file *rotatingFile // non-nil once the file is in use
}

func newLogOutput(w io.Writer, name, runDir string) *logOutput {
	o := &logOutput{runDir: runDir, w: w, name: name}
	if w == nil {
		o.useFile("")
	}
	return o
}

// useFile switches to the fallback file, noting why when from names the
// output that failed; without a file (the run dir is unusable) the log is
// discarded, as there is nowhere left to say so. Called with mu held or
// before o is shared.
func (o *logOutput) useFile(from string) {
	path := filepath.Join(o.runDir, fallbackLogName)
	f, err := openRotatingFile(path, fallbackLogMax)
	if err != nil {
		o.w, o.name = io.Discard, "nowhere ("+err.Error()+")"
		return
	}
	o.file, o.w, o.name = f, f, path
	if from != "" {
		_, _ = fmt.Fprintf(f, "time=%s level=WARN msg=%q previous=%s\n",
			time.Now().Format(time.RFC3339Nano), "log output closed (broken pipe); logging here instead", from)
	}
}

func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.w.Write(p)
	if err == nil || !errors.Is(err, syscall.EPIPE) || o.file != nil {
		return n, err
	}
	o.useFile(o.name)
	return o.w.Write(p)
}

// destination names where the log goes now.
func (o *logOutput) destination() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.name
}

func (o *logOutput) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.file != nil {
		_ = o.file.close() // nothing left to report it to
	}
}

// rotatingFile appends to path and, before a write would take it past
// max bytes, renames it to path.1 (replacing the previous one) and starts
// a new file. It never follows a symlink planted at path.
type rotatingFile struct {
	path string
	max  int64

	mu   sync.Mutex // guards f and size
	f    *os.File
	size int64
}

func openRotatingFile(path string, limit int64) (*rotatingFile, error) {
	r := &rotatingFile{path: path, max: limit}
	if err := r.open(0); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open(extra int) error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|extra|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("open log file: %w", err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return 0, fmt.Errorf("write log file: %w", os.ErrClosed)
	}
	if r.size > 0 && r.size+int64(len(p)) > r.max {
		if err := os.Rename(r.path, r.path+".1"); err != nil {
			return 0, fmt.Errorf("rotate log file: %w", err)
		}
		_ = r.f.Close() // renamed away; a new file takes over
		r.f = nil
		if err := r.open(os.O_TRUNC); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write log file: %w", err)
	}
	return n, nil
}

func (r *rotatingFile) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	if err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	return nil
}

// journalQueue decouples logging from journald: Handle only encodes a
// record and queues it (or drops and counts it when the queue is full),
// and one goroutine, run, owned by close, sends the queue, each record
// waiting journalSendTimeout at most. A journald that stalls or vanishes
// therefore never delays a create, an exit file or start-up, and what it
// misses is reported by the first record it takes afterwards.
type journalQueue struct {
	sender *ioloop.JournalSender // used by run only

	mu      sync.Mutex // guards entries, size and dropped
	entries [][]byte
	size    int    // bytes in entries
	dropped uint64 // records lost since the last report that was sent

	wake      chan struct{} // capacity 1: entries were queued
	quit      chan struct{} // closed by close
	done      chan struct{} // closed when run returns
	closeOnce sync.Once
}

func newJournalQueue(s *ioloop.JournalSender) *journalQueue {
	return &journalQueue{sender: s, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// push queues one entry without blocking.
func (q *journalQueue) push(b []byte) {
	q.mu.Lock()
	if len(q.entries) >= journalQueueRecords || q.size+len(b) > journalQueueBytes {
		q.dropped++
		q.mu.Unlock()
		return
	}
	q.entries = append(q.entries, b)
	q.size += len(b)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default: // run is already due to look
	}
}

// run sends queued entries until close, then makes a last bounded pass.
func (q *journalQueue) run() {
	defer close(q.done)
	for {
		select {
		case <-q.wake:
			q.flush(time.Time{})
		case <-q.quit:
			q.flush(time.Now().Add(journalCloseTimeout))
			return
		}
	}
}

// flush sends what is queued now. Each entry may wait journalSendTimeout
// (or until final, when set); once one is not taken, journald is not
// keeping up, so the rest of this batch is dropped at once rather than
// made to wait in turn, and new records get the next try.
func (q *journalQueue) flush(final time.Time) {
	q.mu.Lock()
	batch := q.entries
	q.entries, q.size = nil, 0
	q.mu.Unlock()
	for i, b := range batch {
		deadline := final
		if deadline.IsZero() {
			deadline = time.Now().Add(journalSendTimeout)
		}
		if err := q.sender.Send(b, deadline); err != nil {
			q.mu.Lock()
			q.dropped += uint64(len(batch) - i)
			q.mu.Unlock()
			return
		}
		q.reportDropped(deadline)
	}
}

// reportDropped sends, after a record journald took, how many were lost
// before it.
func (q *journalQueue) reportDropped(deadline time.Time) {
	q.mu.Lock()
	n := q.dropped
	q.mu.Unlock()
	if n == 0 {
		return
	}
	msg := "journald did not take the daemon's log in time; records dropped dropped_records=" + strconv.FormatUint(n, 10)
	b := journalHeader(slog.LevelWarn)
	b = ioloop.AppendJournalField(b, "GOMON_DROPPED_RECORDS", strconv.FormatUint(n, 10))
	b = ioloop.AppendJournalField(b, "MESSAGE", msg)
	if q.sender.Send(b, deadline) != nil {
		return // still counted; the next record taken reports it
	}
	q.mu.Lock()
	q.dropped -= n
	q.mu.Unlock()
}

// close stops run after a last flush bounded by journalCloseTimeout and
// closes the socket. A second call does nothing.
func (q *journalQueue) close() {
	q.closeOnce.Do(func() {
		close(q.quit)
		<-q.done
		_ = q.sender.Close() // a datagram socket: nothing buffered to lose
	})
}

// journalHeader starts a journald entry of the daemon's own log at level l.
func journalHeader(l slog.Level) []byte {
	b := ioloop.AppendJournalField(nil, "SYSLOG_IDENTIFIER", "gomon")
	return ioloop.AppendJournalField(b, "PRIORITY", strconv.Itoa(priority(l)))
}

// journalHandler writes records to journald with the native protocol:
// one datagram of KEY=value lines per record, queued (see journalQueue).
type journalHandler struct {
	q     *journalQueue
	level slog.Level
	attrs []slog.Attr
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	var msg strings.Builder
	msg.WriteString(r.Message)
	for _, a := range h.attrs {
		appendAttr(&msg, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&msg, "", a)
		return true
	})
	b := ioloop.AppendJournalField(journalHeader(r.Level), "MESSAGE", msg.String())
	h.q.push(b)
	return nil
}

// appendAttr writes " key=value" for a, as slog's text handler does:
// LogValuers resolved, groups flattened into prefix.key=value.
func appendAttr(msg *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			appendAttr(msg, prefix, g)
		}
		return
	}
	if a.Equal(slog.Attr{}) {
		return
	}
	fmt.Fprintf(msg, " %s%s=%v", prefix, a.Key, a.Value)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

// WithGroup is not needed by gomon's flat key/value logging; groups are
// flattened into the message.
func (h *journalHandler) WithGroup(string) slog.Handler { return h }

func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}
