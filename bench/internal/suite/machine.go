package suite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/driver"
)

// Machine describes where and with what a run happened.
type Machine struct {
	Date      time.Time
	NProc     int
	CPU       string
	Kernel    string
	MemTotal  string
	Runc      string
	Conmon    string
	Gomon     string
	Go        string
	LoadStart string
	LoadEnd   string
	Sources   map[string]string // binaries the private copies came from
}

// describeMachine collects the machine description.
func describeMachine(ctx context.Context, env *driver.Env, sources map[string]string) Machine {
	m := Machine{
		Date:      time.Now().UTC(),
		NProc:     runtime.NumCPU(),
		CPU:       cpuModel(),
		MemTotal:  memTotal(),
		Runc:      env.Runc.Version(ctx),
		Conmon:    firstLine(ctx, env.Conmon, "--version"),
		Gomon:     gomonVersion(ctx, env.Gomon),
		Go:        runtime.Version(),
		Sources:   sources,
		LoadStart: loadAvg(),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// memTotal is MemTotal from /proc/meminfo.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// firstLine runs a command and returns the first line of its output.
func firstLine(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	l, _, _ := strings.Cut(string(bytes.TrimSpace(out)), "\n")
	return l
}

// gomonVersion asks gomon for its version JSON.
func gomonVersion(ctx context.Context, gomon string) string {
	out, err := exec.CommandContext(ctx, gomon, "--version-json").Output()
	if err != nil {
		return "unknown"
	}
	var v struct {
		Version string `json:"version"`
		Tag     string `json:"tag"`
		Commit  string `json:"commit"`
	}
	if json.Unmarshal(out, &v) != nil {
		return "unknown"
	}
	return v.Version + " (" + v.Tag + ")"
}
