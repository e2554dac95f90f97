package stream

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// dialSession connects to a session's URL with the v5 subprotocol, with
// a 10 s read deadline; the connection is closed at the test's end.
func dialSession(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocolV5}, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial(strings.Replace(url, "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// runSession connects to an exec URL and returns what arrived on stdout
// and the status message on the error channel.
func runSession(t *testing.T, url string) (stdout, status string) {
	t.Helper()
	conn := dialSession(t, url)
	var out strings.Builder
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return out.String(), status
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case chanStdout:
			out.Write(msg[1:])
		case chanError:
			status = string(msg[1:])
		}
	}
}

func panicInRun() { panic("injected session panic") }

// A panic in one session's command fails that session with a failure
// status; the server goes on serving other sessions, and the panic is
// counted and logged with its stack. Before, it ended the daemon.
func TestPanicFailsOnlyThatSession(t *testing.T) {
	var logs monitortest.SyncBuffer
	s := New(Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	before := contain.PanicsOf(contain.Stream)
	bad, err := s.AddExec(Command{Stdout: true, Run: func(context.Context, IO) (int, error) {
		panicInRun()
		return 0, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	good, err := s.AddExec(Command{Stdout: true, Run: func(_ context.Context, sio IO) (int, error) {
		_, err := sio.Stdout.Write([]byte("still serving"))
		return 0, err
	}})
	if err != nil {
		t.Fatal(err)
	}

	if _, st := runSession(t, bad); !strings.Contains(st, "Failure") || !strings.Contains(st, "injected session panic") {
		t.Errorf("status of the panicking session: %q, want a failure naming the panic", st)
	}
	if out, st := runSession(t, good); out != "still serving" || !strings.Contains(st, "Success") {
		t.Errorf("next session: stdout %q, status %q", out, st)
	}
	if got := contain.PanicsOf(contain.Stream) - before; got != 1 {
		t.Errorf("counted %d stream panics, want 1", got)
	}
	l := logs.String()
	for _, want := range []string{"injected session panic", "panicInRun", `"kind":"stream"`} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %s:\n%s", want, l)
		}
	}
}
