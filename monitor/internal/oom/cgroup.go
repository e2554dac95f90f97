package oom

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
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
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		controllers, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if id == "0" && controllers == "" {
			if !haveUnified {
				unified, haveUnified = p, true
			}
			continue
		}
		for c := range strings.SplitSeq(controllers, ",") {
			if c == "memory" {
				return procCgroup{version: v1, path: p}, nil
			}
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

// mount is one cgroup line of /proc/self/mountinfo.
type mount struct {
	root       string // the mount's root within its hierarchy (field 4)
	mountPoint string // where it is mounted (field 5)
	fsType     string
	superOpts  []string
}

// parseMountinfo returns the cgroup and cgroup2 mounts listed in
// /proc/self/mountinfo, in file order. Its lines read
// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts".
func parseMountinfo(r io.Reader) ([]mount, error) {
	var mounts []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		fsType := fields[sep+1]
		if fsType != "cgroup" && fsType != "cgroup2" {
			continue
		}
		mounts = append(mounts, mount{
			root:       unescapeOctal(fields[3]),
			mountPoint: unescapeOctal(fields[4]),
			fsType:     fsType,
			superOpts:  strings.Split(fields[sep+3], ","),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of spaces, tabs,
// newlines and backslashes in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the mount serving cg's hierarchy: a cgroup2 mount for
// v2, a cgroup mount with the "memory" super option for v1. When several
// qualify (bind mounts), the first whose root contains cg.path wins.
func findMount(mounts []mount, cg procCgroup) (mount, error) {
	var candidates []mount
	for _, m := range mounts {
		switch {
		case cg.version == v2 && m.fsType == "cgroup2":
			candidates = append(candidates, m)
		case cg.version == v1 && m.fsType == "cgroup" && slices.Contains(m.superOpts, "memory"):
			candidates = append(candidates, m)
		}
	}
	if len(candidates) == 0 {
		return mount{}, fmt.Errorf("find %s memory mount: %w", cg.version, errNoMount)
	}
	for _, m := range candidates {
		if _, ok := relativeTo(m.root, cg.path); ok {
			return m, nil
		}
	}
	return candidates[0], nil
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
	if !path.IsAbs(p) || slices.Contains(strings.Split(p, "/"), "..") {
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
