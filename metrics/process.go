package metrics

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/gomon-dev/gomon/internal/contain"
)

// The daemon's own metrics.
var (
	ProcessRSS = &Desc{Name: "gomon.process.memory.rss", Unit: "By", Kind: Gauge,
		Help: "Resident set size of the gomon process (VmRSS)."}
	ProcessGoroutines = &Desc{Name: "gomon.process.goroutines", Unit: "{goroutine}", Kind: Gauge,
		Help: "Goroutines in the gomon process."}
	ProcessOpenFDs = &Desc{Name: "gomon.process.open_fds", Unit: "{fd}", Kind: Gauge,
		Help: "Open file descriptors of the gomon process."}
	ProcessPanics = &Desc{Name: "gomon.process.panics", Unit: "{panic}", Kind: Counter,
		Help: "Panics recovered in the gomon process, by the kind of work that panicked (it failed alone)."}
)

// processStart is the start of the process's cumulative series.
var processStart = time.Now()

// ProcessCollector returns a Collector of the process's RSS, goroutines,
// open fds and recovered panics (internal/contain), each with labels (which tell one pod's daemon from
// another's in a shared textfile directory). A value that cannot be read
// is left out.
func ProcessCollector(labels func() []Label) Collector {
	return func(b *Batch) {
		l := labels()
		if rss, ok := readRSS(); ok {
			b.Gauge(ProcessRSS, float64(rss), l...)
		}
		b.Gauge(ProcessGoroutines, float64(runtime.NumGoroutine()), l...)
		if n, ok := countFDs(); ok {
			b.Gauge(ProcessOpenFDs, float64(n), l...)
		}
		for _, k := range contain.Kinds() {
			b.Counter(ProcessPanics, contain.PanicsOf(k), processStart,
				append(l[:len(l):len(l)], Label{Key: "kind", Value: k.String()})...)
		}
	}
}

// readRSS reads VmRSS from /proc/self/status, in bytes.
func readRSS() (uint64, bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		kb, err := strconv.ParseUint(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB")))), 10, 64)
		if err != nil {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// countFDs counts the entries of /proc/self/fd, less the one reading it.
func countFDs() (int, bool) {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, false
	}
	defer func() { _ = f.Close() }()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, false
	}
	return len(names) - 1, true
}

// Since is a helper for durations in seconds, the unit of gomon's
// duration histograms.
func Since(t time.Time) float64 { return time.Since(t).Seconds() }
