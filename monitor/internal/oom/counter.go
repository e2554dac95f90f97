package oom

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
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

// maxCounterFile bounds one read; memory.events and memory.oom_control are
// a few dozen bytes.
const maxCounterFile = 4096

// read returns the named fields' values; missing fields are absent from the
// map.
func (c counterFile) read(names ...string) (map[string]uint64, error) {
	buf := make([]byte, maxCounterFile)
	n, err := c.f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", c.f.Name(), err)
	}
	return parseCounters(buf[:n], names...), nil
}

// readOne returns one field, or errNoField.
func (c counterFile) readOne(name string) (uint64, error) {
	m, err := c.read(name)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("read %s field %s: %w", c.f.Name(), name, errNoField)
	}
	return v, nil
}

// parseCounters extracts the named fields from "name value" lines; lines
// that do not parse are skipped.
func parseCounters(data []byte, names ...string) map[string]uint64 {
	out := make(map[string]uint64, len(names))
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, value, ok := bytes.Cut(bytes.TrimSpace(sc.Bytes()), []byte(" "))
		if !ok {
			continue
		}
		for _, want := range names {
			if string(name) != want {
				continue
			}
			if v, err := strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64); err == nil {
				out[want] = v
			}
		}
	}
	return out
}
