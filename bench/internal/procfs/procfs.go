// Package procfs reads the few /proc figures the benchmark reports: memory
// from smaps_rollup and status, CPU time from stat, and the process tree.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Memory is one process's memory, in KiB.
type Memory struct {
	RSS  int64 // VmRSS from status
	Anon int64 // RssAnon from status (heap, stacks: what the code allocates)
	PSS  int64 // Pss from smaps_rollup
	USS  int64 // Private_Clean + Private_Dirty from smaps_rollup
}

// Add returns the field-wise sum of m and o.
func (m Memory) Add(o Memory) Memory {
	return Memory{RSS: m.RSS + o.RSS, Anon: m.Anon + o.Anon, PSS: m.PSS + o.PSS, USS: m.USS + o.USS}
}

// ReadMemory reads pid's memory.
func ReadMemory(pid int) (Memory, error) {
	var m Memory
	rollup, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return m, fmt.Errorf("read smaps_rollup: %w", err)
	}
	kv := parseKB(rollup)
	m.PSS = kv["Pss"]
	m.USS = kv["Private_Clean"] + kv["Private_Dirty"]
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return m, fmt.Errorf("read status: %w", err)
	}
	kv = parseKB(status)
	m.RSS, m.Anon = kv["VmRSS"], kv["RssAnon"]
	return m, nil
}

// parseKB parses "Key:   123 kB" lines.
func parseKB(b []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out
}

// Stat is the part of /proc/<pid>/stat the benchmark uses.
type Stat struct {
	PID   int
	Comm  string
	State byte
	PPID  int
	// CPU is utime+stime of the process itself (all its threads, not its
	// children).
	CPU time.Duration
}

// clockTicks is USER_HZ; 100 on every Linux architecture Go supports
// (the kernel exports clock_t in these units regardless of CONFIG_HZ).
const clockTicks = 100

// ReadStat reads /proc/<pid>/stat. It works for zombies, whose CPU times
// stay readable until they are reaped.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, fmt.Errorf("read stat: %w", err)
	}
	return parseStat(b)
}

// parseStat parses a stat line; comm may hold spaces and parentheses.
func parseStat(b []byte) (Stat, error) {
	i := bytes.IndexByte(b, '(')
	j := bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return Stat{}, fmt.Errorf("malformed stat %q", b)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:i])))
	if err != nil {
		return Stat{}, fmt.Errorf("parse pid: %w", err)
	}
	f := strings.Fields(string(b[j+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return Stat{}, fmt.Errorf("short stat %q", b)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("parse ppid: %w", err)
	}
	ut, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("parse utime: %w", err)
	}
	st, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("parse stime: %w", err)
	}
	return Stat{
		PID: pid, Comm: string(b[i+1 : j]), State: f[0][0], PPID: ppid,
		CPU: time.Duration(ut+st) * time.Second / clockTicks,
	}, nil
}

// All returns the stat of every process; processes that vanish while
// being read are skipped.
func All() ([]Stat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var out []Stat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := ReadStat(pid)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// Descendants returns every live process below root in the process tree,
// deepest last.
func Descendants(root int) ([]Stat, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	kids := map[int][]Stat{}
	for _, s := range all {
		kids[s.PPID] = append(kids[s.PPID], s)
	}
	var out []Stat
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range kids[p] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out, nil
}

// CPUTime returns the CPU time pid's threads have run, in nanoseconds
// precision: the sum of the first field of /proc/<pid>/task/*/schedstat.
// Unlike stat's utime+stime (10 ms ticks) it can time a sub-second run. It
// works for zombies; threads that already exited are not counted (a Go
// daemon and conmon keep theirs).
func CPUTime(pid int) (time.Duration, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list threads: %w", err)
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // thread exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			return 0, fmt.Errorf("malformed schedstat %q", b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse schedstat: %w", err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// CPU is a process's CPU time measured two ways.
type CPU struct {
	// Run is the schedstat run time (ns precision); see CPUTime.
	Run time.Duration
	// Ticks is utime+stime from /proc/<pid>/stat (10 ms resolution).
	Ticks time.Duration
}

// Add returns the field-wise sum.
func (c CPU) Add(o CPU) CPU { return CPU{Run: c.Run + o.Run, Ticks: c.Ticks + o.Ticks} }

// Sub returns the field-wise difference.
func (c CPU) Sub(o CPU) CPU { return CPU{Run: c.Run - o.Run, Ticks: c.Ticks - o.Ticks} }

// ReadCPU reads both figures for pid.
func ReadCPU(pid int) (CPU, error) {
	run, err := CPUTime(pid)
	if err != nil {
		return CPU{}, err
	}
	st, err := ReadStat(pid)
	if err != nil {
		return CPU{}, err
	}
	return CPU{Run: run, Ticks: st.CPU}, nil
}
