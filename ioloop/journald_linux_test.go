package ioloop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeJournal is a unixgram socket standing in for journald. It decodes
// every received entry (datagram or sealed memfd) on an owned goroutine.
type fakeJournal struct {
	path    string
	conn    *net.UnixConn
	entries chan journalEntry
	done    chan struct{}
}

// journalEntry is one decoded entry: fields in order, and how it came.
type journalEntry struct {
	fields [][2]string
	memfd  bool
	err    error
}

func (e journalEntry) get(key string) (string, bool) {
	for _, f := range e.fields {
		if f[0] == key {
			return f[1], true
		}
	}
	return "", false
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	dir, err := os.MkdirTemp("", "jd") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	fj := &fakeJournal{path: path, conn: conn, entries: make(chan journalEntry, 1024), done: make(chan struct{})}
	go fj.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		<-fj.done
	})
	return fj
}

func (fj *fakeJournal) serve() {
	defer close(fj.done)
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := fj.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return // closed
		}
		fj.entries <- decodeJournalDatagram(buf[:n], oob[:oobn])
	}
}

func decodeJournalDatagram(b, oob []byte) journalEntry {
	if len(oob) == 0 {
		fields, err := parseJournalNative(b)
		return journalEntry{fields: fields, err: err}
	}
	if len(b) != 0 {
		return journalEntry{err: fmt.Errorf("memfd datagram has %d payload bytes", len(b))}
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return journalEntry{err: fmt.Errorf("control messages %d: %w", len(msgs), err)}
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return journalEntry{err: fmt.Errorf("rights %v: %w", fds, err)}
	}
	fd := fds[0]
	defer func() { _ = unix.Close(fd) }()
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	if err != nil || seals&want != want {
		return journalEntry{err: fmt.Errorf("memfd seals %#x (%w), want %#x", seals, err, want)}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return journalEntry{err: err}
	}
	data := make([]byte, st.Size)
	if n, err := unix.Pread(fd, data, 0); err != nil || n != len(data) {
		return journalEntry{err: fmt.Errorf("read memfd: %d: %w", n, err)}
	}
	fields, err := parseJournalNative(data)
	return journalEntry{fields: fields, memfd: true, err: err}
}

// parseJournalNative decodes journald's native protocol: KEY=value\n, or
// KEY\n<le64 length><value>\n for binary-safe values.
func parseJournalNative(b []byte) ([][2]string, error) {
	var fields [][2]string
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i <= 0 {
			return fields, fmt.Errorf("bad field at %q", b)
		}
		key := string(b[:i])
		if b[i] == '=' {
			end := bytes.IndexByte(b[i+1:], '\n')
			if end < 0 {
				return fields, fmt.Errorf("field %s: no newline", key)
			}
			fields = append(fields, [2]string{key, string(b[i+1 : i+1+end])})
			b = b[i+1+end+1:]
			continue
		}
		b = b[i+1:]
		if len(b) < 8 {
			return fields, fmt.Errorf("field %s: short length", key)
		}
		n := binary.LittleEndian.Uint64(b)
		b = b[8:]
		if uint64(len(b)) < n+1 || b[n] != '\n' {
			return fields, fmt.Errorf("field %s: bad binary value", key)
		}
		fields = append(fields, [2]string{key, string(b[:n])})
		b = b[n+1:]
	}
	return fields, nil
}

func (fj *fakeJournal) next(t *testing.T) journalEntry {
	t.Helper()
	select {
	case e := <-fj.entries:
		if e.err != nil {
			t.Fatalf("fake journal: %v", e.err)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no journal entry received")
		return journalEntry{}
	}
}

func TestJournald(t *testing.T) {
	type want struct {
		msg     string
		partial bool
		stream  string
		prio    string
	}
	big := strings.Repeat("y", 20000)
	tests := []struct {
		name   string
		stream Stream
		in     string
		sndbuf int
		memfd  bool // force the memfd path
		want   []want
	}{
		{"lines", Stdout, "hello\nworld\n", 0, false, []want{{"hello", false, "stdout", "6"}, {"world", false, "stdout", "6"}}},
		{"stderr and partial", Stderr, "bad\nhalf", 0, false, []want{{"bad", false, "stderr", "3"}, {"half", true, "stderr", "3"}}},
		{"empty line", Stdout, "\n", 0, false, []want{{"", false, "stdout", "6"}}},
		{"binary bytes pass through", Stdout, "\xff\x00\x01\n", 0, false, []want{{"\xff\x00\x01", false, "stdout", "6"}}},
		{"forced memfd", Stdout, "via memfd\n", 0, true, []want{{"via memfd", false, "stdout", "6"}}},
		{"too big for datagram falls back to memfd", Stdout, big + "\n", 4096, false, []want{{big, false, "stdout", "6"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fj := newFakeJournal(t)
			j, err := newJournald(JournalFields{ContainerID: "ctr1"}, fj.path, tt.sndbuf)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = j.Close() }()
			j.forceMemfd = tt.memfd
			if err := j.WriteChunk(tt.stream, []byte(tt.in)); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				e := fj.next(t)
				wantFields := [][2]string{{"MESSAGE", w.msg}}
				if w.partial {
					wantFields = append(wantFields, [2]string{"CONTAINER_PARTIAL_MESSAGE", "true"})
				}
				wantFields = append(wantFields, [2]string{"CONTAINER_ID", "ctr1"}, [2]string{"CONTAINER_ID_FULL", "ctr1"},
					[2]string{"SYSLOG_IDENTIFIER", "ctr1"}, [2]string{"STREAM", w.stream}, [2]string{"PRIORITY", w.prio})
				if fmt.Sprint(e.fields) != fmt.Sprint(wantFields) {
					t.Fatalf("fields %q\nwant %q", e.fields, wantFields)
				}
				if wantMemfd := tt.memfd || tt.sndbuf > 0; e.memfd != wantMemfd {
					t.Fatalf("memfd=%v, want %v", e.memfd, wantMemfd)
				}
			}
			select {
			case e := <-fj.entries:
				t.Fatalf("unexpected extra entry %q", e.fields)
			default:
			}
		})
	}
}

// TestJournaldIdentity: the container's and pod's fields, C conmon's short
// CONTAINER_ID, and SYSLOG_IDENTIFIER chosen as tag, else name, else short
// ID.
func TestJournaldIdentity(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	pod := JournalFields{ContainerID: id, ContainerName: "web", PodName: "shop-7d9", PodNamespace: "prod", PodUID: "uid-1"}
	tagged := pod
	tagged.Tag = "shop-web"
	tests := []struct {
		name   string
		fields JournalFields
		want   [][2]string
	}{
		{"id only", JournalFields{ContainerID: id}, [][2]string{
			{"CONTAINER_ID", "0123456789ab"}, {"CONTAINER_ID_FULL", id}, {"SYSLOG_IDENTIFIER", "0123456789ab"},
		}},
		{"pod", pod, [][2]string{
			{"CONTAINER_ID", "0123456789ab"}, {"CONTAINER_ID_FULL", id}, {"CONTAINER_NAME", "web"},
			{"POD_NAME", "shop-7d9"}, {"POD_NAMESPACE", "prod"}, {"POD_UID", "uid-1"}, {"SYSLOG_IDENTIFIER", "web"},
		}},
		{"tag", tagged, [][2]string{
			{"CONTAINER_ID", "0123456789ab"}, {"CONTAINER_ID_FULL", id}, {"CONTAINER_NAME", "web"}, {"CONTAINER_TAG", "shop-web"},
			{"POD_NAME", "shop-7d9"}, {"POD_NAMESPACE", "prod"}, {"POD_UID", "uid-1"}, {"SYSLOG_IDENTIFIER", "shop-web"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fj := newFakeJournal(t)
			j, err := newJournald(tt.fields, fj.path, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = j.Close() }()
			if err := j.WriteChunk(Stderr, []byte("boom\n")); err != nil {
				t.Fatal(err)
			}
			want := append([][2]string{{"MESSAGE", "boom"}}, tt.want...)
			want = append(want, [2]string{"STREAM", "stderr"}, [2]string{"PRIORITY", "3"})
			if e := fj.next(t); fmt.Sprint(e.fields) != fmt.Sprint(want) {
				t.Fatalf("fields %q\nwant %q", e.fields, want)
			}
		})
	}
}

// Values containing '\n' use the binary-safe encoding and survive intact.
func TestJournalFieldEncoding(t *testing.T) {
	tests := []struct{ key, value, wire string }{
		{"MESSAGE", "plain", "MESSAGE=plain\n"},
		{"MESSAGE", "", "MESSAGE=\n"},
		{"MESSAGE", "two\nlines", "MESSAGE\n\x09\x00\x00\x00\x00\x00\x00\x00two\nlines\n"},
		{"CONTAINER_ID", "a\nb", "CONTAINER_ID\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.value), func(t *testing.T) {
			b := AppendJournalField(nil, tt.key, []byte(tt.value))
			if s := AppendJournalField(nil, tt.key, tt.value); string(s) != string(b) {
				t.Fatalf("string and bytes encoders differ: %q vs %q", s, b)
			}
			if string(b) != tt.wire {
				t.Fatalf("wire %q, want %q", b, tt.wire)
			}
			fields, err := parseJournalNative(b)
			if err != nil || len(fields) != 1 || fields[0] != [2]string{tt.key, tt.value} {
				t.Fatalf("parsed %q, %v", fields, err)
			}
		})
	}
	// End to end: a container ID with a newline goes over the socket binary-safe.
	fj := newFakeJournal(t)
	j, err := newJournald(JournalFields{ContainerID: "odd\nid"}, fj.path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.Close() }()
	if err := j.WriteChunk(Stdout, []byte("m\n")); err != nil {
		t.Fatal(err)
	}
	if id, _ := fj.next(t).get("CONTAINER_ID"); id != "odd\nid" {
		t.Fatalf("CONTAINER_ID %q", id)
	}
}

func TestJournaldNoSocket(t *testing.T) {
	dir := t.TempDir()
	if _, err := newJournald(JournalFields{ContainerID: "c"}, filepath.Join(dir, "missing"), 0); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("missing socket: %v, want ErrNoJournal", err)
	}
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newJournald(JournalFields{ContainerID: "c"}, regular, 0); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("regular file: %v, want ErrNoJournal", err)
	}
	if _, err := os.Stat(journalSocket); err != nil {
		if _, err := NewJournald("c"); !errors.Is(err, ErrNoJournal) {
			t.Fatalf("NewJournald without journald: %v, want ErrNoJournal", err)
		}
	}
}

// A journald that went away makes writes fail (counted by ReadLoop), not hang.
func TestJournaldGone(t *testing.T) {
	fj := newFakeJournal(t)
	j, err := newJournald(JournalFields{ContainerID: "c"}, fj.path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = j.Close() }()
	_ = fj.conn.Close()
	_ = os.Remove(fj.path)
	if err := j.WriteChunk(Stdout, []byte("x\n")); err == nil {
		t.Fatal("write to a vanished journal succeeded")
	}
	if err := j.Reopen(); err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.WriteChunk(Stdout, []byte("x\n")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
