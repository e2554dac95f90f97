package interop

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gorilla/websocket"
	"k8s.io/client-go/tools/remotecommand"
)

// TestSessionTokens: tokens are single-use and bound to their kind; a
// request that is not a WebSocket upgrade leaves the session usable;
// unknown tokens and paths are 404.
func TestSessionTokens(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "3600"}, nil, nil)
	url := serveExec(t, s, &client.ServeExecContainerConfig{ID: c.id, Command: []string{"echo", "once"}, Stdout: true})
	base := url[:strings.Index(url, "/exec/")]
	token := url[strings.LastIndex(url, "/")+1:]

	for _, tc := range []struct {
		name, method, url string
		want              int
	}{
		{"plain GET is no upgrade", http.MethodGet, url, http.StatusBadRequest},
		{"plain POST is no upgrade", http.MethodPost, url, http.StatusBadRequest},
		{"other methods", http.MethodPut, url, http.StatusMethodNotAllowed},
		{"token of another kind", http.MethodGet, base + "/attach/" + token, http.StatusNotFound},
		{"port-forward path", http.MethodGet, base + "/port-forward/" + token, http.StatusNotFound},
		{"unknown token", http.MethodGet, base + "/exec/0b5d3d4e-8f8a-4c1e-9d7a-3f1f2e6b9a10", http.StatusNotFound},
		{"not a token", http.MethodGet, base + "/exec/..%2f..%2fetc", http.StatusNotFound},
		{"unknown path", http.MethodGet, base + "/", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := httpStatus(t, tc.method, tc.url); got != tc.want {
				t.Errorf("%s %s: status %d, want %d", tc.method, tc.url, got, tc.want)
			}
		})
	}

	out := newSyncBuf()
	if err := runStream(t, url, remotecommand.StreamOptions{Stdout: out}); err != nil {
		t.Fatalf("first use of the session: %v", err)
	}
	if out.String() != "once\n" {
		t.Errorf("stdout %q, want %q", out.String(), "once\n")
	}
	if got := httpStatus(t, http.MethodGet, url); got != http.StatusNotFound {
		t.Errorf("GET of a used session: status %d, want 404", got)
	}
	if err := runStream(t, url, remotecommand.StreamOptions{Stdout: newSyncBuf()}); err == nil {
		t.Errorf("second use of a session succeeded")
	}
}

// TestMalformedClients throws broken requests and protocol violations at
// the streaming server, then checks the daemon still serves RPCs and
// sessions.
func TestMalformedClients(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "3600"}, nil, nil)
	newExec := func(cmd ...string) string {
		return serveExec(t, s, &client.ServeExecContainerConfig{ID: c.id, Command: cmd, Stdin: true, Stdout: true, Stderr: true})
	}
	wsURL := func(u string) string { return "ws" + strings.TrimPrefix(u, "http") }
	dial := func(t *testing.T, u string, protos ...string) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{Subprotocols: protos, HandshakeTimeout: hangGuard}
		conn, resp, err := d.Dial(wsURL(u), nil)
		if err != nil {
			t.Fatalf("dial %s: %v (response %v)", u, err, resp)
		}
		return conn
	}

	t.Run("raw garbage", func(t *testing.T) {
		u := newExec("true")
		addr := strings.TrimPrefix(u[:strings.Index(u, "/exec/")], "http://")
		conn, err := net.DialTimeout("tcp", addr, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(hangGuard))
		if _, err := conn.Write([]byte("\x16\x03\x01garbage\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.Contains(line, "400") {
			t.Errorf("answer to garbage: %q, want a 400", line)
		}
	})

	t.Run("unsupported subprotocol", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{"channel.k8s.io"}, HandshakeTimeout: hangGuard}
		_, resp, err := d.Dial(wsURL(newExec("true")), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("dial with only channel.k8s.io: %v, response %v; want 400", err, resp)
		}
	})

	t.Run("protocol violations on an exec session", func(t *testing.T) {
		conn := dial(t, newExec("cat"), "v5.channel.k8s.io")
		defer func() { _ = conn.Close() }()
		for _, m := range []struct {
			typ  int
			data []byte
		}{
			{websocket.TextMessage, []byte("hello")},
			{websocket.BinaryMessage, nil},
			{websocket.BinaryMessage, []byte{9, 'x'}},
			{websocket.BinaryMessage, []byte{4, '{', 'n', 'o'}},
			{websocket.BinaryMessage, []byte{4}},
			{websocket.BinaryMessage, []byte{255}},
			{websocket.BinaryMessage, []byte{255, 7}},
			{websocket.BinaryMessage, []byte("\x00still-alive\n")},
		} {
			if err := conn.WriteMessage(m.typ, m.data); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
		_, msg, err := conn.ReadMessage()
		if err != nil || string(msg) != "\x01still-alive\n" {
			t.Fatalf("echo after protocol violations: %q, %v", msg, err)
		}
		// A message over the size limit ends the session.
		if err := conn.WriteMessage(websocket.BinaryMessage, make([]byte, 2<<20)); err != nil {
			t.Logf("write oversized message: %v", err)
		}
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				break
			}
		}
	})

	t.Run("client vanishes mid-exec", func(t *testing.T) {
		conn := dial(t, newExec("sleep", "3601"), "v5.channel.k8s.io")
		// Wait for the process, then drop the connection without a close.
		waitProc(t, "sleep 3601", true)
		_ = conn.UnderlyingConn().Close()
		waitProc(t, "sleep 3601", false)
	})

	t.Run("garbage in a port-forward tunnel", func(t *testing.T) {
		res, err := s.client.ServePortForwardContainer(t.Context(), &client.ServePortForwardContainerConfig{NetNsPath: "/proc/1/ns/net"})
		if err != nil {
			t.Fatal(err)
		}
		conn := dial(t, res.URL, "SPDY/3.1+portforward.k8s.io")
		defer func() { _ = conn.Close() }()
		if err := conn.WriteMessage(websocket.BinaryMessage, []byte("\x80\x03\x00\x01\xff\xff\xff\xffnot spdy at all")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("server kept a broken tunnel open")
				}
				break
			}
		}
	})

	// The daemon is still there and serving.
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if _, err := s.client.Version(ctx, &client.VersionConfig{}); err != nil {
		t.Fatalf("Version after malformed clients: %v", err)
	}
	out := newSyncBuf()
	u := serveExec(t, s, &client.ServeExecContainerConfig{ID: c.id, Command: []string{"echo", "ok"}, Stdout: true})
	if err := runStream(t, u, remotecommand.StreamOptions{Stdout: out}); err != nil || out.String() != "ok\n" {
		t.Fatalf("exec after malformed clients: %q, %v", out.String(), err)
	}
}

// waitProc waits up to hangGuard until a process whose command line is
// cmdline exists (present) or no longer exists.
func waitProc(t *testing.T, cmdline string, present bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		if procExists(cmdline) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q present=%v, want %v after %v", cmdline, !present, present, hangGuard)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func procExists(cmdline string) bool {
	ents, _ := os.ReadDir("/proc")
	want := strings.ReplaceAll(cmdline, " ", "\x00") + "\x00"
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(b) == want {
			// A zombie has an empty cmdline, so this is a live process.
			return true
		}
	}
	return false
}
