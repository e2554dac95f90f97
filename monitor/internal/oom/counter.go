package oom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
)

// Counter field names, shared by memory.oom_control (v1) and memory.events (v2).
const (
	// fieldOOMKill counts processes of the cgroup the OOM killer killed.
	// Present since Linux 4.13 in both hierarchies.
	fieldOOMKill = "oom_kill"
	// fieldOOM (v2 only) counts times the cgroup hit its limit and the OOM
	// killer was about to run. It is charged to the cgroup whose limit was
	// hit, which for a pod-level limit is not the container's cgroup, and it
	// grows even when nothing is killed; only logged.
	fieldOOM = "oom"
)

// errNoField: the counter file exists but lacks the wanted field (older
// kernels have no oom_kill line).
var errNoField = errors.New("counter field absent")

// counterFile is an open cgroup file of "name value" lines. Holding the
// descriptor (rather than reopening by path) pins the very cgroup Watch saw:
// a cgroup created later under the same path cannot answer for it. Once the
// cgroup is removed, reads fail with ENODEV.
type counterFile struct {
	f *os.File
}

// counters are the fields of a counter file the watcher uses.
type counters struct {
	oomKill count
	oom     count // memory.events only
}

// count is one field of a counter file; ok is false when the file lacks it.
type count struct {
	n  uint64
	ok bool
}

// maxCounterFile bounds one read; memory.events and memory.oom_control are
// a few dozen bytes.
const maxCounterFile = 4096

// counterBufs holds read buffers for counterFile: every notification and
// every Stop reads a counter, and a buffer per read would be garbage.
var counterBufs = sync.Pool{New: func() any { return new([maxCounterFile]byte) }}

// read returns the file's counters.
func (c counterFile) read() (counters, error) {
	buf := counterBufs.Get().(*[maxCounterFile]byte)
	defer counterBufs.Put(buf)
	n, err := c.f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return counters{}, fmt.Errorf("read %s: %w", c.f.Name(), err)
	}
	return parseCounters(buf[:n]), nil
}

// readOOMKill returns the oom_kill field, or errNoField.
func (c counterFile) readOOMKill() (uint64, error) {
	cs, err := c.read()
	if err != nil {
		return 0, err
	}
	if !cs.oomKill.ok {
		return 0, fmt.Errorf("read %s field %s: %w", c.f.Name(), fieldOOMKill, errNoField)
	}
	return cs.oomKill.n, nil
}

// parseCounters extracts the counters from "name value" lines; lines that
// do not parse are skipped.
func parseCounters(data []byte) counters {
	var cs counters
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		name, value, ok := bytes.Cut(bytes.TrimSpace(line), []byte(" "))
		if !ok {
			continue
		}
		var dst *count
		switch string(name) {
		case fieldOOMKill:
			dst = &cs.oomKill
		case fieldOOM:
			dst = &cs.oom
		default:
			continue
		}
		if n, err := strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64); err == nil {
			*dst = count{n: n, ok: true}
		}
	}
	return cs
}
