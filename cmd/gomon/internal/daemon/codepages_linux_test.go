package daemon

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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

// probe is 256 KiB of read-only data in the test binary that only this
// test reads: its middle page is mapped only after the test reads it, and
// no fault elsewhere maps it (fault-around maps the aligned 64 KiB around
// a fault).
const (
	probe16   = "0123456789abcdef"
	probe256  = probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16 + probe16
	probe4K   = probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256 + probe256
	probe64K  = probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K + probe4K
	probeData = probe64K + probe64K + probe64K + probe64K
)

// probeString is the probe as a variable (a read of the constant would be
// made by the compiler).
var probeString = probeData

// probeAt reads the probe's byte at offset 128 KiB and returns its address.
func probeAt() (uintptr, byte) {
	const mid = 128 << 10
	return uintptr(unsafe.Pointer(unsafe.StringData(probeString))) + mid, probeString[mid]
}

// pageMapped reports whether the page holding addr is in this process's
// page table (bit 63 of its /proc/self/pagemap entry).
func pageMapped(t *testing.T, fd int, addr uintptr) bool {
	t.Helper()
	var e [8]byte
	if _, err := unix.Pread(fd, e[:], int64(addr/uintptr(os.Getpagesize())*8)); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(e[:])>>63 == 1
}

// TestReleaseCodePages: the test binary's read-only data is unmapped (a
// page nothing reads is no longer mapped), its writable data keeps what
// was written, and the process runs on.
func TestReleaseCodePages(t *testing.T) {
	fd, err := unix.Open("/proc/self/pagemap", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Close(fd) }()
	addr, b := probeAt()
	if b != '0' || !pageMapped(t, fd, addr) {
		t.Fatal("the probe's page is not mapped after it was read: nothing to see")
	}
	written[0] = "after" // the data mapping now holds a changed page
	ro0, w0 := exeMappedKiB(t)

	advised, err := releaseCodePages()
	if err != nil {
		t.Fatal(err)
	}
	if pageMapped(t, fd, addr) {
		t.Error("the probe's page is still mapped after the release")
	}
	_, w1 := exeMappedKiB(t)
	t.Logf("advised %d KiB (%d KiB of it resident before); writable %d -> %d KiB", advised>>10, ro0, w0, w1)
	if advised>>10 < ro0 {
		t.Errorf("advised %d KiB, less than the %d KiB resident before", advised>>10, ro0)
	}
	if w1 < w0 {
		t.Errorf("writable mappings shrank from %d to %d KiB: data pages were dropped", w0, w1)
	}
	if written[0] != "after" {
		t.Errorf("written data lost: %q", written[0])
	}
	// The data reads and the code runs on, through pages faulted in again.
	if _, b := probeAt(); b != '0' || !pageMapped(t, fd, addr) {
		t.Errorf("the probe read %q, or its page was not mapped again", b)
	}
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
