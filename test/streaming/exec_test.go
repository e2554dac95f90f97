package interop

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// TestServeExec drives ServeExecContainer URLs with client-go's WebSocket
// executor: output per stream, stdin, terminals with resize, and exit
// codes reported as client-go exit errors.
func TestServeExec(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c := runningContainer(t, s, []string{"sleep", "3600"}, nil, nil)

	cases := []struct {
		name       string
		cmd        []string
		tty        bool
		stdin      io.Reader
		sizes      []remotecommand.TerminalSize
		wantStdout string // exact, unless wantContains
		contains   bool
		wantStderr string
		wantCode   int // 0: no error
	}{
		{name: "stdout and stderr", cmd: []string{"sh", "-c", "echo out; echo err >&2"},
			wantStdout: "out\n", wantStderr: "err\n"},
		{name: "stdin to cat", cmd: []string{"cat"}, stdin: strings.NewReader("hello\nworld\n"),
			wantStdout: "hello\nworld\n"},
		{name: "large stdin", cmd: []string{"sh", "-c", "wc -c"}, stdin: strings.NewReader(strings.Repeat("x", 200000)),
			wantStdout: "200000\n", contains: true},
		{name: "non-zero exit", cmd: []string{"sh", "-c", "echo bye; exit 3"}, wantStdout: "bye\n", wantCode: 3},
		{name: "tty output", cmd: []string{"sh", "-c", "echo tty; exit 0"}, tty: true, wantStdout: "tty\r\n"},
		{name: "tty resize", cmd: []string{"sh", "-c", `while [ "$(stty size 2>/dev/null)" != "40 100" ]; do sleep 0.05; done; echo resized`},
			tty: true, sizes: []remotecommand.TerminalSize{{Width: 100, Height: 40}}, wantStdout: "resized\r\n"},
		{name: "tty stdin and exit code", cmd: []string{"sh"}, tty: true, stdin: strings.NewReader("exit 7\n"),
			wantStdout: "exit 7", contains: true, wantCode: 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := serveExec(t, s, &client.ServeExecContainerConfig{
				ID: c.id, Command: tc.cmd, Tty: tc.tty, Stdin: tc.stdin != nil, Stdout: true, Stderr: !tc.tty,
			})
			stdout, stderr := newSyncBuf(), newSyncBuf()
			opts := remotecommand.StreamOptions{Stdin: tc.stdin, Stdout: stdout, Tty: tc.tty}
			if !tc.tty {
				opts.Stderr = stderr
			}
			if tc.tty {
				q := newSizeQueue(tc.sizes...)
				defer q.stop()
				opts.TerminalSizeQueue = q
			}
			err := runStream(t, url, opts)
			if tc.wantCode == 0 && err != nil {
				t.Fatalf("stream: %v (stdout %q, stderr %q)", err, stdout.String(), stderr.String())
			}
			if tc.wantCode != 0 {
				var ee exec.ExitError
				if !errors.As(err, &ee) || ee.ExitStatus() != tc.wantCode {
					t.Fatalf("stream error = %v (%T), want a client-go exit error with code %d", err, err, tc.wantCode)
				}
			}
			got := stdout.String()
			if (tc.contains && !strings.Contains(got, tc.wantStdout)) || (!tc.contains && got != tc.wantStdout) {
				t.Errorf("stdout = %q, want %q (contains: %v)", got, tc.wantStdout, tc.contains)
			}
			if got := stderr.String(); got != tc.wantStderr {
				t.Errorf("stderr = %q, want %q", got, tc.wantStderr)
			}
		})
	}
}

// TestServeExecUnknownContainer: the RPC itself fails with conmon-rs's
// "child not available".
func TestServeExecUnknownContainer(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	_, err := s.client.ServeExecContainer(t.Context(), &client.ServeExecContainerConfig{
		ID: "no-such-container", Command: []string{"true"}, Stdout: true,
	})
	if err == nil || !strings.Contains(err.Error(), "child not available") {
		t.Fatalf("ServeExecContainer of an unknown container: %v, want child not available", err)
	}
	_, err = s.client.ServeAttachContainer(t.Context(), &client.ServeAttachContainerConfig{ID: "no-such-container", Stdout: true})
	if err == nil || !strings.Contains(err.Error(), "child not available") {
		t.Fatalf("ServeAttachContainer of an unknown container: %v, want child not available", err)
	}
}
