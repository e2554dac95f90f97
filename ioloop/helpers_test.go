package ioloop

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fixedNow returns a clock stuck at t.
func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

// testTime has zero nanoseconds, so its CRI timestamp has a fixed length (20).
var testTime = time.Date(2026, 7, 6, 7, 58, 52, 0, time.UTC)

func openTestCRI(t testing.TB, maxSize uint64) (*CRILog, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctr.log")
	c, err := OpenCRILog(path, maxSize)
	if err != nil {
		t.Fatalf("OpenCRILog: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, path
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// chunk is one WriteChunk call.
type chunk struct {
	s Stream
	p string
}

// joinStreams concatenates the chunks of each stream.
func joinStreams(chunks []chunk) (stdout, stderr []byte) {
	for _, c := range chunks {
		if c.s == Stdout {
			stdout = append(stdout, c.p...)
		} else {
			stderr = append(stderr, c.p...)
		}
	}
	return stdout, stderr
}
