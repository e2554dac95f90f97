package interop

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// streamGuard bounds one streaming session: a `runc exec` on the shared
// 2-core machine can take seconds. It only turns a hang into a failure.
const streamGuard = 2 * hangGuard

// ctr is one container created through gomon.
type ctr struct {
	id     string
	bundle string
	pid    uint32
}

var ctrSeq atomic.Uint64

// runningContainer creates a busybox container running args through
// gomon (edit, optional, changes its spec; cfg, optional, its request)
// and starts it with runc.
func runningContainer(t *testing.T, s *gomonServer, args []string, edit func(map[string]any), cfg func(*client.CreateContainerConfig)) *ctr {
	t.Helper()
	runc := runcPath(t)
	c := &ctr{id: fmt.Sprintf("gomon-stream-%d-%d", os.Getpid(), ctrSeq.Add(1))}
	c.bundle = harness.Bundle(t, t.TempDir(), "", edit, args...)
	dir := t.TempDir()
	req := &client.CreateContainerConfig{
		ID:         c.id,
		BundlePath: c.bundle,
		ExitPaths:  []string{filepath.Join(dir, "exit")},
		LogDrivers: []client.ContainerLogDriver{{
			Type: client.LogDriverTypeContainerRuntimeInterface,
			Path: filepath.Join(dir, "ctr.log"),
		}},
	}
	if cfg != nil {
		cfg(req)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	t.Cleanup(func() { _ = exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", c.id).Run() })
	resp, err := s.client.CreateContainer(ctx, req)
	if err != nil {
		t.Fatalf("CreateContainer %v: %v", args, err)
	}
	c.pid = resp.PID
	c.runc(t, s, "start", c.id)
	return c
}

func (c *ctr) runc(t *testing.T, s *gomonServer, args ...string) {
	t.Helper()
	harness.RuncIn(t, s.runtimeRoot, args...)
}

// withTerminal gives the container's process a terminal.
func withTerminal(spec map[string]any) {
	spec["process"].(map[string]any)["terminal"] = true
}

// runStream runs one remote command session against url with client-go's
// WebSocket executor (the kubelet-side client), bounded by streamGuard.
func runStream(t *testing.T, url string, opts remotecommand.StreamOptions) error {
	t.Helper()
	ex, err := remotecommand.NewWebSocketExecutor(&rest.Config{}, http.MethodGet, url)
	if err != nil {
		t.Fatalf("NewWebSocketExecutor: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamGuard)
	defer cancel()
	err = ex.StreamWithContext(ctx, opts)
	if ctx.Err() != nil {
		t.Fatalf("streaming session %s did not end within %v: %v", url, streamGuard, err)
	}
	return err
}

// serveExec asks gomon for an exec session URL.
func serveExec(t *testing.T, s *gomonServer, cfg *client.ServeExecContainerConfig) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ServeExecContainer(ctx, cfg)
	if err != nil {
		t.Fatalf("ServeExecContainer %v: %v", cfg.Command, err)
	}
	checkLoopbackURL(t, res.URL, "exec")
	return res.URL
}

// checkLoopbackURL checks a session URL's shape:
// http://127.0.0.1:<port>/<kind>/<uuid>.
func checkLoopbackURL(t *testing.T, url, kind string) {
	t.Helper()
	rest, ok := strings.CutPrefix(url, "http://127.0.0.1:")
	if !ok {
		t.Fatalf("session URL %q is not on http://127.0.0.1", url)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[1] != kind || len(parts[2]) != 36 || parts[2][14] != '4' {
		t.Fatalf("session URL %q: want http://127.0.0.1:<port>/%s/<uuid v4>", url, kind)
	}
	if _, err := strconv.Atoi(parts[0]); err != nil {
		t.Fatalf("session URL %q: bad port: %v", url, err)
	}
}

// syncBuf is a goroutine-safe output buffer that can wait for content.
type syncBuf struct {
	mu   sync.Mutex
	b    strings.Builder
	wake chan struct{}
}

func newSyncBuf() *syncBuf { return &syncBuf{wake: make(chan struct{}, 1)} }

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.b.Write(p)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits up to hangGuard for want to appear.
func (b *syncBuf) waitFor(want string) bool {
	deadline := time.After(hangGuard)
	for !strings.Contains(b.String(), want) {
		select {
		case <-b.wake:
		case <-deadline:
			return false
		}
	}
	return true
}

// sizeQueue hands out fixed terminal sizes, then blocks until closed.
type sizeQueue struct {
	sizes chan remotecommand.TerminalSize
	done  chan struct{}
}

func newSizeQueue(sizes ...remotecommand.TerminalSize) *sizeQueue {
	q := &sizeQueue{sizes: make(chan remotecommand.TerminalSize, len(sizes)), done: make(chan struct{})}
	for _, s := range sizes {
		q.sizes <- s
	}
	return q
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case s := <-q.sizes:
		return &s
	case <-q.done:
		return nil
	}
}

func (q *sizeQueue) stop() { close(q.done) }

// dialInNetNS connects to 127.0.0.1:port inside the network namespace at
// nsPath from a goroutine locked to a thread that enters the namespace;
// the thread is never returned to the scheduler (the goroutine exits
// locked), so no test code runs in the wrong namespace.
func dialInNetNS(nsPath string, port int) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer func() { _ = f.Close() }()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns: %w", err)}
			return
		}
		c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// waitListening polls until something accepts on 127.0.0.1:port in the
// namespace, up to hangGuard.
func waitListening(t *testing.T, nsPath string, port int) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		c, err := dialInNetNS(nsPath, port)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port %d in %s after %v: %v", port, nsPath, hangGuard, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echoOnce writes msg on c and reads the same number of bytes back.
func echoOnce(c net.Conn, msg string) (string, error) {
	if err := c.SetDeadline(time.Now().Add(hangGuard)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return string(buf), fmt.Errorf("read: %w", err)
	}
	return string(buf), nil
}

// httpStatus does a plain (non-upgrade) request and returns the status.
func httpStatus(t *testing.T, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: hangGuard}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}
