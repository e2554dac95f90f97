package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/ioloop"
)

func TestWritePidfile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pidfile")
	if err := os.WriteFile(p, []byte("stale contents, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writePidfile(p, 12345); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The client parses it with a strict ParseUint: no newline.
	if _, err := strconv.ParseUint(string(got), 10, 32); err != nil || string(got) != "12345" {
		t.Errorf("pidfile %q (%v)", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

func TestListenUnixLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 140 {
		dir = filepath.Join(dir, "long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "conmon.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v %v", fi, err)
	}
	// Dial through the same trick and exchange a byte.
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("x"))
			_ = c.Close()
		}
	}()
	c, err := net.Dial("unix", "/proc/self/fd/"+strconv.Itoa(int(d.Fd()))+"/conmon.sock")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil || buf[0] != 'x' {
		t.Errorf("read %q %v", buf, err)
	}
	_ = c.Close()
	_ = l.Close()
	// Close does not unlink (the daemon removes the path itself).
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("socket removed by Close: %v", err)
	}
}

func TestJournalHandlerNativeProtocol(t *testing.T) {
	conn := fakeJournal(t)

	log, closeLog := newLogger("systemd", "debug", t.TempDir())
	defer closeLog()
	log.With("container_id", "abc").Warn("two\nlines", "pid", 7)

	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := buf[:n]
	for _, want := range []string{"SYSLOG_IDENTIFIER=gomon\n", "PRIORITY=4\n", "MESSAGE\n"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("datagram lacks %q: %q", want, msg)
		}
	}
	i := bytes.Index(msg, []byte("MESSAGE\n")) + len("MESSAGE\n")
	size := binary.LittleEndian.Uint64(msg[i : i+8])
	body := string(msg[i+8 : i+8+int(size)])
	if body != "two\nlines container_id=abc pid=7" {
		t.Errorf("MESSAGE %q", body)
	}
	if msg[i+8+int(size)] != '\n' {
		t.Error("binary field not terminated by a newline")
	}
}

// TestJournalHandlerNamesStats: a group (ioloop.Stats is logged as one)
// reaches journald as prefix.key=value, like slog's text handler writes
// it, so the soak finds each read-loop counter by its name.
func TestJournalHandlerNamesStats(t *testing.T) {
	conn := fakeJournal(t)

	log, closeLog := newLogger("systemd", "debug", t.TempDir())
	defer closeLog()
	st := ioloop.Stats{Bytes: 100, Chunks: 2, Lines: 3, Partials: 4, WriteErrors: 5, DroppedBytes: 6,
		UnreadBytes: 7, RateLimitedBytes: 8, RateLimitGaps: 9, RateLimitWait: 1500 * time.Millisecond}
	log.With("container_id", "abc").Debug("read loop ended", "stream", "stdout", "stats", st, "error", nil)
	msgs, _ := journalMessagesUntil(t, conn, func(m []string) bool { return len(m) > 0 })
	want := "read loop ended container_id=abc stream=stdout stats.bytes=100 stats.chunks=2 stats.lines=3 " +
		"stats.partials=4 stats.write_errors=5 stats.dropped_bytes=6 stats.unread_bytes=7 " +
		"stats.rate_limited_bytes=8 stats.rate_limit_gaps=9 stats.rate_limit_wait=1.5s error=<nil>"
	if len(msgs) != 1 || msgs[0] != want {
		t.Errorf("messages %q, want [%q]", msgs, want)
	}

	// The text handler (stderr, gomon.log) names them the same way.
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "stats", st)
	if !strings.Contains(b.String(), " stats.bytes=100 stats.chunks=2 ") {
		t.Errorf("text handler: %q", b.String())
	}
}

func TestLoggerFallsBackToStderrWithoutJournal(t *testing.T) {
	old := journalSocket
	journalSocket = filepath.Join(t.TempDir(), "missing")
	defer func() { journalSocket = old }()
	if journalReachable() == nil {
		t.Fatal("journal reported available")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	log, closeLog := newLogger("systemd", "info", t.TempDir())
	log.Info("hello")
	os.Stderr = stderr
	closeLog()
	_ = w.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(r)
	if strings.Count(out.String(), "no systemd journal") != 1 || !strings.Contains(out.String(), "msg=hello") {
		t.Errorf("stderr %q: want one warning, then the record", out.String())
	}
}

func TestLevels(t *testing.T) {
	tests := []struct {
		in   string
		want slog.Level
	}{{"trace", levelTrace}, {"debug", slog.LevelDebug}, {"info", slog.LevelInfo}, {"warn", slog.LevelWarn}, {"error", slog.LevelError}}
	for _, tt := range tests {
		if got := slogLevel(tt.in); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.in, got, tt.want)
		}
	}
	log, _ := newLogger("stdout", "off", t.TempDir())
	if log.Enabled(t.Context(), slog.LevelError) {
		t.Error("--log-level off still logs errors")
	}
}

// stalledJournal binds a datagram socket that nobody reads, with the
// smallest receive buffer, at a path of its own and points journalSocket
// at it: journald that has stopped taking records.
func stalledJournal(t *testing.T) *net.UnixConn {
	t.Helper()
	conn := fakeJournal(t)
	if err := conn.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	return conn
}

// fakeJournal binds a datagram socket at a path of its own, as journald's,
// and points journalSocket at it until the test ends.
func fakeJournal(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	old := journalSocket
	journalSocket = sock
	t.Cleanup(func() { journalSocket = old })
	return conn
}

// journalMessages reads datagrams until the socket has been quiet for
// quiet, and returns their MESSAGE fields and the sum of the
// GOMON_DROPPED_RECORDS fields.
func journalMessages(t *testing.T, conn *net.UnixConn, quiet time.Duration) (msgs []string, dropped int) {
	t.Helper()
	buf := make([]byte, 1<<16)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(quiet))
		n, err := conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return msgs, dropped
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if v, ok := strings.CutPrefix(line, "MESSAGE="); ok {
				msgs = append(msgs, v)
			}
			if v, ok := strings.CutPrefix(line, "GOMON_DROPPED_RECORDS="); ok {
				d, err := strconv.Atoi(v)
				if err != nil {
					t.Fatalf("GOMON_DROPPED_RECORDS=%q", v)
				}
				dropped += d
			}
		}
	}
}

// journalMessagesUntil reads datagrams until done holds for what arrived
// (bounded by a hang guard: the sender runs on its own goroutine, which a
// loaded machine may hold up for longer than any quiet window), then for
// one more quiet window, so that nothing sent after is missed.
func journalMessagesUntil(t *testing.T, conn *net.UnixConn, done func(msgs []string) bool) (msgs []string, dropped int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !done(msgs) && time.Now().Before(deadline); {
		m, d := journalMessages(t, conn, 100*time.Millisecond)
		msgs, dropped = append(msgs, m...), dropped+d
	}
	m, d := journalMessages(t, conn, 100*time.Millisecond)
	return append(msgs, m...), dropped + d
}

// TestJournalLoggingNeverBlocks: with journald stalled, logging returns at
// once; what journald could not take is dropped, counted, and reported by
// the first record after it takes records again, so that every record is
// either delivered or counted.
func TestJournalLoggingNeverBlocks(t *testing.T) {
	conn := stalledJournal(t)
	log, closeLog := newLogger("systemd", "debug", t.TempDir())
	defer closeLog()

	const stalled = 500
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range stalled {
			log.Info("while stalled", "i", i)
		}
	}()
	// The old handler waited for journald in each call: the first records
	// fill the socket's queue, the next call waits for as long as journald
	// stalls. This bound is only a hang guard: nothing here waits on journald.
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("logging blocked on a stalled journald")
	}

	// Keep journald stalled until the sender has given up on a record
	// (after journalSendTimeout).
	q := log.Handler().(*journalHandler).q
	for deadline := time.Now().Add(10 * journalSendTimeout); ; {
		q.mu.Lock()
		n := q.dropped
		q.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing dropped while journald stalled")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// journald recovers: the next record gets through, then the report.
	msgs, dropped := journalMessages(t, conn, 200*time.Millisecond)
	log.Info("after the stall")
	more, moreDropped := journalMessagesUntil(t, conn, func(m []string) bool { return slices.Contains(m, "after the stall") })
	msgs, dropped = append(msgs, more...), dropped+moreDropped
	closeLog()
	rest, restDropped := journalMessages(t, conn, 100*time.Millisecond)
	msgs, dropped = append(msgs, rest...), dropped+restDropped

	delivered, reports := 0, 0
	for _, m := range msgs {
		switch {
		case strings.HasPrefix(m, "while stalled"):
			delivered++
		case strings.Contains(m, "records dropped"):
			reports++
		}
	}
	if dropped == 0 || reports == 0 {
		t.Fatalf("no drop report: %d delivered, %d messages", delivered, len(msgs))
	}
	if delivered+dropped != stalled {
		t.Errorf("%d delivered + %d reported dropped != %d logged", delivered, dropped, stalled)
	}
	if !slices.Contains(msgs, "after the stall") {
		t.Errorf("record after the stall not delivered (%d messages)", len(msgs))
	}
	t.Logf("%d records delivered, %d dropped and reported in %d report(s)", delivered, dropped, reports)
}

// staleJournal leaves a socket file at a path of its own with nobody
// listening (journald died) and points journalSocket at it.
func staleJournal(t *testing.T) {
	t.Helper()
	_ = fakeJournal(t).Close() // the file stays; nobody listens
}

// TestLoggerFallsBackToRunDirFile: with a stale journald socket and stderr
// on /dev/null (as the conmon-rs client leaves it), the log goes to
// <run-dir>/gomon.log, which says once why.
func TestLoggerFallsBackToRunDirFile(t *testing.T) {
	staleJournal(t)
	if journalReachable() == nil {
		t.Fatal("stale journal socket reported reachable")
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = null.Close() }()
	stderr := os.Stderr
	os.Stderr = null
	defer func() { os.Stderr = stderr }()

	dir := t.TempDir()
	log, closeLog := newLogger("systemd", "info", dir)
	os.Stderr = stderr
	log.Info("first")
	log.With("container_id", "c1").Warn("second")
	closeLog()
	out, err := os.ReadFile(filepath.Join(dir, fallbackLogName))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Count(s, "no systemd journal reachable") != 1 || !strings.Contains(s, "msg=first") ||
		!strings.Contains(s, "msg=second container_id=c1") || !strings.Contains(s, "connection refused") {
		t.Errorf("gomon.log %q: want one notice (with the reason), then the records", s)
	}
	if fi, err := os.Stat(filepath.Join(dir, fallbackLogName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("gomon.log mode %v %v", fi.Mode(), err)
	}
}

// TestLogOutputSwitchesOnBrokenPipe: when the reader of the log's pipe goes
// away, the records that follow go to <run-dir>/gomon.log after one notice.
func TestLogOutputSwitchesOnBrokenPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	dir := t.TempDir()
	o := newLogOutput(w, "stdout", dir)
	defer o.close()
	log := slog.New(slog.NewTextHandler(o, nil))
	log.Info("to the pipe")
	_ = r.Close()
	log.Info("after the reader left")
	log.Info("and again")
	out, err := os.ReadFile(filepath.Join(dir, fallbackLogName))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Count(s, "log output closed (broken pipe)") != 1 || !strings.Contains(s, "previous=stdout") ||
		!strings.Contains(s, `msg="after the reader left"`) || !strings.Contains(s, `msg="and again"`) ||
		strings.Contains(s, "to the pipe") {
		t.Errorf("gomon.log %q", s)
	}
}

// TestRotatingFile: the fallback log stays under two files of at most max
// bytes, and never follows a symlink at its path.
func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gomon.log")
	f, err := openRotatingFile(p, 100)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 29) + "\n")
	for range 18 { // 6 files' worth: the last two are full
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	_ = f.close()
	for _, name := range []string{p, p + ".1"} {
		fi, err := os.Stat(name)
		if err != nil || fi.Size() != 90 {
			t.Errorf("%s: %v %v, want 90 bytes", name, fi, err)
		}
	}

	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openRotatingFile(link, 100); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("opened through a symlink: %v", err)
	}
}

func TestLogRateLimitFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	quiet := slog.New(slog.DiscardHandler)
	tests := []struct {
		name string
		env  map[string]string
		want ioloop.RateLimit
	}{
		{"unset", nil, ioloop.RateLimit{}},
		{"rate only", map[string]string{envLogRateLimit: "1MiB/s"}, ioloop.RateLimit{Rate: 1 << 20}},
		{"all", map[string]string{envLogRateLimit: "1MiB/s", envLogRateBurst: "4MiB", envLogRatePolicy: "block"},
			ioloop.RateLimit{Rate: 1 << 20, Burst: 4 << 20, Policy: ioloop.RateBlock}},
		{"typo in the rate: no limit", map[string]string{envLogRateLimit: "1MB/sec"}, ioloop.RateLimit{}},
		{"typo in the policy: drop", map[string]string{envLogRateLimit: "2MiB", envLogRatePolicy: "blok"},
			ioloop.RateLimit{Rate: 2 << 20}},
	}
	for _, tt := range tests {
		if got := logRateLimitFromEnv(env(tt.env), quiet); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
