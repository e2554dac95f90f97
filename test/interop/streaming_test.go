package interop

// Streaming exec through the client's ServeExecContainer, spoken to with a
// bare WebSocket client so the framing itself is checked (test/streaming
// drives the same server with client-go). Built against both client
// generations (go.mod and go.v073.mod).

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gorilla/websocket"
)

func TestServeExecWebSocket(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c, err := create(t, s, []string{"sleep", "1000"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ServeExecContainer(ctx, &client.ServeExecContainerConfig{
		ID:      c.id,
		Command: []string{"sh", "-c", "echo out; echo err >&2; exit 3"},
		Stdout:  true,
		Stderr:  true,
	})
	if err != nil {
		t.Fatalf("ServeExecContainer: %v", err)
	}
	if !strings.HasPrefix(res.URL, "http://127.0.0.1:") || !strings.Contains(res.URL, "/exec/") {
		t.Fatalf("URL %q", res.URL)
	}
	wsURL := "ws" + strings.TrimPrefix(res.URL, "http")
	dialer := websocket.Dialer{Subprotocols: []string{"v5.channel.k8s.io"}, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := dialer.DialContext(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (response %v)", wsURL, err, resp)
	}
	defer func() { _ = conn.Close() }()
	if conn.Subprotocol() != "v5.channel.k8s.io" {
		t.Errorf("subprotocol %q", conn.Subprotocol())
	}
	_ = conn.SetReadDeadline(time.Now().Add(hangGuard))
	var stdout, stderr strings.Builder
	var status map[string]any
	for {
		typ, msg, err := conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			break
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ != websocket.BinaryMessage || len(msg) == 0 {
			t.Fatalf("message type %d len %d", typ, len(msg))
		}
		switch msg[0] {
		case 1:
			stdout.Write(msg[1:])
		case 2:
			stderr.Write(msg[1:])
		case 3:
			if err := json.Unmarshal(msg[1:], &status); err != nil {
				t.Fatalf("status %q: %v", msg[1:], err)
			}
		}
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	details, _ := status["details"].(map[string]any)
	causes, _ := details["causes"].([]any)
	if status["status"] != "Failure" || status["reason"] != "NonZeroExitCode" || len(causes) != 1 {
		t.Fatalf("status %v", status)
	}
	if cause := causes[0].(map[string]any); cause["reason"] != "ExitCode" || cause["message"] != "3" {
		t.Errorf("cause %v, want ExitCode 3", cause)
	}

	// The token was single-use.
	_, resp, err = dialer.DialContext(ctx, wsURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("second use of the token: %v (response %v), want 404", err, resp)
	}
}
