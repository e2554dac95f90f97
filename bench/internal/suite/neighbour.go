package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/oci"
	"github.com/gomon-dev/gomon/bench/internal/report"
	"github.com/gomon-dev/gomon/bench/internal/stats"
)

// The noisy-neighbour scenario: two containers of one gomon pod log to the
// same disk; the noisy one writes 100-byte lines as fast as it can, the
// quiet one a timestamped line every neighbourEvery. Measured: how long the
// quiet one's lines take to appear in its log file, and how fast the log
// files grow, without a limit and with a log rate limit on the noisy one
// (its bundle's io.gomon.log.rate-limit annotation, as a pod annotation
// reaches it through CRI-O).
const (
	neighbourEvery = 10 * time.Millisecond
	neighbourLimit = "1MiB/s"
	// neighbourWarmup lets the noisy container saturate before the quiet
	// one starts.
	neighbourWarmup = 300 * time.Millisecond
	vNoLimit        = "no limit"
	vLimited        = "noisy limited to " + neighbourLimit
)

// NeighbourResult is the noisy-neighbour scenario's samples, by variant
// (vNoLimit, vLimited), one per rep.
type NeighbourResult struct {
	Ticks int
	Every time.Duration
	Limit string
	// The quiet container's write-to-log latency, ms: median, p99 and
	// max of each run's lines.
	P50, P99, Max map[string][]float64
	// NoisyMBps is the noisy container's log growth while the quiet one
	// ran; DiskMBps both logs' growth (what gomon wrote to the log disk).
	NoisyMBps, DiskMBps map[string][]float64
	// Errors are runs where a quiet line was missing or unparsable.
	Errors map[string][]string
}

// neighbour runs the scenario NeighbourReps times per variant, alternating.
func (h *harness) neighbour(ctx context.Context, res *Results) error {
	n := h.cfg.Params.NeighbourTicks
	if n <= 0 || h.cfg.Params.NeighbourReps <= 0 {
		return nil
	}
	r := &NeighbourResult{
		Ticks: n, Every: neighbourEvery, Limit: neighbourLimit,
		P50: map[string][]float64{}, P99: map[string][]float64{}, Max: map[string][]float64{},
		NoisyMBps: map[string][]float64{}, DiskMBps: map[string][]float64{}, Errors: map[string][]string{},
	}
	res.Neighbour = r
	p, err := h.newPod(ctx, h.gomon)
	if err != nil {
		return err
	}
	variants := []string{vNoLimit, vLimited}
	for rep := 0; rep < h.cfg.Params.NeighbourReps; rep++ {
		for _, i := range rotation(len(variants), rep) {
			v := variants[i]
			limit := ""
			if v == vLimited {
				limit = neighbourLimit
			}
			o, err := h.neighbourRun(ctx, p, limit, n)
			if err != nil {
				return fmt.Errorf("%s rep %d: %w", v, rep, err)
			}
			if o.err != nil {
				r.Errors[v] = append(r.Errors[v], o.err.Error())
			}
			if len(o.lat) > 0 {
				s := slices.Clone(o.lat)
				slices.Sort(s)
				r.P50[v] = append(r.P50[v], stats.Quantile(s, 0.5))
				r.P99[v] = append(r.P99[v], stats.Quantile(s, 0.99))
				r.Max[v] = append(r.Max[v], s[len(s)-1])
			}
			r.NoisyMBps[v] = append(r.NoisyMBps[v], o.noisyMBps)
			r.DiskMBps[v] = append(r.DiskMBps[v], o.diskMBps)
			h.log.Info("neighbour run", "variant", v, "lines", len(o.lat), "noisy_MBps", o.noisyMBps,
				"disk_MBps", o.diskMBps, "error", o.err)
		}
	}
	return nil
}

// neighbourOutcome is one run.
type neighbourOutcome struct {
	lat                 []float64 // ms per quiet line
	noisyMBps, diskMBps float64
	err                 error // a quiet line missing or unparsable
}

// neighbourRun runs one noisy and one quiet container in p; limit, if set,
// is the noisy one's io.gomon.log.rate-limit.
func (h *harness) neighbourRun(ctx context.Context, p driver.Pod, limit string, ticks int) (o neighbourOutcome, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	noisy, err := h.newContainer(h.gomon, "/bin/loggen", "-pattern", "lines100", "-bytes", strconv.FormatInt(1<<50, 10))
	if err != nil {
		return o, err
	}
	defer h.dropContainer(noisy)
	if limit != "" {
		if err := oci.Annotate(noisy.Bundle, map[string]string{"io.gomon.log.rate-limit": limit}); err != nil {
			return o, err
		}
	}
	quiet, err := h.newContainer(h.gomon, "/bin/loggen", "-every", neighbourEvery.String(), "-count", strconv.Itoa(ticks))
	if err != nil {
		return o, err
	}
	defer h.dropContainer(quiet)
	for _, c := range []*driver.Container{noisy, quiet} {
		if err := p.Create(ctx, c); err != nil {
			return o, err
		}
		defer func() { err = errors.Join(err, p.Remove(ctx, c)) }()
	}
	if err := h.env.Runc.Start(ctx, noisy.Root, noisy.ID); err != nil {
		return o, err
	}
	time.Sleep(neighbourWarmup)
	tail, err := startTail(quiet.LogPath)
	if err != nil {
		return o, err
	}
	n0, q0 := fileSize(noisy.LogPath), fileSize(quiet.LogPath)
	t0 := time.Now()
	if err := h.env.Runc.Start(ctx, quiet.Root, quiet.ID); err != nil {
		_, _ = tail.stop()
		return o, err
	}
	werr := p.WaitExit(ctx, quiet)
	d := time.Since(t0).Seconds()
	n1, q1 := fileSize(noisy.LogPath), fileSize(quiet.LogPath)
	lat, terr := tail.stop()
	if werr != nil {
		return o, werr
	}
	o.lat, o.err = lat, terr
	if o.err == nil && len(lat) != ticks {
		o.err = fmt.Errorf("saw %d of %d quiet lines", len(lat), ticks)
	}
	o.noisyMBps = float64(n1-n0) / 1e6 / d
	o.diskMBps = float64(n1-n0+q1-q0) / 1e6 / d
	return o, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// tail follows a CRI log with inotify and, for each "tick <n> <unix ns>"
// record, notes how long after its write it appeared in the file.
type tail struct {
	f    *os.File
	ino  int
	quit chan struct{}
	done chan struct{}
	lat  []float64
	err  error
}

func startTail(path string) (*tail, error) {
	ino, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(ino, path, unix.IN_MODIFY); err != nil {
		_ = unix.Close(ino)
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		_ = unix.Close(ino)
		return nil, fmt.Errorf("open quiet log: %w", err)
	}
	t := &tail{f: f, ino: ino, quit: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t, nil
}

// run reads what the file gained at every change, until quit, then once
// more.
func (t *tail) run() {
	defer close(t.done)
	var pending []byte
	buf := make([]byte, 64<<10)
	events := make([]byte, 4096)
	for {
		for {
			n, err := t.f.Read(buf)
			now := time.Now()
			pending = append(pending, buf[:max(n, 0)]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				t.record(string(pending[:i]), now)
				pending = pending[i+1:]
			}
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				t.err = fmt.Errorf("read quiet log: %w", err)
				return
			}
		}
		select {
		case <-t.quit:
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(t.ino), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 50); err != nil && !errors.Is(err, unix.EINTR) {
			t.err = fmt.Errorf("poll inotify: %w", err)
			return
		}
		for {
			if n, _ := unix.Read(t.ino, events); n <= 0 {
				break
			}
		}
	}
}

// record parses one CRI record "<ts> stdout F tick <n> <unix ns>".
func (t *tail) record(line string, seen time.Time) {
	f := strings.Fields(line)
	if len(f) != 6 || f[3] != "tick" {
		if t.err == nil {
			t.err = fmt.Errorf("unexpected quiet log record %q", line)
		}
		return
	}
	ns, err := strconv.ParseInt(f[5], 10, 64)
	if err != nil {
		if t.err == nil {
			t.err = fmt.Errorf("quiet log record %q: %w", line, err)
		}
		return
	}
	t.lat = append(t.lat, float64(seen.UnixNano()-ns)/1e6)
}

// stop ends the tail after a last read and returns the latencies (ms).
func (t *tail) stop() ([]float64, error) {
	close(t.quit)
	<-t.done
	_ = t.f.Close()
	_ = unix.Close(t.ino)
	return t.lat, t.err
}

func (r *Results) neighbourSection() report.Section {
	nb := r.Neighbour
	row := func(name string, v map[string][]float64) []string {
		a, b := med(v[vNoLimit]), med(v[vLimited])
		rs, _ := ratio(b, a)
		return []string{name, num(a), num(b), rs}
	}
	s := report.Section{
		Title:   "6. Noisy neighbour: log rate limit",
		Columns: []string{"measure (median over runs)", vNoLimit, vLimited, "limited/no limit"},
		Rows: [][]string{
			row("quiet container: write-to-log latency p50, ms", nb.P50),
			row("quiet container: write-to-log latency p99, ms", nb.P99),
			row("quiet container: write-to-log latency max, ms", nb.Max),
			row("noisy container's log growth, MB/s", nb.NoisyMBps),
			row("both logs' growth (gomon's log disk writes), MB/s", nb.DiskMBps),
		},
		Notes: []string{
			fmt.Sprintf("One gomon pod, two containers logging to the same disk: the noisy one writes 100-byte lines as fast as it can; "+
				"the quiet one writes a line with its wall-clock time every %s, %d lines per run (after %s of the noisy one alone). "+
				"Latency: from the quiet line's write to the harness reading it from the quiet log file (inotify), so it includes the harness's own wake-up on a busy machine. "+
				"Limited: the noisy container's bundle has the annotation io.gomon.log.rate-limit=%s (drop policy; burst one second). Runs alternate, %d per variant.",
				nb.Every, nb.Ticks, neighbourWarmup, nb.Limit, len(nb.P50[vNoLimit])),
		},
	}
	for v, errs := range nb.Errors {
		s.Notes = append(s.Notes, fmt.Sprintf("%s: %d runs had errors (%s)", v, len(errs), errs[0]))
	}
	if math.IsNaN(med(nb.P50[vLimited])) {
		s.Notes = append(s.Notes, "No latency sample with the limit.")
	}
	return s
}
