package stream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Closing the server (Shutdown, an upgrade in place) ends a running
// session with a going-away close, so the client can tell it from a
// dropped connection, and cancels its command.
func TestCloseEndsSessionsGoingAway(t *testing.T) {
	s := New(Options{})
	started, cancelled := make(chan struct{}), make(chan struct{})
	url, err := s.AddExec(Command{Stdout: true, Run: func(ctx context.Context, sio IO) (int, error) {
		_, _ = sio.Stdout.Write([]byte("running"))
		close(started)
		<-ctx.Done()
		close(cancelled)
		return 0, ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	conn := dialSession(t, url)
	<-started
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		closed <- s.Close(ctx)
	}()
	var end error
	for end == nil {
		_, _, end = conn.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(end, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Errorf("session ended with %v, want a going-away close", end)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the session's command was not cancelled")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}
