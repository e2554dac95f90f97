package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/gomon-dev/gomon/ioloop"
)

// journalSocket is where systemd-journald takes native-protocol datagrams.
// A variable so tests can point it at a socket of their own.
var journalSocket = "/run/systemd/journal/socket"

func journalAvailable() bool {
	_, err := os.Stat(journalSocket)
	return err == nil
}

// levelTrace is below slog's Debug, for conmon-rs's "trace".
const levelTrace = slog.LevelDebug - 4

func slogLevel(s string) slog.Level {
	switch s {
	case "trace":
		return levelTrace
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error", "off":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// newLogger builds the server's own logger for --log-driver and
// --log-level: "none" and "off" discard; "stdout" writes text lines with
// timestamps to stdout; "systemd" sends to the journal, or to stderr with a
// single warning when there is no journal (no systemd on this host).
func newLogger(driver, level string) (*slog.Logger, func()) {
	if driver == "none" || level == "off" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	opts := &slog.HandlerOptions{Level: slogLevel(level)}
	switch driver {
	case "stdout":
		return slog.New(slog.NewTextHandler(os.Stdout, opts)), func() {}
	default: // systemd
		if h, err := newJournalHandler(opts.Level.Level()); err == nil {
			return slog.New(h), func() { _ = h.conn.Close() }
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, opts))
		log.Warn("no systemd journal; logging to stderr", "socket", journalSocket)
		return log, func() {}
	}
}

// journalHandler writes records to journald with the native protocol:
// one datagram of KEY=value lines per record.
type journalHandler struct {
	conn  *net.UnixConn
	level slog.Level
	attrs []slog.Attr
}

func newJournalHandler(level slog.Level) (*journalHandler, error) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: journalSocket, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("connect to journal: %w", err)
	}
	return &journalHandler{conn: c, level: level}, nil
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	var msg strings.Builder
	msg.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&msg, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	b := ioloop.AppendJournalField(nil, "SYSLOG_IDENTIFIER", "gomon")
	b = ioloop.AppendJournalField(b, "PRIORITY", strconv.Itoa(priority(r.Level)))
	b = ioloop.AppendJournalField(b, "MESSAGE", msg.String())
	_, err := h.conn.Write(b)
	return err
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
