package oom

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// version is a cgroup hierarchy version.
type version int

const (
	v1 version = 1
	v2 version = 2
)

// String returns "v1" or "v2" for log lines.
func (v version) String() string { return "v" + strconv.Itoa(int(v)) }

var (
	// errNoMemoryCgroup: /proc/<pid>/cgroup has neither a v1 memory line nor
	// a v2 "0::" line.
	errNoMemoryCgroup = errors.New("no memory cgroup for process")
	// errNoMount: the hierarchy the process belongs to is not mounted here.
	errNoMount = errors.New("cgroup hierarchy not mounted")
	// errOutsideMount: the process's cgroup lies outside the mounted subtree
	// (another cgroup namespace, or a bind mount of a subtree).
	errOutsideMount = errors.New("cgroup outside mounted subtree")
)

// procCgroup is the memory-relevant part of /proc/<pid>/cgroup.
type procCgroup struct {
	version version
	// path is the cgroup path as the kernel printed it: absolute, relative
	// to the reader's cgroup namespace root.
	path string
}

// isRoot reports whether the process sits in the root cgroup of its
// hierarchy, which has no limit and whose counters are host-wide.
func (c procCgroup) isRoot() bool { return c.path == "/" }

// parseProcCgroup picks the memory cgroup out of /proc/<pid>/cgroup.
// Each line is "hierarchy-ID:controller-list:path". A v1 line whose
// controller list contains "memory" wins over the v2 "0::" line, because
// on hybrid hosts the memory controller is bound to v1 and the unified
// hierarchy carries no memory files.
func parseProcCgroup(r io.Reader) (procCgroup, error) {
	var unified string
	haveUnified := false
	sc := newLineScanner(r, bufio.MaxScanTokenSize)
	for sc.Scan() {
		id, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		controllers, p, ok := bytes.Cut(rest, []byte(":"))
		if !ok {
			continue
		}
		if string(id) == "0" && len(controllers) == 0 {
			if !haveUnified {
				unified, haveUnified = string(p), true
			}
			continue
		}
		if listContains(controllers, "memory") {
			return procCgroup{version: v1, path: string(p)}, nil
		}
	}
	if err := sc.Err(); err != nil {
		return procCgroup{}, fmt.Errorf("read cgroup list: %w", err)
	}
	if haveUnified {
		return procCgroup{version: v2, path: unified}, nil
	}
	return procCgroup{}, errNoMemoryCgroup
}

// newLineScanner returns a line scanner whose buffer starts small and
// grows up to maxLine. Watch scans two /proc files per container and
// their lines are short; bufio's default 4 KiB first buffer would be
// garbage on every call.
func newLineScanner(r io.Reader, maxLine int) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 512), maxLine)
	return sc
}

// listContains reports whether the comma-separated list holds elem.
func listContains(list []byte, elem string) bool {
	for len(list) > 0 {
		var item []byte
		item, list, _ = bytes.Cut(list, []byte(","))
		if string(item) == elem {
			return true
		}
	}
	return false
}

// mount is the cgroup mount serving a process's memory hierarchy.
type mount struct {
	root       string // the mount's root within its hierarchy
	mountPoint string // where it is mounted
}

// findMount scans mountinfo, the content of /proc/self/mountinfo, for the
// mount serving cg's hierarchy: a cgroup2 mount for v2, a cgroup mount
// with the "memory" super option for v1. When several qualify (bind
// mounts), the first whose root contains cg.path wins, else the first.
//
// On a busy host the table lists thousands of container mounts, usually
// after the cgroup ones. Lines are split in place and only qualifying
// mounts are copied out of the scanner's buffer, so the cost in garbage
// does not grow with the table; the scan stops at the winning mount.
func findMount(mountinfo io.Reader, cg procCgroup) (mount, error) {
	var first mount
	found := false
	sc := newLineScanner(mountinfo, 1<<20)
	for sc.Scan() {
		line, ok := parseMountinfoLine(sc.Bytes())
		if !ok || !line.serves(cg.version) {
			continue
		}
		m := mount{root: unescapeOctal(line.root), mountPoint: unescapeOctal(line.mountPoint)}
		if _, ok := relativeTo(m.root, cg.path); ok {
			return m, nil
		}
		if !found {
			first, found = m, true
		}
	}
	if err := sc.Err(); err != nil {
		return mount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if !found {
		return mount{}, fmt.Errorf("find %s memory mount: %w", cg.version, errNoMount)
	}
	return first, nil
}

// mountinfoLine holds the fields findMount needs from one line of
// /proc/self/mountinfo, still escaped. They alias the line.
type mountinfoLine struct {
	root, mountPoint, fsType, superOpts []byte
}

// parseMountinfoLine splits a mountinfo line,
// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts",
// at its spaces. The kernel separates fields with exactly one space (an
// empty source makes two in a row) and escapes spaces within them. It
// reports false for a line without the "-" or the three fields after it.
func parseMountinfoLine(s []byte) (mountinfoLine, bool) {
	var l mountinfoLine
	sep := -1 // index of the "-" ending the optional fields
	for i := 0; len(s) > 0; i++ {
		var field []byte
		field, s, _ = bytes.Cut(s, []byte(" "))
		switch {
		case i == 3:
			l.root = field
		case i == 4:
			l.mountPoint = field
		case i >= 6 && sep < 0 && string(field) == "-":
			sep = i
		case sep >= 0 && i == sep+1:
			l.fsType = field
		case sep >= 0 && i == sep+3:
			l.superOpts = field
			return l, true
		}
	}
	return mountinfoLine{}, false
}

// serves reports whether the mount carries the memory controller of a
// hierarchy of version v.
func (l mountinfoLine) serves(v version) bool {
	switch v {
	case v1:
		return string(l.fsType) == "cgroup" && listContains(l.superOpts, "memory")
	case v2:
		return string(l.fsType) == "cgroup2"
	}
	return false
}

// unescapeOctal undoes the kernel's \ooo escaping of spaces, tabs,
// newlines and backslashes in mountinfo paths.
func unescapeOctal(s []byte) string {
	if bytes.IndexByte(s, '\\') < 0 {
		return string(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(string(s[i+1:i+4]), 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupDir returns the directory of cg inside mount m.
func cgroupDir(m mount, cg procCgroup) (string, error) {
	rel, ok := relativeTo(m.root, cg.path)
	if !ok {
		return "", fmt.Errorf("locate cgroup %q under mount root %q: %w", cg.path, m.root, errOutsideMount)
	}
	return path.Join(m.mountPoint, rel), nil
}

// relativeTo returns p relative to root when p is root or below it. A
// path with ".." elements (the kernel prints "/../x" for cgroups outside
// the reader's cgroup namespace) is never below anything.
func relativeTo(root, p string) (string, bool) {
	if !path.IsAbs(p) || hasDotDot(p) {
		return "", false
	}
	root, p = path.Clean(root), path.Clean(p)
	switch {
	case root == "/":
		return strings.TrimPrefix(p, "/"), true
	case p == root:
		return "", true
	case strings.HasPrefix(p, root+"/"):
		return p[len(root)+1:], true
	}
	return "", false
}

// hasDotDot reports whether the slash-separated path p has a ".." element.
func hasDotDot(p string) bool {
	for elem := range strings.SplitSeq(p, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}
