package fdstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testClient speaks the fd socket protocol the way conmon-rs's Go client
// (pkg/client/remote_fds.go, v0.7.3 and v1.0.1) does.
type testClient struct {
	conn  *net.UnixConn
	reqID uint32
}

// dial connects through /proc/self/fd/<dirfd>/<name>, as the client's
// DialLongSocket does.
func dial(t *testing.T, path string) *testClient {
	t.Helper()
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = dir.Close() }()
	addr := &net.UnixAddr{
		Name: fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path)),
		Net:  "unixpacket",
	}
	conn, err := net.DialUnix("unixpacket", nil, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c := &testClient{conn: conn}
	t.Cleanup(func() { _ = c.conn.Close() })
	return c
}

var (
	errIDMismatch    = errors.New("response id does not match")
	errCountMismatch = errors.New("number of fds does not match")
)

// send mirrors RemoteFDs.Send: a request with the next id, then one reply.
func (c *testClient) send(fds ...int) ([]uint64, error) {
	c.reqID++
	header := uint64(c.reqID)<<32 | uint64(len(fds))
	if err := c.sendRaw(binary.LittleEndian.AppendUint64(nil, header), fds...); err != nil {
		return nil, err
	}
	reply, err := c.read()
	if err != nil {
		return nil, err
	}
	if len(reply) < 8 {
		return nil, fmt.Errorf("response too short: %d bytes", len(reply))
	}
	got := binary.LittleEndian.Uint64(reply)
	reply = reply[8:]
	if id := uint32(got >> 32); id != c.reqID {
		return nil, fmt.Errorf("%w: %d (expected %d)", errIDMismatch, id, c.reqID)
	}
	n := int(got & math.MaxUint32)
	if n != len(fds) {
		return nil, fmt.Errorf("%w: %d (expected %d): %q", errCountMismatch, n, len(fds), reply)
	}
	if len(reply) != 8*n {
		return nil, fmt.Errorf("invalid response length %d", len(reply))
	}
	slots := make([]uint64, n)
	for i := range slots {
		slots[i] = binary.LittleEndian.Uint64(reply[8*i:])
	}
	return slots, nil
}

func (c *testClient) sendRaw(msg []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := c.conn.WriteMsgUnix(msg, oob, nil)
	return err
}

// read returns one reply message.
func (c *testClient) read() ([]byte, error) {
	buf := make([]byte, 8+253*8+1)
	if err := c.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	n, err := c.conn.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// pipes makes n pipes and returns their read ends' fds (to send) and write
// ends (kept by the test). The test's own copies of the read ends are
// closed at cleanup, so sending them transfers the last reference.
type pipeSet struct {
	r []*os.File
	w []*os.File
}

func newPipes(t *testing.T, n int) *pipeSet {
	t.Helper()
	p := &pipeSet{}
	for range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		p.r = append(p.r, r)
		p.w = append(p.w, w)
	}
	t.Cleanup(func() {
		closeFiles(p.r)
		closeFiles(p.w)
	})
	return p
}

func (p *pipeSet) readFDs() []int {
	fds := make([]int, len(p.r))
	for i, r := range p.r {
		fds[i] = int(r.Fd())
	}
	return fds
}

// dropReadEnds closes the test's copies of the read ends after sending.
func (p *pipeSet) dropReadEnds() {
	closeFiles(p.r)
}

// readerGone reports whether every read end of pipe i is closed, by
// writing one byte: EPIPE means no reader is left.
func (p *pipeSet) readerGone(i int) bool {
	_, err := p.w[i].Write([]byte{'x'})
	return errors.Is(err, syscall.EPIPE)
}

// eventually polls cond for up to 10 s; the server handles a disconnect
// asynchronously, so its effects are awaited, not timed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func listen(t *testing.T) *Server {
	t.Helper()
	s, err := Listen(filepath.Join(t.TempDir(), "conmon-fd.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestSendTakeDisconnect(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	p := newPipes(t, 3)

	slots, err := c.send(p.readFDs()...)
	if err != nil {
		t.Fatal(err)
	}
	p.dropReadEnds()
	if want := []uint64{1, 2, 3}; fmt.Sprint(slots) != fmt.Sprint(want) {
		t.Fatalf("slots = %v, want %v", slots, want)
	}

	f, err := s.Take(2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := p.w[1].Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := f.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read taken pipe = %q, %v; want hello", buf[:n], err)
	}
	if _, err := s.Take(2); err == nil {
		t.Fatal("second Take(2) succeeded")
	}

	// Disconnecting closes slots 1 and 3, but not the taken one.
	_ = c.conn.Close()
	eventually(t, "slot 1's pipe loses its reader", func() bool { return p.readerGone(0) })
	eventually(t, "slot 3's pipe loses its reader", func() bool { return p.readerGone(2) })
	if p.readerGone(1) {
		t.Fatal("taken pipe end was closed by the disconnect")
	}
	for _, slot := range []uint64{1, 3} {
		if _, err := s.Take(slot); !errors.Is(err, ErrNoFD) {
			t.Errorf("Take(%d) after disconnect: err = %v, want ErrNoFD", slot, err)
		}
	}
}

func TestZeroRequestClosesConnectionFDs(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	other := dial(t, s.Path())
	p := newPipes(t, 3)

	if _, err := c.send(p.readFDs()[:2]...); err != nil {
		t.Fatal(err)
	}
	if slots, err := other.send(p.readFDs()[2]); err != nil || slots[0] != 3 {
		t.Fatalf("other connection: slots %v, err %v; want [3]", slots, err)
	}
	p.dropReadEnds()

	if err := c.sendRaw(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	// Requests on one connection are handled in order: once the next reply
	// arrives, the zero request has been handled (it gets no reply itself).
	q := newPipes(t, 1)
	slots, err := c.send(q.readFDs()...)
	if err != nil {
		t.Fatal(err)
	}
	if slots[0] != 4 {
		t.Errorf("slot after zero request = %d, want 4 (slots keep increasing)", slots[0])
	}
	for i := range 2 {
		if !p.readerGone(i) {
			t.Errorf("pipe %d still has a reader after the zero request", i)
		}
	}
	if p.readerGone(2) {
		t.Error("zero request closed another connection's fd")
	}
	if _, err := s.Take(1); err == nil || err.Error() != "no file descriptor in slot 1" {
		t.Errorf("Take(1) error = %v, want %q", err, "no file descriptor in slot 1")
	}
	if f, err := s.Take(3); err != nil {
		t.Errorf("Take(3): %v", err)
	} else {
		_ = f.Close()
	}
}

func TestErrorReply(t *testing.T) {
	tests := []struct {
		name     string
		header   uint64
		sendFDs  int
		wantText string
	}{
		{"fewer fds than announced", 7<<32 | 2, 1, "received 1 fds, but expected 2 fds"},
		{"fds but a count of zero", 8 << 32, 1, "received 1 fds, but expected 0 fds"},
		{"announced fds missing", 9<<32 | 1, 0, "received 0 fds, but expected 1 fds"},
		{"count only in the low byte", 10<<32 | 0x0100 | 2, 1, "received 1 fds, but expected 2 fds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := listen(t)
			c := dial(t, s.Path())
			p := newPipes(t, tt.sendFDs)
			if err := c.sendRaw(binary.LittleEndian.AppendUint64(nil, tt.header), p.readFDs()...); err != nil {
				t.Fatal(err)
			}
			p.dropReadEnds()
			reply, err := c.read()
			if err != nil {
				t.Fatal(err)
			}
			if len(reply) < 8 {
				t.Fatalf("reply too short: %q", reply)
			}
			if got, want := binary.LittleEndian.Uint64(reply), tt.header|0xff; got != want {
				t.Errorf("reply header = %#x, want %#x", got, want)
			}
			if got := string(reply[8:]); got != tt.wantText {
				t.Errorf("message = %q, want %q", got, tt.wantText)
			}
			for i := range tt.sendFDs {
				if !p.readerGone(i) {
					t.Errorf("fd %d of a failed request was kept", i)
				}
			}
			if _, err := s.Take(1); err == nil {
				t.Error("a failed request filled slot 1")
			}
		})
	}
}

func TestIgnoredMessages(t *testing.T) {
	for _, size := range []int{1, 4, 7, 9, 16, 100} {
		t.Run(strconv.Itoa(size)+" bytes", func(t *testing.T) {
			s := listen(t)
			c := dial(t, s.Path())
			p := newPipes(t, 1)
			msg := make([]byte, size)
			msg[0] = 1 // a count of one, were it a request
			if err := c.sendRaw(msg, p.readFDs()...); err != nil {
				t.Fatal(err)
			}
			p.dropReadEnds()
			// No reply to the ignored message: the next reply answers the
			// next request (the client checks the request id).
			q := newPipes(t, 1)
			slots, err := c.send(q.readFDs()...)
			if err != nil {
				t.Fatal(err)
			}
			if slots[0] != 1 {
				t.Errorf("slot = %d, want 1", slots[0])
			}
			if !p.readerGone(0) {
				t.Error("fd of an ignored message was kept")
			}
		})
	}
}

func TestHeaderEchoedVerbatim(t *testing.T) {
	s := listen(t)
	c := dial(t, s.Path())
	p := newPipes(t, 1)
	header := uint64(0xdeadbeef)<<32 | 0xabcd00 | 1 // bits 8..31 are not the count
	if err := c.sendRaw(binary.LittleEndian.AppendUint64(nil, header), p.readFDs()...); err != nil {
		t.Fatal(err)
	}
	reply, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	if len(reply) != 16 {
		t.Fatalf("reply = %x, want 16 bytes", reply)
	}
	if got := binary.LittleEndian.Uint64(reply); got != header {
		t.Errorf("echoed header = %#x, want %#x", got, header)
	}
	if got := binary.LittleEndian.Uint64(reply[8:]); got != 1 {
		t.Errorf("slot = %d, want 1", got)
	}
}

func TestSlotsSharedAcrossConnections(t *testing.T) {
	s := listen(t)
	a, b := dial(t, s.Path()), dial(t, s.Path())
	p := newPipes(t, 4)
	fds := p.readFDs()
	steps := []struct {
		c    *testClient
		fds  []int
		want string
	}{
		{a, fds[:2], "[1 2]"},
		{b, fds[2:3], "[3]"},
		{a, fds[3:], "[4]"},
	}
	for _, st := range steps {
		slots, err := st.c.send(st.fds...)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(slots) != st.want {
			t.Fatalf("slots = %v, want %s", slots, st.want)
		}
	}
	p.dropReadEnds()
	_ = a.conn.Close()
	eventually(t, "a's fds are closed", func() bool { return p.readerGone(0) && p.readerGone(1) && p.readerGone(3) })
	if p.readerGone(2) {
		t.Fatal("b's fd was closed when a disconnected")
	}
}

func TestStoreSlots(t *testing.T) {
	tests := []struct {
		name     string
		last     uint64
		occupied []uint64
		want     []uint64
	}{
		{"start at one", 0, nil, []uint64{1, 2, 3}},
		{"wrap around", math.MaxUint64 - 1, nil, []uint64{math.MaxUint64, 0, 1}},
		{"skip occupied", 0, []uint64{2, 3}, []uint64{1, 4, 5}},
		{"skip occupied across the wrap", math.MaxUint64, []uint64{0, 1}, []uint64{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore()
			s.last = tt.last
			for _, o := range tt.occupied {
				s.fds[o] = os.Stdin // never closed: only the map key matters
			}
			var got []uint64
			for range tt.want {
				got = append(got, s.add(os.Stdin))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("slots = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestListenLongPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 200 {
		dir = filepath.Join(dir, strings.Repeat("d", 50))
	}
	path := filepath.Join(dir, "conmon-fd.sock") // parent created by Listen
	if len(path) <= 108 {
		t.Fatalf("path only %d bytes", len(path))
	}
	s, err := Listen(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, path)
	p := newPipes(t, 1)
	if slots, err := c.send(p.readFDs()...); err != nil || len(slots) != 1 {
		t.Fatalf("send over long path: %v, %v", slots, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left after Close: %v", err)
	}
}

func TestListenSocketFile(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr bool
	}{
		{"fresh", func(*testing.T, string) {}, false},
		{"stale socket replaced", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false)
			_ = ln.Close()
		}, false},
		{"regular file refused", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fd.sock")
			tt.prepare(t, path)
			s, err := Listen(path, nil)
			if tt.wantErr {
				if err == nil {
					_ = s.Close()
					t.Fatal("Listen succeeded")
				}
				if b, _ := os.ReadFile(path); string(b) != "keep" {
					t.Fatal("Listen clobbered a non-socket file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = s.Close() }()
			st, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Type() != fs.ModeSocket || st.Mode().Perm() != 0o600 {
				t.Errorf("socket mode = %v, want socket 0600", st.Mode())
			}
			var so int
			if so, err = socketType(path); err != nil || so != unix.SOCK_SEQPACKET {
				t.Errorf("socket type = %d, %v; want SOCK_SEQPACKET", so, err)
			}
		})
	}
}

// socketType connects to path and returns the socket type the connection
// was accepted with (a SOCK_STREAM dial to a seqpacket socket fails).
func socketType(path string) (int, error) {
	if _, err := net.Dial("unix", path); err == nil {
		return unix.SOCK_STREAM, nil
	}
	c, err := net.Dial("unixpacket", path)
	if err != nil {
		return 0, err
	}
	_ = c.Close()
	return unix.SOCK_SEQPACKET, nil
}

func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestCloseReleasesEverything(t *testing.T) {
	p := newPipes(t, 3)
	before := fdCount(t)

	s, err := Listen(filepath.Join(t.TempDir(), "fd.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.Path())
	if _, err := c.send(p.readFDs()...); err != nil {
		t.Fatal(err)
	}
	idle := dial(t, s.Path()) // a connection that never sends
	// A request for zero fds (non-zero id) gets an empty reply, which
	// shows the server has accepted idle before Close.
	if slots, err := idle.send(); err != nil || len(slots) != 0 {
		t.Fatalf("empty request: %v, %v", slots, err)
	}
	taken, err := s.Take(3)
	if err != nil {
		t.Fatal(err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left: %v", err)
	}
	goleak.VerifyNone(t)

	// Close dropped every untaken fd: with the test's copies gone too,
	// pipes 1 and 2 have no reader; the taken one still has.
	p.dropReadEnds()
	if !p.readerGone(0) || !p.readerGone(1) {
		t.Error("untaken fds survive Close")
	}
	if p.readerGone(2) {
		t.Error("Close closed a taken fd")
	}
	_ = taken.Close()
	_ = c.conn.Close()
	_ = idle.conn.Close()
	// The test's copies of the read ends were part of "before".
	if after := fdCount(t); after != before-3 {
		t.Errorf("open fds: %d before Listen (3 of them now closed), %d after Close", before, after)
	}
	if _, err := s.Take(1); !errors.Is(err, ErrNoFD) {
		t.Errorf("Take after Close: %v", err)
	}
}

func TestConcurrentConnections(t *testing.T) {
	const clients, perClient = 8, 20
	s := listen(t)
	var (
		mu   sync.Mutex
		seen = map[uint64]bool{}
		wg   sync.WaitGroup
	)
	for range clients {
		c := dial(t, s.Path())
		p := newPipes(t, 1)
		wg.Go(func() {
			for range perClient {
				slots, err := c.send(p.readFDs()[0])
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[slots[0]] {
					t.Errorf("slot %d handed out twice", slots[0])
				}
				seen[slots[0]] = true
				mu.Unlock()
				f, err := s.Take(slots[0])
				if err != nil {
					t.Error(err)
					return
				}
				_ = f.Close()
			}
		})
	}
	wg.Wait()
	if len(seen) != clients*perClient {
		t.Fatalf("%d distinct slots, want %d", len(seen), clients*perClient)
	}
}

// TestConnectionFlood: the socket holds at most MaxConns connections;
// silent ones give way to newcomers, and a client that sends its request
// at once is served during the flood.
func TestConnectionFlood(t *testing.T) {
	s := listen(t)
	const extra = 16
	for range MaxConns + extra {
		dial(t, s.Path())
	}
	eventually(t, "the flood is cut to the cap", func() bool { return s.limiter.Stats().Evicted >= extra })
	if st := s.limiter.Stats(); st.Live > MaxConns {
		t.Fatalf("after %d silent connections: %+v, want at most %d live", MaxConns+extra, st, MaxConns)
	}
	s.mu.Lock()
	held := len(s.conns)
	s.mu.Unlock()
	if held > MaxConns {
		t.Errorf("server holds %d connections, want at most %d", held, MaxConns)
	}

	c := dial(t, s.Path())
	p := newPipes(t, 1)
	slots, err := c.send(p.readFDs()...)
	if err != nil || len(slots) != 1 {
		t.Fatalf("request during the flood: slots %v, %v", slots, err)
	}
	// Having spoken, it is not evicted by the next flood.
	for range MaxConns + extra {
		dial(t, s.Path())
	}
	eventually(t, "the second flood is cut", func() bool { return s.limiter.Stats().Evicted >= 2*extra })
	if _, err := c.send(); err != nil {
		t.Fatalf("served client after the second flood: %v", err)
	}
}

// An upgrade's handoff: the server parks its connections at a message
// boundary and hands over its listener, its connections and their stored
// fds; ResumeAfterHandoff serves them again (an aborted upgrade), and
// Adopt serves them in the new process (here: a second server on the
// handed-over descriptors), slots and all: a client that dialled during
// the handoff waits in the backlog and is served there, the slot counter
// goes on, a stored fd can be taken, and the fds of a connection that ends
// are closed by the adopter.
func TestHandoff(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "conmon-fd.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.Path())
	p := newPipes(t, 4)
	send := func(c *testClient, i int) uint64 {
		t.Helper()
		slots, err := c.send(p.readFDs()[i])
		if err != nil || len(slots) != 1 {
			t.Fatalf("send pipe %d: %v %v", i, slots, err)
		}
		return slots[0]
	}
	if slot := send(c, 0); slot != 1 {
		t.Fatalf("first slot %d", slot)
	}
	h, err := s.PauseForHandoff()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 1 || len(h.Conns[0].Slots) != 1 || h.Conns[0].Slots[0].Slot != 1 || h.Last != 1 {
		t.Fatalf("handoff: %+v", h)
	}
	h.Close()
	s.ResumeAfterHandoff() // an aborted upgrade: served again
	if slot := send(c, 1); slot != 2 {
		t.Fatalf("slot after a resumed handoff: %d, want 2", slot)
	}

	if slot := send(c, 2); slot != 3 {
		t.Fatalf("slot %d, want 3", slot)
	}
	taken, err := s.Take(3) // taken: not handed over
	if err != nil {
		t.Fatal(err)
	}
	_ = taken.Close()
	h, err = s.PauseForHandoff()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Conns) != 1 || len(h.Conns[0].Slots) != 2 || h.Last != 3 {
		t.Fatalf("handoff after a Take: %+v, want slots 1 and 2, last 3", h)
	}
	waiting := dial(t, s.Path()) // queued in the backlog
	// The exec: the old server's own descriptors go away (the stored
	// files are handed over, not closed).
	s.ln.SetUnlinkOnClose(false)
	_ = s.ln.Close()
	for lc := range s.conns {
		_ = lc.Close()
	}
	a, err := Adopt(h.Listener, s.Path(), h.Conns, h.Last, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if slot := send(waiting, 2); slot != 4 {
		t.Fatalf("slot through the adopted socket: %d, want 4 (the counter goes on)", slot)
	}
	if slot := send(c, 3); slot != 5 {
		t.Fatalf("slot on the carried connection: %d, want 5", slot)
	}
	f, err := a.Take(1)
	if err != nil {
		t.Fatalf("Take the carried slot 1: %v", err)
	}
	defer func() { _ = f.Close() }()
	p.dropReadEnds()
	if _, err := p.w[0].Write([]byte("carried")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := f.Read(buf); err != nil || string(buf[:n]) != "carried" {
		t.Fatalf("read the carried fd: %q %v", buf[:n], err)
	}
	// The carried connection ends: the adopter closes what it stored
	// and nobody took (slots 2 and 5), not the taken one.
	_ = c.conn.Close()
	eventually(t, "slot 2's pipe loses its reader", func() bool { return p.readerGone(1) })
	eventually(t, "slot 5's pipe loses its reader", func() bool { return p.readerGone(3) })
	if p.readerGone(0) {
		t.Fatal("the taken fd was closed")
	}
}
