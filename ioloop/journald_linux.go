package ioloop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// JournalSocket is where systemd-journald listens for native-protocol
// datagrams: the containers' journald sink sends there, and the daemon's
// own log by default.
const JournalSocket = "/run/systemd/journal/socket"

// journalSocket is the path NewJournald uses (JournalSocket).
const journalSocket = JournalSocket

// journalSendTimeout bounds how long one chunk may wait for a congested
// journald before the write fails (and is counted by ReadLoop) instead of
// stalling the container.
const journalSendTimeout = 2 * time.Second

// Journald is the journald log driver. It sends every line of a chunk as one
// entry over journald's native protocol (a datagram of KEY=value fields on
// /run/systemd/journal/socket; entries too large for a datagram go through a
// sealed memfd passed with SCM_RIGHTS, as sd_journal_send does).
//
// Fields of each entry, with C conmon's names where it has the field:
//
//	MESSAGE            the line without its trailing '\n' (bytes as read,
//	                   binary-safe; invalid UTF-8 is passed through)
//	CONTAINER_PARTIAL_MESSAGE=true   only when the line had no '\n' (a P
//	                   record in CRI terms), as C conmon and Docker mark it
//	CONTAINER_ID       the container ID's first 12 characters (all of a
//	                   shorter ID), as in C conmon and Docker
//	CONTAINER_ID_FULL  the container ID
//	CONTAINER_NAME     the container's name, when known (the kubelet's
//	                   io.kubernetes.container.name)
//	CONTAINER_TAG      the tag, when one is set
//	POD_NAME, POD_NAMESPACE, POD_UID   the pod's, when known (C conmon has
//	                   no pod fields; these are gomon's)
//	SYSLOG_IDENTIFIER  the tag, else the container's name, else the short
//	                   ID (C conmon's order)
//	STREAM             stdout or stderr
//	PRIORITY           6 (info) for stdout, 3 (err) for stderr
//
// This deliberately differs from conmon-rs (docs/contract.md, "journald"), which sends
// only MESSAGE (with the '\n') and PRIORITY=5, so entries of different
// containers and streams cannot be told apart, and which stops the stream's
// read loop on non-UTF-8 output. maxSize and Reopen do not apply to the
// journal.
//
// A Journald is not safe for concurrent use; Log serialises access.
type Journald struct {
	// fixed holds the fields that are the same in every entry of the
	// container, encoded once.
	fixed []byte
	conn  *net.UnixConn // unconnected, so a restarted journald is reached too
	addr  *net.UnixAddr
	buf   []byte // datagram being built, reused
	// forceMemfd sends every entry through a memfd (tests).
	forceMemfd bool
}

var _ Sink = (*Journald)(nil)

// JournalFields identify a container's journal entries (see Journald).
// Only ContainerID is required; empty fields are left out.
type JournalFields struct {
	ContainerID   string
	ContainerName string
	// Tag, when set, is CONTAINER_TAG and the SYSLOG_IDENTIFIER.
	Tag                           string
	PodName, PodNamespace, PodUID string
}

// shortIDLen is the length of CONTAINER_ID, as in C conmon and Docker.
const shortIDLen = 12

// appendFixed appends the fields that are the same in every entry.
func (f JournalFields) appendFixed(b []byte) []byte {
	short := f.ContainerID
	if len(short) > shortIDLen {
		short = short[:shortIDLen]
	}
	ident := short
	if f.ContainerName != "" {
		ident = f.ContainerName
	}
	if f.Tag != "" {
		ident = f.Tag
	}
	b = AppendJournalField(b, "CONTAINER_ID", short)
	b = AppendJournalField(b, "CONTAINER_ID_FULL", f.ContainerID)
	for _, kv := range [][2]string{
		{"CONTAINER_NAME", f.ContainerName},
		{"CONTAINER_TAG", f.Tag},
		{"POD_NAME", f.PodName},
		{"POD_NAMESPACE", f.PodNamespace},
		{"POD_UID", f.PodUID},
	} {
		if kv[1] != "" {
			b = AppendJournalField(b, kv[0], kv[1])
		}
	}
	return AppendJournalField(b, "SYSLOG_IDENTIFIER", ident)
}

// NewJournald returns a journald sink for the container containerID. It
// fails with an error wrapping ErrNoJournal when journald's socket does not
// exist.
func NewJournald(containerID string) (*Journald, error) {
	return NewJournaldWith(JournalFields{ContainerID: containerID})
}

// NewJournaldWith is NewJournald with the container's name, tag and pod
// in every entry.
func NewJournaldWith(f JournalFields) (*Journald, error) {
	return newJournald(f, journalSocket, 0)
}

// newJournald is NewJournald with the socket path and, when sndbuf > 0, the
// sender's SO_SNDBUF (small values force the memfd path) injectable.
func newJournald(fields JournalFields, path string, sndbuf int) (*Journald, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("find journal socket: %w: %w", ErrNoJournal, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("find journal socket: %w: %s is not a socket", ErrNoJournal, path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("create journal socket: %w", err)
	}
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("set journal socket buffer: %w", err)
		}
	}
	f := os.NewFile(uintptr(fd), "journal")
	pc, err := net.FilePacketConn(f)
	_ = f.Close() // FilePacketConn holds its own duplicate
	if err != nil {
		return nil, fmt.Errorf("wrap journal socket: %w", err)
	}
	conn, ok := pc.(*net.UnixConn)
	if !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("wrap journal socket: unexpected %T", pc)
	}
	return &Journald{
		fixed: fields.appendFixed(nil),
		conn:  conn,
		addr:  &net.UnixAddr{Name: path, Net: "unixgram"},
	}, nil
}

// WriteChunk sends one journal entry per line of p.
func (j *Journald) WriteChunk(s Stream, p []byte) error {
	if j.conn == nil {
		return fmt.Errorf("write journal: %w", ErrClosed)
	}
	if !s.valid() {
		return fmt.Errorf("write journal: %w: %d", ErrInvalidStream, uint8(s))
	}
	if len(p) == 0 {
		return nil
	}
	priority := "6"
	if s == Stderr {
		priority = "3"
	}
	if err := j.conn.SetWriteDeadline(time.Now().Add(journalSendTimeout)); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	for len(p) > 0 {
		line, rest, partial := nextLine(p)
		p = rest
		if !partial {
			line = line[:len(line)-1]
		}
		b := AppendJournalField(j.buf[:0], "MESSAGE", line)
		if partial {
			b = AppendJournalField(b, "CONTAINER_PARTIAL_MESSAGE", "true")
		}
		b = append(b, j.fixed...)
		b = AppendJournalField(b, "STREAM", s.String())
		b = AppendJournalField(b, "PRIORITY", priority)
		j.buf = b
		if err := j.send(b); err != nil {
			return fmt.Errorf("write journal: %w", err)
		}
	}
	return nil
}

// send sends one entry as a datagram, falling back to a sealed memfd when
// the kernel refuses a datagram that large.
func (j *Journald) send(b []byte) error {
	if !j.forceMemfd {
		_, _, err := j.conn.WriteMsgUnix(b, nil, j.addr)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EMSGSIZE) && !errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("send journal entry: %w", err)
		}
	}
	fd, err := unix.MemfdCreate("journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("create journal memfd: %w", err)
	}
	defer func() { _ = unix.Close(fd) }() // journald has its own copy once sent
	for off := 0; off < len(b); {
		n, err := unix.Write(fd, b[off:])
		if err != nil {
			return fmt.Errorf("fill journal memfd: %w", err)
		}
		off += n
	}
	// journald only accepts memfds that can no longer change.
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("seal journal memfd: %w", err)
	}
	if _, _, err := j.conn.WriteMsgUnix(nil, unix.UnixRights(fd), j.addr); err != nil {
		return fmt.Errorf("send journal memfd: %w", err)
	}
	return nil
}

// JournalSender sends ready-made native-protocol entries (built with
// AppendJournalField) to journald, through the same unconnected socket and
// memfd fallback as Journald: the daemon's own log uses it. Not safe for
// concurrent use.
type JournalSender struct{ j *Journald }

// NewJournalSender returns a sender to the journald socket at path. It
// fails with an error wrapping ErrNoJournal when path is not a socket; a
// socket nobody listens on is only noticed when Send fails.
func NewJournalSender(path string) (*JournalSender, error) {
	j, err := newJournald(JournalFields{}, path, 0)
	if err != nil {
		return nil, err
	}
	return &JournalSender{j: j}, nil
}

// Send sends one entry, waiting for a congested journald until deadline
// at most.
func (s *JournalSender) Send(entry []byte, deadline time.Time) error {
	if s.j.conn == nil {
		return fmt.Errorf("send journal entry: %w", ErrClosed)
	}
	if err := s.j.conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("send journal entry: %w", err)
	}
	return s.j.send(entry)
}

// Close closes the socket; a second Close does nothing.
func (s *JournalSender) Close() error { return s.j.Close() }

// Reopen does nothing: the journal has no file to rotate.
func (j *Journald) Reopen() error { return nil }

// Close closes the socket; a second Close does nothing.
func (j *Journald) Close() error {
	if j.conn == nil {
		return nil
	}
	c := j.conn
	j.conn = nil
	if err := c.Close(); err != nil {
		return fmt.Errorf("close journal socket: %w", err)
	}
	return nil
}

// AppendJournalField appends one field in journald's native format:
// "KEY=value\n", or, when value contains '\n', the binary-safe form
// "KEY\n" + little-endian uint64 length + value + "\n". The daemon's own
// log records use it too.
func AppendJournalField[T string | []byte](b []byte, key string, value T) []byte {
	b = append(b, key...)
	if !hasNewline(value) {
		b = append(b, '=')
		b = append(b, value...)
		return append(b, '\n')
	}
	b = append(b, '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	return append(b, '\n')
}

func hasNewline[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' {
			return true
		}
	}
	return false
}
