package interop

// AttachContainer and SetWindowSizeContainer through the real client
// (docs/contract.md, "Attach socket" and "SetWindowSizeContainer"). Built against both client
// generations (go.mod and go.v073.mod).

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"go.podman.io/common/pkg/resize"
)

// outBuf is an attach output stream (client.Out) that a test can wait on.
type outBuf struct {
	mu     sync.Mutex
	buf    strings.Builder
	closed bool
	wake   chan struct{} // closed and replaced on every Write and Close
}

func newOutBuf() *outBuf { return &outBuf{wake: make(chan struct{})} }

// Write appends p.
func (b *outBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.wake)
	b.wake = make(chan struct{})
	return len(p), nil
}

// Close marks the stream ended (the client closes it when the attach ends).
func (b *outBuf) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.wake)
		b.wake = make(chan struct{})
	}
	return nil
}

// String returns what was written so far.
func (b *outBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits, up to hangGuard, until the output contains want. It
// reports whether it does.
func (b *outBuf) waitFor(want string) bool {
	deadline := time.NewTimer(hangGuard)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		found, closed, wake := strings.Contains(b.buf.String(), want), b.closed, b.wake
		b.mu.Unlock()
		if found {
			return true
		}
		if closed {
			return false
		}
		select {
		case <-wake:
		case <-deadline.C:
			return false
		}
	}
}

// attachSession is one AttachContainer call running in the background.
type attachSession struct {
	stdin          *io.PipeWriter
	stdout, stderr *outBuf
	done           chan error // AttachContainer's result
}

// attach calls AttachContainer for c in a goroutine, with a pipe as stdin
// and outBufs as stdout and stderr.
//
// ContainerStdin stays false although the containers have stdin: with it
// true and StopAfterStdinEOF false (CRI-O's tty attach), both client
// generations stop reading output after the first packet
// (redirectResponseToOutputStreams), so what follows the shell's prompt
// would never reach the writer. The wire traffic does not depend on it.
func attach(t *testing.T, s *gomonServer, c *ctr, tty, stopAfterStdinEOF bool, resizes <-chan resize.TerminalSize) *attachSession {
	t.Helper()
	pr, pw := io.Pipe()
	a := &attachSession{stdin: pw, stdout: newOutBuf(), stderr: newOutBuf(), done: make(chan error, 1)}
	cfg := &client.AttachConfig{
		ID:                c.id,
		SocketPath:        filepath.Join(c.dir, "attach"),
		Tty:               tty,
		StopAfterStdinEOF: stopAfterStdinEOF,
		Resize:            resizes,
		Streams: client.AttachStreams{
			Stdin:  &client.In{ReadCloser: pr},
			Stdout: &client.Out{WriteCloser: a.stdout},
			Stderr: &client.Out{WriteCloser: a.stderr},
		},
	}
	// AttachContainer does not watch its context once attached; the
	// container's exit (the done packet) or stdin EOF ends it.
	go func() { a.done <- s.client.AttachContainer(context.Background(), cfg) }()
	t.Cleanup(func() { _ = pw.CloseWithError(errors.New("test over")) })
	return a
}

// send writes p to the attach session's stdin.
func (a *attachSession) send(t *testing.T, p string) {
	t.Helper()
	written := make(chan error, 1)
	go func() { _, err := io.WriteString(a.stdin, p); written <- err }()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("write %q to attach stdin: %v", p, err)
		}
	case <-time.After(hangGuard):
		t.Fatalf("write %q to attach stdin blocked for %v", p, hangGuard)
	}
}

// wait waits, bounded, for AttachContainer to return and fails the test
// on an error.
func (a *attachSession) wait(t *testing.T) {
	t.Helper()
	select {
	case err := <-a.done:
		if err != nil {
			t.Errorf("AttachContainer: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatalf("AttachContainer did not return within %v (stdout so far %q)", hangGuard, a.stdout.String())
	}
}

// withTerminal gives the container's process a terminal.
func withTerminal(spec map[string]any) {
	spec["process"].(map[string]any)["terminal"] = true
}

// stdinConfig asks for stdin and, with tty, a terminal.
func stdinConfig(tty bool) func(*client.CreateContainerConfig) {
	return func(r *client.CreateContainerConfig) {
		r.Stdin = true
		r.Terminal = tty
	}
}

// TestAttachShell attaches to `sh` reading its stdin, runs `echo hi`
// through the attach socket and ends the shell: by stdin EOF with
// stop-after-stdin-EOF (pipes), or by `exit` (terminal).
func TestAttachShell(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))

	t.Run("pipes, stop after stdin EOF", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sh"}, nil, stdinConfig(false))
		a := attach(t, s, c, false, true, nil)
		a.send(t, "echo hi\n")
		if !a.stdout.waitFor("hi\n") {
			t.Fatalf("stdout writer got %q (stderr %q), want \"hi\\n\"", a.stdout.String(), a.stderr.String())
		}
		// With StopAfterStdinEOF the client returns as soon as stdin
		// ends; gomon must then close the shell's stdin, ending it.
		if err := a.stdin.Close(); err != nil {
			t.Fatal(err)
		}
		a.wait(t)
		if got := c.exitCode(t); got != 0 {
			t.Errorf("exit code %d, want 0 (sh ends at stdin EOF)", got)
		}
		if got := a.stdout.String(); got != "hi\n" {
			t.Errorf("stdout %q, want exactly \"hi\\n\"", got)
		}
		if got := a.stderr.String(); got != "" {
			t.Errorf("stderr %q, want nothing", got)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sh"}, withTerminal, stdinConfig(true))
		a := attach(t, s, c, true, false, nil)
		a.send(t, "echo hi; exit\n")
		// The done packet (container output ended) ends the attach.
		a.wait(t)
		out := a.stdout.String()
		t.Logf("terminal output %q", out)
		// "hi;" is the terminal's echo of the input line, "hi\r\n" the
		// command's output through ONLCR.
		if !strings.Contains(out, "\r\nhi\r\n") {
			t.Errorf("stdout %q lacks the output line \"hi\\r\\n\"", out)
		}
		if got := a.stderr.String(); got != "" {
			t.Errorf("stderr %q, want nothing on a terminal", got)
		}
		if got := c.exitCode(t); got != 0 {
			t.Errorf("exit code %d, want 0", got)
		}
	})
}

// TestSetWindowSize: the size set through SetWindowSizeContainer, directly
// or through the attach's resize channel, is what `stty size` reports in
// the container; a container without a terminal refuses it.
func TestSetWindowSize(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	setSize := func(c *ctr, width, height uint16) error {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		return s.client.SetWindowSizeContainer(ctx, &client.SetWindowSizeContainerConfig{
			ID: c.id, Size: &resize.TerminalSize{Width: width, Height: height},
		})
	}

	t.Run("RPC before attach", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sh", "-c", "read x; stty size"}, withTerminal, stdinConfig(true))
		if err := setSize(c, 100, 40); err != nil {
			t.Fatalf("SetWindowSizeContainer: %v", err)
		}
		a := attach(t, s, c, true, false, nil)
		a.send(t, "\n")
		a.wait(t)
		if out := a.stdout.String(); !strings.Contains(out, "40 100\r\n") {
			t.Errorf("attach stdout %q lacks `stty size` output \"40 100\\r\\n\"", out)
		}
		if got := c.exitCode(t); got != 0 {
			t.Errorf("exit code %d, want 0", got)
		}
		records, err := readCRILog(c.logPath)
		if err != nil {
			t.Fatal(err)
		}
		var logged strings.Builder
		for _, r := range records {
			logged.WriteString(r.content)
		}
		if !strings.Contains(logged.String(), "40 100") {
			t.Errorf("CRI log %q lacks \"40 100\"", records)
		}
	})

	t.Run("attach resize channel", func(t *testing.T) {
		// Each newline makes the shell print the current size; the resize
		// is applied asynchronously by the client, so poke until it shows.
		c := runningContainer(t, s, []string{"sh", "-c", "while read x; do stty size; done"}, withTerminal, stdinConfig(true))
		resizes := make(chan resize.TerminalSize, 1)
		a := attach(t, s, c, true, false, resizes)
		resizes <- resize.TerminalSize{Width: 123, Height: 45}
		deadline := time.Now().Add(hangGuard)
		for !strings.Contains(a.stdout.String(), "45 123\r\n") {
			if time.Now().After(deadline) {
				t.Fatalf("`stty size` never reported 45 123 after a resize event; output %q", a.stdout.String())
			}
			a.send(t, "\n")
			time.Sleep(100 * time.Millisecond)
		}
		close(resizes)
		// The loop never ends by itself: kill it; the done packet ends
		// the attach.
		c.runc(t, s, "kill", c.id, "KILL")
		a.wait(t)
		if got := c.exitCode(t); got != 137 {
			t.Errorf("exit code %d, want 137 (SIGKILL)", got)
		}
	})

	t.Run("no terminal", func(t *testing.T) {
		c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)
		err := setSize(c, 100, 40)
		if err == nil || !strings.Contains(err.Error(), "container has no terminal") {
			t.Errorf("SetWindowSizeContainer on a container without a terminal: %v, want an error containing %q", err, "container has no terminal")
		}
	})
}
