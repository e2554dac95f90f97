package monitortest

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/ioloop"
)

// Logger logs to stderr at debug level with GOMON_TEST_LOG=1, else
// discards.
func Logger() *slog.Logger {
	if os.Getenv("GOMON_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// ParseLog returns the stdout and stderr content of the CRI log at path.
func ParseLog(t testing.TB, path string) (stdout, stderr []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	stdout, stderr, err = ioloop.ParseCRILog(f)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return stdout, stderr
}

// SyncBuffer is a bytes.Buffer safe for a read loop and the test.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor polls cond every 20 ms until it holds or d passes, and reports
// whether it held.
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}
