package metrics

import (
	"bytes"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

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
// is left out. The collector reads /proc into a buffer of its own, reused
// at every collection (the Reader's goroutine calls it).
func ProcessCollector(labels func() []Label) Collector {
	var p procReader
	return func(b *Batch) {
		l := b.Labels(labels()) // the points keep them; labels may reuse its slice
		if rss, ok := p.readRSS(); ok {
			b.Gauge(ProcessRSS, float64(rss), l...)
		}
		b.Gauge(ProcessGoroutines, float64(runtime.NumGoroutine()), l...)
		if n, ok := p.countFDs(); ok {
			b.Gauge(ProcessOpenFDs, float64(n), l...)
		}
		for _, k := range contain.Kinds() {
			b.Counter(ProcessPanics, contain.PanicsOf(k), processStart,
				b.Labels(l, Label{Key: "kind", Value: k.String()})...)
		}
	}
}

// procReader reads the process's own /proc files into one reused buffer.
type procReader struct {
	buf []byte
}

// maxProcRead bounds the buffer: /proc/self/status is about 1.5 KiB.
const maxProcRead = 64 << 10

// readRSS reads VmRSS from /proc/self/status, in bytes.
func (p *procReader) readRSS() (uint64, bool) {
	data, ok := p.readFile("/proc/self/status")
	if !ok {
		return 0, false
	}
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		kb, ok := parseUint(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB"))))
		if !ok {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}

// readFile reads the whole of a small file into p.buf.
func (p *procReader) readFile(path string) ([]byte, bool) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer func() { _ = unix.Close(fd) }()
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	n := 0
	for {
		if n == len(p.buf) {
			if len(p.buf) >= maxProcRead {
				return nil, false
			}
			p.buf = append(p.buf, make([]byte, len(p.buf))...)
		}
		m, err := unix.Read(fd, p.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if m == 0 {
			return p.buf[:n], true
		}
		n += m
	}
}

// countFDs counts the entries of /proc/self/fd, less the one reading it,
// from the raw directory entries (no name is copied out).
func (p *procReader) countFDs() (int, bool) {
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer func() { _ = unix.Close(fd) }()
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	count := 0
	if !scanDir(fd, p.buf, func([]byte) bool { count++; return true }) {
		return 0, false
	}
	return count - 1, true
}

// parseUint parses a decimal number without a string conversion.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// Since is a helper for durations in seconds, the unit of gomon's
// duration histograms.
func Since(t time.Time) float64 { return time.Since(t).Seconds() }
