package stream

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConnectionLimit: the streaming port holds at most MaxConns
// connections; silent ones give way to a client that sends its request.
func TestConnectionLimit(t *testing.T) {
	s := New(Options{MaxConns: 4})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	raw, err := s.AddPortForward("/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		c, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.limiter.Stats().Evicted < 16 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.limiter.Stats(); st.Live > 4 || st.Evicted < 16 {
		t.Fatalf("after 20 silent connections: %+v, want at most 4 live and 16 evicted", st)
	}

	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET /exec/unknown HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 404") {
		t.Fatalf("request during the flood: %q, %v; want a 404 answer", line, err)
	}
	if st := s.limiter.Stats(); st.Live > 4 {
		t.Errorf("%d connections live, limit 4", st.Live)
	}
}
