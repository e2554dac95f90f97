package firstcall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
	"github.com/sirupsen/logrus"
)

// hangGuard bounds every single call and wait so that a hanging gomon fails
// the test instead of stalling it. It is not a performance assertion.
const hangGuard = 30 * time.Second

// Defaults of the stress: how many first calls, and how many goroutines
// make them. GOMON_FIRSTCALL_CALLS and GOMON_FIRSTCALL_CONCURRENCY override
// them (fewer calls only to iterate; the bar is 100 000).
const (
	defaultCalls       = 100_000
	defaultConcurrency = 32
)

// clientProcs is the least GOMAXPROCS the client process runs with.
const clientProcs = 8

// maxErrors stops the stress early: a daemon that died makes every later
// call fail at once, and counting those proves nothing more.
const maxErrors = 200

func TestMain(m *testing.M) {
	// CRI-O runs with one P per core, on nodes with many cores, so the
	// client's goroutines (the caller, its connection's reader and sender)
	// run in parallel and are preempted anywhere. On a small test machine
	// give the client as many Ps as such a node, not fewer; the daemon
	// keeps its own default.
	if runtime.GOMAXPROCS(0) < clientProcs {
		runtime.GOMAXPROCS(clientProcs)
	}
	// The daemon detaches from the client that starts it; as its subreaper
	// (harness.Main) we can wait for it and see how it ended.
	os.Exit(harness.Main(m, nil))
}

// TestFirstCallsOnFreshConnections makes at least 100 000 Version calls
// through CRI-O 1.34's conmon-rs client, each on a connection of its own,
// from many goroutines at once, and requires every one to succeed and the
// daemon to be the same live process at the end.
//
// Each such call races its connection's bootstrap answer inside the
// client's capnp library: answered too early, the call fails in the client
// with "call on null client", or goes out addressed to its own question and
// used to panic the daemon's capnp library (go-capnp issue #572).
func TestFirstCallsOnFreshConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		skipOrFail(t, "test needs root")
	}
	calls := envInt(t, "GOMON_FIRSTCALL_CALLS", defaultCalls)
	workers := envInt(t, "GOMON_FIRSTCALL_CONCURRENCY", defaultConcurrency)
	if calls < defaultCalls {
		t.Logf("GOMON_FIRSTCALL_CALLS=%d: fewer calls than the %d this test stands for", calls, defaultCalls)
	}

	runc, err := exec.LookPath("runc")
	if err != nil {
		skipOrFail(t, "runc not found in $PATH")
	}
	logPath := filepath.Join(t.TempDir(), "gomon.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logFile.Close() })
	clientLog := logrus.New()
	clientLog.SetOutput(os.Stderr)
	clientLog.SetLevel(logrus.WarnLevel)
	// The ConmonServerConfig CRI-O 1.34 builds for a pod, logging to a file
	// so that a panic of the daemon is on record.
	cl, err := client.New(&client.ConmonServerConfig{
		ClientLogger:     clientLog,
		ConmonServerPath: gomonBinary(t),
		Runtime:          runc,
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     t.TempDir(),
		LogLevel:         client.LogLevelInfo,
		LogDriver:        client.LogDriverStdout,
		Stdout:           logFile,
		Stderr:           logFile,
		CgroupManager:    client.CgroupManagerCgroupfs,
	})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	pid := int(cl.PID())
	if pid <= 1 || pid == os.Getpid() {
		t.Fatalf("client.PID() = %d, want the daemon's PID", pid)
	}
	d := watch(pid)
	t.Cleanup(func() { d.stop(t, cl) })

	var (
		next, made, failed atomic.Int64
		mu                 sync.Mutex
		byMessage          = map[string]int{}
		wg                 sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(calls) && failed.Load() < maxErrors {
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				v, err := cl.Version(ctx, nil)
				cancel()
				made.Add(1)
				if err == nil && int(v.ProcessID) != pid {
					err = fmt.Errorf("answered by pid %d, want %d", v.ProcessID, pid)
				}
				if err != nil {
					failed.Add(1)
					mu.Lock()
					byMessage[err.Error()]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d first calls on fresh connections from %d goroutines in %v: %d failed",
		made.Load(), workers, time.Since(start).Round(time.Millisecond), failed.Load())

	if dead := d.gone(); dead != "" {
		t.Errorf("the daemon (pid %d) died during the stress: %s", pid, dead)
	}
	if data, err := os.ReadFile(logPath); err != nil {
		t.Errorf("read daemon log: %v", err)
	} else if i := bytes.Index(data, []byte("panic:")); i >= 0 {
		t.Errorf("the daemon panicked:\n%s", head(data[i:], 3000))
	}
	if n := failed.Load(); n > 0 {
		msgs := make([]string, 0, len(byMessage))
		for m := range byMessage {
			msgs = append(msgs, m)
		}
		sort.Slice(msgs, func(i, j int) bool { return byMessage[msgs[i]] > byMessage[msgs[j]] })
		for _, m := range msgs {
			t.Errorf("%d× %s", byMessage[m], m)
		}
		t.Fatalf("%d of %d first calls failed (the stress stops after %d failures)", n, made.Load(), maxErrors)
	}
	if made.Load() != int64(calls) {
		t.Fatalf("made %d calls, want %d", made.Load(), calls)
	}
}

// daemon is the gomon process the client started; we are its subreaper
// (harness.Main), so it is our child and the harness reaps it.
type daemon struct{ *harness.Process }

func watch(pid int) daemon { return daemon{harness.Watch(pid)} }

// gone says why the daemon is no longer running, or "" while it runs.
func (d daemon) gone() string { return d.Gone() }

// stop shuts the daemon down the way CRI-O does (SIGINT through the client)
// and waits for it to go.
func (d daemon) stop(t *testing.T, cl *client.ConmonClient) { t.Helper(); d.StopWith(t, cl.Shutdown) }

// gomonBinary is the gomon binary under test (GOMON_BINARY, or bin/gomon of
// the repository).
func gomonBinary(t *testing.T) string {
	t.Helper()
	p, err := harness.LocateGomon()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func skipOrFail(t *testing.T, reason string) { t.Helper(); harness.SkipOrFail(t, reason) }

// head returns at most the first n bytes of b, as text.
func head(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}
