package daemon

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exeMappedKiB sums the Rss of this process's mappings of its own
// executable, read-only ones and writable ones apart.
func exeMappedKiB(t *testing.T) (readOnly, writable uint64) {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var inExe, w bool
	for line := range strings.Lines(string(b)) {
		if r, ok := parseMapsLine([]byte(line)); ok {
			inExe, w = strings.HasSuffix(strings.TrimSpace(line), " "+exe), r.writable
			continue
		}
		v, ok := strings.CutPrefix(line, "Rss:")
		if !ok || !inExe {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if w {
			writable += n
		} else {
			readOnly += n
		}
	}
	return readOnly, writable
}

// written is data in the executable's writable mapping, which a release
// must leave alone.
var written = []string{"before"}

// TestReleaseCodePages: the test binary's own code and read-only data
// are unmapped (most of it: what runs next is mapped again at once), its
// writable data keeps what was written, and the process runs on.
func TestReleaseCodePages(t *testing.T) {
	written[0] = "after" // the data mapping now holds a changed page
	ro0, w0 := exeMappedKiB(t)
	if ro0 < 1024 {
		t.Fatalf("only %d KiB of the test binary's read-only mappings resident before: nothing to see", ro0)
	}
	advised, err := releaseCodePages()
	if err != nil {
		t.Fatal(err)
	}
	ro1, w1 := exeMappedKiB(t)
	t.Logf("advised %d KiB; resident read-only %d -> %d KiB, writable %d -> %d KiB", advised>>10, ro0, ro1, w0, w1)
	if advised>>10 < ro0 {
		t.Errorf("advised %d KiB, less than the %d KiB resident before", advised>>10, ro0)
	}
	if ro1 > ro0/2 {
		t.Errorf("read-only mappings of the executable: %d KiB resident after the release, %d before", ro1, ro0)
	}
	if w1 < w0 {
		t.Errorf("writable mappings shrank from %d to %d KiB: data pages were dropped", w0, w1)
	}
	if written[0] != "after" {
		t.Errorf("written data lost: %q", written[0])
	}
	// The code runs on: a goroutine, a timer and formatting, all through
	// pages faulted in again.
	done := make(chan string)
	go func() { time.Sleep(time.Millisecond); done <- strconv.Itoa(42) }()
	if got := <-done; got != "42" {
		t.Errorf("got %q", got)
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, c := range []struct {
		line string
		ok   bool
		want smapsRange
	}{
		{"00400000-007e6000 r-xp 00000000 fe:00 9979056                            /bin/gomon", true,
			smapsRange{start: 0x400000, end: 0x7e6000, major: 0xfe, inode: 9979056}},
		{"00c3c000-00c9a000 rw-p 0083c000 08:11 42 /bin/gomon (deleted)", true,
			smapsRange{start: 0xc3c000, end: 0xc9a000, writable: true, major: 8, minor: 0x11, inode: 42}},
		{"7ffdd1004000-7ffdd1025000 rw-p 00000000 00:00 0                          [stack]", true,
			smapsRange{start: 0x7ffdd1004000, end: 0x7ffdd1025000, writable: true}},
		{"Size:               3992 kB", false, smapsRange{}},
		{"VmFlags: rd ex mr mw me", false, smapsRange{}},
		{"Anonymous:             0 kB", false, smapsRange{}},
		{"00400000-00400000 r-xp 00000000 fe:00 1 /x", false, smapsRange{}}, // empty range
	} {
		got, ok := parseMapsLine([]byte(c.line))
		if ok != c.ok || got != c.want {
			t.Errorf("parseMapsLine(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}
