package monitor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/monitor/monitortest"
)

func TestRun(t *testing.T) {
	runc := monitortest.Runc(t)
	tests := []struct {
		name           string
		opts           monitortest.BundleOptions
		terminal       bool
		code           int
		stdout, stderr string
	}{
		{"pipes", monitortest.BundleOptions{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}}, false, 4, "out\n", "err\n"},
		{"terminal", monitortest.BundleOptions{Args: []string{"sh", "-c", "echo out; echo err >&2"}, Terminal: true}, true, 0, "out\r\nerr\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			logPath := filepath.Join(t.TempDir(), "run.log")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code, err := Run(ctx, RunOptions{
				Runtime: runc, Bundle: monitortest.NewBundle(t, tt.opts), Terminal: tt.terminal,
				LogPath: logPath, Stdout: &stdout, Stderr: &stderr, Logger: testLogger(),
			})
			if err != nil || code != tt.code {
				t.Fatalf("Run = %d, %v; want %d", code, err, tt.code)
			}
			if stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("stdout %q stderr %q; want %q %q", stdout.String(), stderr.String(), tt.stdout, tt.stderr)
			}
			lo, le := parseLog(t, logPath)
			if string(lo) != tt.stdout || string(le) != tt.stderr {
				t.Errorf("log stdout %q stderr %q", lo, le)
			}
		})
	}
}

// TestRunRelativePaths: `gomon run --bundle build/bundle --log-path x.log`
// means paths under the caller's working directory (the README's demo).
func TestRunRelativePaths(t *testing.T) {
	runc := monitortest.Runc(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sh", "-c", "echo relative"}})
	t.Chdir(filepath.Dir(bundle))
	var stdout syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := Run(ctx, RunOptions{
		Runtime: runc, Bundle: filepath.Base(bundle), LogPath: "run.log",
		Stdout: &stdout, Stderr: &stdout, Logger: testLogger(),
	})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v; want 0", code, err)
	}
	if stdout.String() != "relative\n" {
		t.Errorf("stdout %q", stdout.String())
	}
	if lo, _ := parseLog(t, filepath.Join(filepath.Dir(bundle), "run.log")); string(lo) != "relative\n" {
		t.Errorf("log stdout %q", lo)
	}
}

// TestRunInteractive forwards stdin through the attach path, with and
// without a terminal.
func TestRunInteractive(t *testing.T) {
	runc := monitortest.Runc(t)
	tests := []struct {
		name     string
		terminal bool
		input    string
		code     int
		want     string
	}{
		// Without a terminal, the input's EOF closes the shell's stdin.
		{"pipes", false, "echo hi\necho err >&2\n", 0, "hi\n"},
		// With one, EOF is ignored: the shell exits on its own.
		{"terminal", true, "echo hi; exit 4\n", 4, "hi\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = r.Close() }()
			go func() {
				_, _ = w.WriteString(tt.input)
				_ = w.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code, err := Run(ctx, RunOptions{
				Runtime: runc, Bundle: monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sh"}, Terminal: tt.terminal}),
				Terminal: tt.terminal, Stdin: true, Input: r, Stdout: &stdout, Stderr: &stderr, Logger: testLogger(),
			})
			if err != nil || code != tt.code {
				t.Fatalf("Run = %d, %v; want %d (stdout %q)", code, err, tt.code, stdout.String())
			}
			if !strings.Contains(stdout.String(), tt.want) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tt.want)
			}
			if !tt.terminal && stderr.String() != "err\n" {
				t.Errorf("stderr %q", stderr.String())
			}
		})
	}
}

// TestNoFDLeak runs good and failing creates and checks the process holds
// no more fds afterwards.
func TestNoFDLeak(t *testing.T) {
	runc := monitortest.Runc(t)
	good := monitortest.Bundle(t, "echo", "hi")
	bad := monitortest.Bundle(t, "does-not-exist")
	round := func() {
		m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		p := newPaths(t)
		runToExit(t, m, p.request("fd-good", good))
		if _, err := m.CreateContainer(context.Background(), p.request("fd-bad", bad)); err == nil {
			t.Fatal("bad create succeeded")
		}
		tty := p.request("fd-tty", monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"true"}, Terminal: true}))
		tty.Terminal = true
		runToExit(t, m, tty)
		if err := m.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	round() // warm up: the runtime's poller and the like open fds once
	before := countFDs(t)
	round()
	if after := countFDs(t); after != before {
		t.Errorf("fds: %d before, %d after", before, after)
	}
}

func countFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestRunUserTerminal runs with a pty as the user's terminal: it is raw
// during the run and restored after, and its size reaches the container.
func TestRunUserTerminal(t *testing.T) {
	runc := monitortest.Runc(t)
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = master.Close() }()
	if err := master.Resize(console.WinSize{Width: 90, Height: 30}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slave.Close() }()
	before, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ECHO == 0 {
		t.Fatal("fresh pty has no ECHO")
	}
	var stdout syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The container waits for a line typed on the user's terminal, so
	// the test can see the terminal raw while it runs.
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"sh", "-c", "read x; stty size"}, Terminal: true})
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := Run(ctx, RunOptions{
			Runtime: runc, Bundle: bundle, Terminal: true, Stdin: true, Input: slave, Stdout: &stdout, Logger: testLogger(),
		})
		res <- result{code, err}
	}()
	if !waitFor(10*time.Second, func() bool {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&(unix.ECHO|unix.ICANON) == 0
	}) {
		t.Error("user terminal not put in raw mode")
	}
	if _, err := master.Write([]byte("\r")); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.code != 0 {
		t.Fatalf("Run = %d, %v", r.code, r.err)
	}
	if got := stdout.String(); !strings.HasSuffix(got, "30 90\r\n") {
		t.Errorf("container saw size %q, want \"30 90\\r\\n\"", got)
	}
	after, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
		t.Errorf("terminal not restored: lflag %#x→%#x iflag %#x→%#x", before.Lflag, after.Lflag, before.Iflag, after.Iflag)
	}
}

// TestRunOutputClosed: when the reader of Run's output pipe goes away, Run
// kills the container (which would otherwise print for ever), deletes it
// and reports ErrOutputClosed; a terminal's output is handled alike.
func TestRunOutputClosed(t *testing.T) {
	runc := monitortest.Runc(t)
	for _, terminal := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "terminal"}[terminal], func(t *testing.T) {
			bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
				Args: []string{"sh", "-c", "while :; do echo line; done"}, Terminal: terminal,
			})
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = w.Close() }()
			go func() { // read a little, like `head -n 1`, then go away
				buf := make([]byte, 16)
				_, _ = r.Read(buf)
				_ = r.Close()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			root := t.TempDir()
			code, err := Run(ctx, RunOptions{
				Runtime: runc, RuntimeRoot: root, Bundle: bundle, ID: "epipe", Terminal: terminal,
				Stdout: w, Stderr: w, Logger: testLogger(),
			})
			if !errors.Is(err, ErrOutputClosed) || code != 128+int(unix.SIGKILL) {
				t.Fatalf("Run = %d, %v; want 137 and ErrOutputClosed", code, err)
			}
			if ctx.Err() != nil {
				t.Fatal("Run ended only with its context")
			}
			if out, err := exec.Command(runc, "--root", root, "state", "epipe").CombinedOutput(); err == nil {
				t.Errorf("container still known to runc after Run: %s", out)
			}
		})
	}
}
