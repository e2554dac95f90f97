package monitor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// testAttachClient is a minimal attach client: unixpacket, frames [pipe]
// + payload, a lone 0 byte = done.
type testAttachClient struct {
	t    testing.TB
	conn *net.UnixConn
}

func dialAttach(t testing.TB, path string) *testAttachClient {
	t.Helper()
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatalf("dial attach socket: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &testAttachClient{t: t, conn: conn}
}

func (c *testAttachClient) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write stdin: %v", err)
	}
}

// readUntil reads frames until done, or until stdout contains want (when
// want is non-empty), within d.
func (c *testAttachClient) readUntil(want string, d time.Duration) (stdout, stderr string, done bool) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	var o, e bytes.Buffer
	buf := make([]byte, 8193)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			c.t.Fatalf("read attach (stdout so far %q, stderr %q): %v", o.String(), e.String(), err)
		}
		if n == 0 {
			c.t.Fatal("empty attach message")
		}
		if n > 8192 {
			c.t.Fatalf("attach message of %d bytes", n)
		}
		switch buf[0] {
		case 0:
			if n != 1 {
				c.t.Fatalf("done message with payload %q", buf[1:n])
			}
			return o.String(), e.String(), true
		case 2:
			o.Write(buf[1:n])
		case 3:
			e.Write(buf[1:n])
		default:
			c.t.Fatalf("unknown pipe %d", buf[0])
		}
		if want != "" && strings.Contains(o.String(), want) {
			return o.String(), e.String(), false
		}
	}
}

func TestAttachShell(t *testing.T) {
	for _, tty := range []bool{false, true} {
		name := "pipes"
		if tty {
			name = "tty"
		}
		t.Run(name, func(t *testing.T) {
			m := newTestMonitor(t)
			p := newPaths(t)
			id := "attach-" + name
			bundle := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sh"}, Terminal: tty})
			req := p.request(id, bundle)
			req.Terminal, req.Stdin = tty, true
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := m.CreateContainer(ctx, req); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(t.TempDir(), "sub", "attach")
			areq := AttachRequest{ID: id, SocketPath: sock, StopAfterStdinEOF: !tty}
			if err := m.Attach(ctx, areq); err != nil {
				t.Fatal(err)
			}
			if err := m.Attach(ctx, areq); err != nil { // already listening: no-op
				t.Fatalf("second attach: %v", err)
			}
			if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
				t.Fatalf("socket %v, %v; want a 0600 socket", st.Mode(), err)
			}
			if st, err := os.Stat(filepath.Dir(sock)); err != nil || st.Mode().Perm() != 0o700 {
				t.Fatalf("socket dir mode %v, %v; want 0700", st.Mode(), err)
			}
			c1, c2 := dialAttach(t, sock), dialAttach(t, sock)
			if err := m.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
			c1.send("echo hi\n")
			want := "hi\n"
			if tty {
				want = "hi\r\n"
			}
			for i, c := range []*testAttachClient{c1, c2} {
				// With a tty the echo of the input comes first; the
				// command's own output is a line of its own.
				until := want
				if tty {
					until = "\n" + want
				}
				out, _, _ := c.readUntil(until, 10*time.Second)
				if !strings.Contains(out, want) {
					t.Errorf("client %d got %q, want %q", i+1, out, want)
				}
			}
			if tty {
				c1.send("exit 5\n")
			} else {
				c1.send("echo bye >&2\n")
				if err := c1.conn.CloseWrite(); err != nil { // EOF closes the shell's stdin
					t.Fatal(err)
				}
				// The shell runs the line, reads EOF and exits: the
				// stderr frame, then done.
				_, errOut, done := c1.readUntil("", 10*time.Second)
				if errOut != "bye\n" || !done {
					t.Errorf("stderr frames %q, done %v", errOut, done)
				}
			}
			st, err := m.Wait(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			wantCode := 0
			if tty {
				wantCode = 5
			}
			if st.Code != wantCode || readExit(t, p.exit1) != string(rune('0'+wantCode)) {
				t.Errorf("exit %+v, want %d", st, wantCode)
			}
			if !tty {
				// The done frame, then the connection is closed.
				if _, _, done := c2.readUntil("", 10*time.Second); !done {
					t.Error("no done frame")
				}
			}
			if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("attach socket still there after exit: %v", err)
			}
			if err := m.Attach(ctx, areq); !errors.Is(err, ErrNotFound) {
				t.Errorf("attach to exited container = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestAttachErrors(t *testing.T) {
	m := newTestMonitor(t)
	ctx := context.Background()
	if err := m.Attach(ctx, AttachRequest{ID: "nope", SocketPath: filepath.Join(t.TempDir(), "a")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("attach unknown = %v", err)
	}
	if err := m.Attach(ctx, AttachRequest{ID: "nope"}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("attach without path = %v", err)
	}
}

// TestAttachSlowClient floods 50 MB while one client never reads: the
// container finishes, the log is complete, the reading client gets the
// done frame.
func TestAttachSlowClient(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	// 50 MB in 100-byte lines.
	script := "sleep 0.2; i=0; line=$(printf '%099d' 0); yes \"$line\" | head -c 50000000; echo end"
	req := p.request("flood", monitortest.Bundle(t, "sh", "-c", script))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	// A long path, beyond sun_path's 108 bytes.
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	sock := filepath.Join(dir, "attach")
	if err := m.Attach(ctx, AttachRequest{ID: "flood", SocketPath: sock}); err != nil {
		t.Fatal(err)
	}
	short := dialLong(t, sock)
	_ = dialAttach(t, short) // never reads
	reader := dialAttach(t, short)
	// Taken now: once exited, the monitor keeps only a tombstone.
	c, _, err := m.lookup("flood")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "flood"); err != nil {
		t.Fatal(err)
	}
	var got int
	_ = reader.conn.SetReadDeadline(time.Now().Add(50 * time.Second))
	buf := make([]byte, 8193)
	for {
		n, err := reader.conn.Read(buf)
		if err != nil {
			t.Fatalf("reading client: %v after %d bytes", err, got)
		}
		if n == 1 && buf[0] == 0 {
			break
		}
		got += n - 1
	}
	st, err := m.Wait(ctx, "flood")
	if err != nil || st.Code != 0 {
		t.Fatalf("wait = %+v, %v", st, err)
	}
	if n, last := criStdoutBytes(t, p.log); n != 50000000+4 || last != "end" {
		t.Errorf("log has %d bytes of stdout ending with %q, want %d ending with \"end\"", n, last, 50000000+4)
	}
	as := c.attach.Stats()
	if as.DroppedBytes == 0 {
		t.Errorf("no drops counted for the client that never read: %+v", as)
	}
	t.Logf("reading client got %d bytes; attach stats %+v", got, as)
}

// dialLong returns a short path to sock through /proc/self/fd, kept open
// for the test (the client half of the long-path trick).
func dialLong(t testing.TB, sock string) string {
	t.Helper()
	d, err := os.Open(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return "/proc/self/fd/" + strconv.Itoa(int(d.Fd())) + "/" + filepath.Base(sock)
}

func TestSetWindowSizeStty(t *testing.T) {
	m := newTestMonitor(t)
	p := newPaths(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sh", "-c", "read x; stty size"}, Terminal: true})
	req := p.request("stty", bundle)
	req.Terminal, req.Stdin = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "attach")
	if err := m.Attach(ctx, AttachRequest{ID: "stty", SocketPath: sock}); err != nil {
		t.Fatal(err)
	}
	c := dialAttach(t, sock)
	if err := m.Start(ctx, "stty"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetWindowSize(ctx, "stty", 100, 40); err != nil { // 100 cols, 40 rows
		t.Fatal(err)
	}
	c.send("\n")
	out, _, _ := c.readUntil("40 100\r\n", 10*time.Second)
	if !strings.Contains(out, "40 100\r\n") {
		t.Errorf("stty size printed %q, want rows 40 cols 100", out)
	}
	if _, err := m.Wait(ctx, "stty"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetWindowSize(ctx, "stty", 1, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("resize after exit = %v", err)
	}
}

// criStdoutBytes streams a CRI log of stdout records and returns
// the content bytes (with newlines) and the last line's content; it keeps
// a 50 MB log out of memory.
func criStdoutBytes(t *testing.T, path string) (n int, last string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 4)
		if len(fields) != 4 || fields[1] != "stdout" || (fields[2] != "F" && fields[2] != "P") {
			t.Fatalf("unexpected record %.80q", sc.Text())
		}
		n += len(fields[3])
		if fields[2] == "F" { // a P record's newline is the format's, not content
			n++
		}
		last = fields[3]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n, last
}
