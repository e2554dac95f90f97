package interop

import (
	"io"
	"strings"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"k8s.io/client-go/tools/remotecommand"
)

// serveAttach asks gomon for an attach session URL.
func serveAttach(t *testing.T, s *gomonServer, cfg *client.ServeAttachContainerConfig) string {
	t.Helper()
	res, err := s.client.ServeAttachContainer(t.Context(), cfg)
	if err != nil {
		t.Fatalf("ServeAttachContainer: %v", err)
	}
	checkLoopbackURL(t, res.URL, "attach")
	return res.URL
}

// TestServeAttach streams running containers' I/O with client-go's
// WebSocket executor until the container exits; the session then ends
// without error.
func TestServeAttach(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))

	t.Run("output of a running container", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sh", "-c", "i=0; while :; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.1; done"}, nil, nil)
		url := serveAttach(t, s, &client.ServeAttachContainerConfig{ID: c.id, Stdout: true, Stderr: true})
		stdout, stderr := newSyncBuf(), newSyncBuf()
		done := make(chan error, 1)
		go func() { done <- runStream(t, url, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr}) }()
		if !stdout.waitFor("tick") || !stderr.waitFor("tock") {
			t.Fatalf("no live output: stdout %q, stderr %q", stdout.String(), stderr.String())
		}
		c.runc(t, s, "kill", c.id, "KILL")
		if err := <-done; err != nil {
			t.Fatalf("attach after the container exited: %v", err)
		}
	})

	t.Run("stdin of a pipe container", func(t *testing.T) {
		c := runningContainer(t, s, []string{"cat"}, nil, func(r *client.CreateContainerConfig) { r.Stdin = true })
		url := serveAttach(t, s, &client.ServeAttachContainerConfig{ID: c.id, Stdin: true, Stdout: true, Stderr: true})
		stdout := newSyncBuf()
		pr, pw := io.Pipe()
		defer func() { _ = pw.Close() }()
		done := make(chan error, 1)
		go func() {
			done <- runStream(t, url, remotecommand.StreamOptions{Stdin: pr, Stdout: stdout, Stderr: io.Discard})
		}()
		for _, line := range []string{"ping\n", "pong\n"} {
			if _, err := io.WriteString(pw, line); err != nil {
				t.Fatal(err)
			}
			if !stdout.waitFor(line) {
				t.Fatalf("container did not echo %q: stdout %q", line, stdout.String())
			}
		}
		c.runc(t, s, "kill", c.id, "KILL")
		if err := <-done; err != nil {
			t.Fatalf("attach after the container exited: %v", err)
		}
	})

	t.Run("terminal with resize", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sh"}, withTerminal, func(r *client.CreateContainerConfig) {
			r.Stdin, r.Terminal = true, true
		})
		url := serveAttach(t, s, &client.ServeAttachContainerConfig{ID: c.id, Stdin: true, Stdout: true})
		stdout := newSyncBuf()
		pr, pw := io.Pipe()
		defer func() { _ = pw.Close() }()
		q := newSizeQueue(remotecommand.TerminalSize{Width: 90, Height: 30})
		defer q.stop()
		done := make(chan error, 1)
		go func() {
			done <- runStream(t, url, remotecommand.StreamOptions{Stdin: pr, Stdout: stdout, Tty: true, TerminalSizeQueue: q})
		}()
		// The echo is split so the terminal's echo of the typed line does
		// not match.
		cmd := `while [ "$(stty size 2>/dev/null)" != "30 90" ]; do sleep 0.05; done; echo RE""SIZED` + "\n"
		if _, err := io.WriteString(pw, cmd); err != nil {
			t.Fatal(err)
		}
		if !stdout.waitFor("RESIZED") {
			t.Fatalf("terminal not resized: stdout %q", stdout.String())
		}
		if _, err := io.WriteString(pw, "exit\n"); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("attach after the container exited: %v", err)
		}
		if strings.Contains(stdout.String(), "\x00") {
			t.Errorf("NUL bytes in terminal output %q", stdout.String())
		}
	})
}
