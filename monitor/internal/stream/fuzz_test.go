package stream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // the WebSocket accept key is defined with SHA-1
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ so plain `go test` runs
// them; `make fuzz` runs each target for a while.

// fuzzConn is the server side of one client connection, in memory: reads
// return the client's request head, and what follows it (later) only once
// the server has answered, as a WebSocket client waits for the handshake's
// answer. Once the bytes are used up a read waits for the connection to be
// closed or for a read deadline, which then passes at once (a client that
// sent everything and waits, with time fast-forwarded). Everything the
// server writes is kept.
type fuzzConn struct {
	mu       sync.Mutex
	cond     *sync.Cond
	in       []byte       // guarded by mu
	later    []byte       // guarded by mu; sent once out is not empty
	off      int          // guarded by mu
	deadline bool         // guarded by mu; a read deadline is set
	closed   bool         // guarded by mu
	out      bytes.Buffer // guarded by mu
	// hangUp makes a read past the input io.EOF at once (the client
	// hung up after sending) instead of waiting.
	hangUp bool
}

var _ net.Conn = (*fuzzConn)(nil)

func newFuzzConn(head, later []byte, hangUp bool) *fuzzConn {
	c := &fuzzConn{in: head, later: later, hangUp: hangUp}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case c.off == len(c.in) && len(c.later) > 0 && c.out.Len() > 0:
			c.in, c.off, c.later = c.later, 0, nil
			continue
		case c.off < len(c.in):
			n := copy(p, c.in[c.off:])
			c.off += n
			return n, nil
		case c.deadline:
			return 0, os.ErrDeadlineExceeded
		case c.hangUp && len(c.later) == 0:
			return 0, io.EOF
		}
		c.cond.Wait()
	}
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.cond.Broadcast() // a waiting read may go on: the client has its answer
	return c.out.Write(p)
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.cond.Broadcast()
	return nil
}

func (c *fuzzConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = !t.IsZero()
	c.cond.Broadcast()
	return nil
}

func (c *fuzzConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil } // writes never block
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }

// written returns what the server wrote so far.
func (c *fuzzConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

// FuzzStreamRequest serves one connection whose bytes are a fuzzed request
// head followed, when the head is an upgrade, by WebSocket frames of the
// remote command protocol. {token} in the head is replaced by the token of
// a live session. It checks:
//   - every connection gets a parseable HTTP/1.1 answer and serveConn
//     returns (no goroutine is left: TestMain runs goleak);
//   - the session is taken exactly when the handler's documented order says
//     so (a valid token, GET or POST, a WebSocket upgrade offering one of
//     our subprotocols), and only then can the answer be 101, with the
//     right Sec-WebSocket-Accept and a subprotocol the client offered;
//   - for a well-formed client, the command sees exactly the stdin the
//     client sent, the last terminal size, and the client receives the
//     command's output, its exit status and a normal close.
//
// msgs is a compact list of client messages the harness frames correctly
// (see clientFrames); garbage is raw bytes sent after them.
func FuzzStreamRequest(f *testing.F) {
	const upgrade = "GET /exec/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
	f.Add([]byte(upgrade), byte(0x0f), []byte("\x00\x05hello\x02\x04\x00\x50\x00\x18"), []byte(nil))
	f.Add([]byte("GET /exec/{token} HTTP/1.1\r\nHost: x\r\n\r\n"), byte(0), []byte(nil), []byte(nil))
	f.Fuzz(func(t *testing.T, head []byte, flags byte, msgs, garbage []byte) {
		fuzzStreamOnce(t, head, flags, msgs, garbage)
	})
}

// fuzzStreamOnce is one FuzzStreamRequest input; it returns the answer's
// status and whether the exact session checks ran.
func fuzzStreamOnce(t *testing.T, head []byte, flags byte, msgs, garbage []byte) (int, bool) {
	t.Helper()
	{
		k := kindExec
		if flags&0x10 != 0 {
			k = kindAttach
		}
		cmd, ran := fuzzCommand(flags)
		s := New(Options{})
		defer func() { _ = s.Close(context.Background()) }()
		tok := s.sessions.add(&session{kind: k, cmd: cmd})
		head = bytes.ReplaceAll(head, []byte("{token}"), []byte(tok))
		frames, want := clientFrames(msgs, cmd)

		// The reference: the request as net/http reads it within the
		// server's head limit, and whether the handler must take the session.
		ref := bufio.NewReader(bytes.NewReader(head[:min(len(head), maxHeaderBytes)]))
		req, rerr := http.ReadRequest(ref)
		// clean: a well-formed client, whose head is exactly one request
		// without a body and whose messages are all the harness's.
		clean := rerr == nil && len(garbage) == 0 && ref.Buffered() == 0 && len(head) <= maxHeaderBytes && req.ContentLength <= 0
		expectTaken := rerr == nil && routesTo(req, k, tok) &&
			(req.Method == http.MethodGet || req.Method == http.MethodPost) &&
			websocket.IsWebSocketUpgrade(req) && offersOneOf(req, subprotocols[k])

		conn := newFuzzConn(head, slices.Concat(frames, garbage), !clean)
		s.serveConn(conn)
		_ = conn.Close()

		out := conn.written()
		if len(out) == 0 && expectTaken && !clean {
			// The client sent data before the handshake's answer: the
			// upgrader closes such a connection without one.
			return 0, false
		}
		br := bufio.NewReader(bytes.NewReader(out))
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatalf("answer %q does not parse: %v", out[:min(len(out), 200)], err)
		}
		_ = resp.Body.Close() // in memory
		if rerr != nil && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("unreadable request (%v) answered %d", rerr, resp.StatusCode)
		}
		if _, present := s.sessions.peek(k, tok); present == expectTaken {
			t.Fatalf("session present after the request = %v, want %v (status %d)", present, !expectTaken, resp.StatusCode)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			if ran.done() {
				t.Fatal("the command ran without an upgrade")
			}
			return resp.StatusCode, false
		}
		if !expectTaken {
			t.Fatal("upgraded a request the handler must refuse")
		}
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(req.Header.Get("Sec-WebSocket-Key")); got != want {
			t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, want)
		}
		if p := resp.Header.Get("Sec-WebSocket-Protocol"); !slices.Contains(websocket.Subprotocols(req), p) || !slices.Contains(subprotocols[k], p) {
			t.Fatalf("subprotocol %q not offered (%q) or not ours", p, websocket.Subprotocols(req))
		}
		if !ran.done() {
			t.Fatal("upgraded, but the command never ran")
		}
		if !clean {
			return resp.StatusCode, false // the client broke the protocol or hung up: no exact expectations
		}
		gotStdin, gotSize, gotSized := ran.result()
		if cmd.Stdin && !bytes.Equal(gotStdin, want.stdin) {
			t.Fatalf("command read stdin %q, client sent %q", gotStdin, want.stdin)
		}
		if cmd.Stdin && cmd.TTY && (gotSized != want.sized || gotSize != want.size) {
			t.Fatalf("last terminal size %v (%v), want %v (%v)", gotSize, gotSized, want.size, want.sized)
		}
		checkServerMessages(t, br, cmd, gotStdin, int(flags>>5))
		return resp.StatusCode, true
	}
}

// TestFuzzStreamHarness makes sure the seeds reach what the fuzz target
// checks: a valid upgrade runs the session with every exact check, an
// unknown token is 404, and a plain GET is 400 and keeps the session.
func TestFuzzStreamHarness(t *testing.T) {
	up := []byte("GET /attach/{token} HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: x, v4.channel.k8s.io\r\n\r\n")
	msgs := []byte("\x00\x03abc\x01\x04defg\x02\x04\x00\x50\x00\x18\x03\x01p\x04\x01q\x05\x01r\x06\x00\x07\x00")
	if code, exact := fuzzStreamOnce(t, up, 0x1f|3<<5, msgs, nil); code != http.StatusSwitchingProtocols || !exact {
		t.Fatalf("valid upgrade: status %d, exact checks %v", code, exact)
	}
	if code, _ := fuzzStreamOnce(t, bytes.Replace(up, []byte("{token}"), []byte("nope"), 1), 0x1f, msgs, nil); code != http.StatusNotFound {
		t.Fatalf("unknown token: status %d", code)
	}
	if code, _ := fuzzStreamOnce(t, []byte("GET /exec/{token} HTTP/1.1\r\nHost: h\r\n\r\n"), 0, nil, nil); code != http.StatusBadRequest {
		t.Fatalf("plain GET: status %d", code)
	}
}

// fuzzRun records what a fuzz command saw.
type fuzzRun struct {
	mu    sync.Mutex
	ran   bool
	stdin []byte
	size  TerminalSize
	sized bool
}

func (r *fuzzRun) done() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ran
}

func (r *fuzzRun) result() ([]byte, TerminalSize, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stdin, r.size, r.sized
}

// fuzzCommand builds the session's command from flags: bits 0-3 select
// stdin, stdout, stderr and TTY, bits 5-7 the exit code. It reads stdin to
// its end, then takes the latest terminal size, echoes stdin on stdout and
// writes "err" on stderr.
func fuzzCommand(flags byte) (Command, *fuzzRun) {
	r := &fuzzRun{}
	cmd := Command{Stdin: flags&1 != 0, Stdout: flags&2 != 0, Stderr: flags&4 != 0, TTY: flags&8 != 0}
	cmd.Run = func(_ context.Context, sio IO) (int, error) {
		var in []byte
		if sio.Stdin != nil {
			in, _ = io.ReadAll(sio.Stdin) // ends with the client's stdin close or its departure
		}
		r.mu.Lock()
		r.ran, r.stdin = true, in
		select {
		case r.size = <-sio.Resize:
			r.sized = true
		default:
		}
		r.mu.Unlock()
		if sio.Stdout != nil {
			_, _ = sio.Stdout.Write(in) // the client may be gone
		}
		if sio.Stderr != nil {
			_, _ = sio.Stderr.Write([]byte("err"))
		}
		return int(flags >> 5), nil
	}
	return cmd, r
}

// clientExpect is what a well-formed client's messages must produce.
type clientExpect struct {
	stdin []byte
	size  TerminalSize
	sized bool
}

// clientFrames turns msgs into masked client frames: records of an op
// byte, a length byte and that many payload bytes. Ops: 0 stdin, 1 stdin
// fragmented around a ping, 2 resize (width, height from the payload),
// 3 ping, 4 an unknown channel, 5 a text message, 6 an empty message,
// 7 the close of a channel other than stdin. The stdin close always ends
// the list.
func clientFrames(msgs []byte, cmd Command) ([]byte, clientExpect) {
	var out []byte
	var want clientExpect
	for len(msgs) >= 2 {
		op, n := msgs[0]%8, int(msgs[1])
		p := msgs[2:min(len(msgs), 2+n)]
		msgs = msgs[min(len(msgs), 2+n):]
		switch op {
		case 0:
			out = append(out, wsFrame(true, websocket.BinaryMessage, append([]byte{chanStdin}, p...))...)
			want.stdin = append(want.stdin, p...)
		case 1:
			half := len(p) / 2
			out = append(out, wsFrame(false, websocket.BinaryMessage, append([]byte{chanStdin}, p[:half]...))...)
			out = append(out, wsFrame(true, websocket.PingMessage, []byte("mid"))...)
			out = append(out, wsFrame(true, 0, p[half:])...) // continuation
			want.stdin = append(want.stdin, p...)
		case 2:
			var b [4]byte
			copy(b[:], p)
			sz := TerminalSize{Width: binary.BigEndian.Uint16(b[:2]), Height: binary.BigEndian.Uint16(b[2:])}
			js, _ := json.Marshal(sz) // cannot fail
			out = append(out, wsFrame(true, websocket.BinaryMessage, append([]byte{chanResize}, js...))...)
			want.size, want.sized = sz, true
		case 3:
			out = append(out, wsFrame(true, websocket.PingMessage, p[:min(len(p), 125)])...)
		case 4:
			out = append(out, wsFrame(true, websocket.BinaryMessage, append([]byte{5}, p...))...)
		case 5:
			out = append(out, wsFrame(true, websocket.TextMessage, []byte(strings.ToValidUTF8(string(p), "?")))...)
		case 6:
			out = append(out, wsFrame(true, websocket.BinaryMessage, nil)...)
		case 7:
			out = append(out, wsFrame(true, websocket.BinaryMessage, []byte{chanClose, chanStdout})...)
		}
	}
	out = append(out, wsFrame(true, websocket.BinaryMessage, []byte{chanClose, chanStdin})...)
	if !cmd.Stdin {
		want.stdin = nil
	}
	return out, want
}

// wsFrame encodes one masked client frame.
func wsFrame(fin bool, opcode int, payload []byte) []byte {
	b0 := byte(opcode)
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// routesTo reports whether the server's routes send req to kind k's
// handler with token tok (path cleaning and escapes as net/http does them).
func routesTo(req *http.Request, k kind, tok string) bool {
	got := ""
	m := http.NewServeMux()
	m.HandleFunc("/"+string(k)+"/{token}", func(_ http.ResponseWriter, r *http.Request) { got = r.PathValue("token") })
	_, pattern := m.Handler(req)
	if pattern == "" {
		return false
	}
	m.ServeHTTP(discardResponse{}, req)
	return got == tok
}

type discardResponse struct{}

func (discardResponse) Header() http.Header         { return http.Header{} }
func (discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (discardResponse) WriteHeader(int)             {}

func offersOneOf(req *http.Request, ours []string) bool {
	return slices.ContainsFunc(websocket.Subprotocols(req), func(p string) bool { return slices.Contains(ours, p) })
}

// acceptKey is RFC 6455's Sec-WebSocket-Accept for key.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) //nolint:gosec // protocol-defined
	return base64.StdEncoding.EncodeToString(h[:])
}

// checkServerMessages reads the server's frames after the 101: the
// command's stdout (its stdin echoed) and stderr, then its exit status on
// the error channel, then a normal close.
func checkServerMessages(t *testing.T, br *bufio.Reader, cmd Command, stdin []byte, code int) {
	t.Helper()
	var stdout, stderr, status []byte
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			t.Fatalf("server output ended without a close frame: %v", err)
		}
		if h[1]&0x80 != 0 {
			t.Fatal("server frame is masked")
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			_, _ = io.ReadFull(br, e[:])
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			_, _ = io.ReadFull(br, e[:])
			n = binary.BigEndian.Uint64(e[:])
		}
		if n > 1<<20 {
			t.Fatalf("server frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("server frame truncated: %v", err)
		}
		op, fin := int(h[0]&0x0f), h[0]&0x80 != 0
		switch op {
		case websocket.PongMessage:
			continue
		case websocket.CloseMessage:
			if len(p) < 2 || binary.BigEndian.Uint16(p) != websocket.CloseNormalClosure {
				t.Fatalf("close frame %q, want a normal closure", p)
			}
			wantOut := []byte(nil)
			if cmd.Stdout {
				wantOut = stdin
			}
			wantErr := []byte(nil)
			if cmd.Stderr && !cmd.TTY {
				wantErr = []byte("err")
			}
			if !bytes.Equal(stdout, wantOut) || !bytes.Equal(stderr, wantErr) {
				t.Fatalf("client got stdout %q stderr %q, want %q %q", stdout, stderr, wantOut, wantErr)
			}
			if want := statusFor(code, nil); !bytes.Equal(status, want) {
				t.Fatalf("status %s, want %s", status, want)
			}
			return
		case websocket.BinaryMessage, 0:
			msg = append(msg, p...)
		default:
			t.Fatalf("unexpected server frame opcode %d", op)
		}
		if !fin {
			continue
		}
		if len(msg) == 0 {
			t.Fatal("empty server message")
		}
		switch msg[0] {
		case chanStdout:
			stdout = append(stdout, msg[1:]...)
		case chanStderr:
			stderr = append(stderr, msg[1:]...)
		case chanError:
			status = append([]byte(nil), msg[1:]...)
		default:
			t.Fatalf("server message on channel %d", msg[0])
		}
		msg = nil
	}
}
