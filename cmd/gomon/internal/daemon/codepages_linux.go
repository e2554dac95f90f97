package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// releaseCodePages drops this process's page-table entries for the
// read-only mappings of its own executable (its code and read-only data)
// with madvise(MADV_DONTNEED), and returns how many bytes of mappings it
// advised. The pages stay in the page cache, shared with every other
// gomon of the node; whatever the daemon runs next is mapped again by its
// first fault (a minor fault, served from the page cache).
//
// Why: the kernel maps file pages around each page a fault touches
// (fault-around, 64 KiB by default), and start-up runs the package
// initialisers spread over the whole binary, so an idle daemon had about
// 7 MiB of its 8.5 MiB binary mapped, counted in its VmRSS, although it
// runs a fraction of it. After a release its VmRSS counts the code it
// runs: about 1.7 MiB for an idle daemon (docs/reliability.md, "Code
// pages"). Private memory is unchanged: these pages were never private.
//
// Only mappings that are not writable and hold no anonymous pages are
// advised: a private read-only mapping of a file has anonymous pages only
// when a debugger wrote breakpoints into it, and dropping those would
// lose them.
func releaseCodePages() (uint64, error) {
	var exe unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return 0, fmt.Errorf("stat own executable: %w", err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, fmt.Errorf("release code pages: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to flush
	var (
		advised  uint64
		cur      smapsRange // the mapping whose fields are being read
		firstErr error
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Bytes()
		// A mapping's header line starts with its address in lowercase
		// hex; its fields ("Rss:", "Anonymous:", ...) with a capital.
		if len(line) > 0 && (line[0] >= '0' && line[0] <= '9' || line[0] >= 'a' && line[0] <= 'f') {
			cur, _ = parseMapsLine(line) // a line that does not parse matches no file
			continue
		}
		// "Anonymous:" comes after the header line of its mapping; the
		// decision is taken there, once per mapping.
		kb, ok := bytes.CutPrefix(line, []byte("Anonymous:"))
		if !ok || !cur.sameFile(exe) || cur.writable {
			continue
		}
		if n, err := strconv.ParseUint(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(kb), []byte("kB")))), 10, 64); err != nil || n != 0 {
			continue
		}
		_, _, e := unix.Syscall(unix.SYS_MADVISE, cur.start, cur.end-cur.start, unix.MADV_DONTNEED)
		if e != 0 {
			if firstErr == nil {
				firstErr = fmt.Errorf("madvise %#x-%#x: %w", cur.start, cur.end, e)
			}
			continue
		}
		advised += uint64(cur.end - cur.start)
	}
	if err := sc.Err(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("read smaps: %w", err)
	}
	return advised, firstErr
}

// smapsRange is a mapping's header line in /proc/<pid>/smaps (as in
// /proc/<pid>/maps): its range, whether it is writable, and its file.
type smapsRange struct {
	start, end   uintptr
	writable     bool
	major, minor uint32
	inode        uint64
}

func (r smapsRange) sameFile(st unix.Stat_t) bool {
	return r.inode != 0 && r.inode == st.Ino &&
		r.major == unix.Major(st.Dev) && r.minor == unix.Minor(st.Dev)
}

// parseMapsLine parses "start-end perms offset major:minor inode [path]";
// ok is false for any other line (an smaps field).
func parseMapsLine(line []byte) (r smapsRange, ok bool) {
	fields := bytes.Fields(line)
	if len(fields) < 5 || len(fields[1]) != 4 {
		return r, false
	}
	lo, hi, ok1 := bytes.Cut(fields[0], []byte("-"))
	maj, mnr, ok2 := bytes.Cut(fields[3], []byte(":"))
	if !ok1 || !ok2 {
		return r, false
	}
	start, err1 := strconv.ParseUint(string(lo), 16, 64)
	end, err2 := strconv.ParseUint(string(hi), 16, 64)
	major, err3 := strconv.ParseUint(string(maj), 16, 32)
	minor, err4 := strconv.ParseUint(string(mnr), 16, 32)
	inode, err5 := strconv.ParseUint(string(fields[4]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || end <= start {
		return r, false
	}
	return smapsRange{
		start: uintptr(start), end: uintptr(end), writable: fields[1][1] == 'w',
		major: uint32(major), minor: uint32(minor), inode: inode,
	}, true
}
