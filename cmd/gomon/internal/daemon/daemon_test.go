package daemon

import (
	"bytes"
	"encoding/binary"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
	sock := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	old := journalSocket
	journalSocket = sock
	defer func() { journalSocket = old }()

	log, closeLog := newLogger("systemd", "debug")
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

func TestLoggerFallsBackToStderrWithoutJournal(t *testing.T) {
	old := journalSocket
	journalSocket = filepath.Join(t.TempDir(), "missing")
	defer func() { journalSocket = old }()
	if journalAvailable() {
		t.Fatal("journal reported available")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	log, closeLog := newLogger("systemd", "info")
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
	log, _ := newLogger("stdout", "off")
	if log.Enabled(t.Context(), slog.LevelError) {
		t.Error("--log-level off still logs errors")
	}
}
