package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// newLimitedMonitor returns a Monitor on real runc with lim as the node's
// log rate limit, recording its spans in memory.
func newLimitedMonitor(t *testing.T, lim ioloop.RateLimit) (*Monitor, *exporter.Tracing) {
	t.Helper()
	runc := monitortest.Runc(t)
	tr, err := exporter.Setup(context.Background(), exporter.Config{Mode: exporter.ModeTree})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger(),
		LogRateLimit: lim, TracerProvider: tr.TracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = tr.Shutdown(ctx)
	})
	return m, tr
}

// numberedLines returns size bytes of 100-byte lines, each starting with
// its number, so every byte's position in the stream is known.
func numberedLines(size int) []byte {
	b := make([]byte, 0, size)
	for i := 0; len(b) < size; i++ {
		b = fmt.Appendf(b, "%010d %s\n", i, strings.Repeat("x", 88))
	}
	return b[:size]
}

// countingWriter counts what an attach-like tee writer got.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

var criMarker = regexp.MustCompile(`^gomon: (\d+) bytes dropped by the log rate limit$`)

// limitedLog is what a rate-limited container's CRI log holds for stdout.
type limitedLog struct {
	logged   uint64 // the container's bytes in the log
	marked   uint64 // bytes the markers report dropped
	markers  int
	first    time.Time // the first and last records' timestamps
	last     time.Time
	segments int // runs of logged bytes between gaps
}

// checkLimitedLog walks the CRI log at path against data, the container's
// whole stdout: every logged byte must be data's byte at its position, and
// every gap must be marked with its exact size, so the log is data with
// marked holes. An empty F record right before a marker is the line break
// gomon adds when a gap starts mid-line (data has no empty lines).
func checkLimitedLog(t *testing.T, path string, data []byte) limitedLog {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	var l limitedLog
	pos := 0
	gap := true
	for i, r := range recs {
		f := strings.SplitN(r, " ", 4)
		if len(f) != 4 || f[1] != "stdout" {
			t.Fatalf("record %d: %q", i, r)
		}
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if l.first.IsZero() {
			l.first = ts
		}
		l.last = ts
		if m := criMarker.FindStringSubmatch(f[3]); m != nil && f[2] == "F" {
			n, _ := strconv.Atoi(m[1])
			l.marked += uint64(n)
			l.markers++
			pos += n
			gap = true
			continue
		}
		if f[2] == "F" && f[3] == "" && i+1 < len(recs) && strings.Contains(recs[i+1], " gomon: ") {
			continue // the line break before a marker
		}
		content := f[3]
		if f[2] == "F" {
			content += "\n"
		}
		if pos+len(content) > len(data) || string(data[pos:pos+len(content)]) != content {
			t.Fatalf("record %d at stream offset %d does not match the container's output (an unmarked gap?): %.60q",
				i, pos, content)
		}
		if gap {
			l.segments++
			gap = false
		}
		pos += len(content)
		l.logged += uint64(len(content))
	}
	if pos != len(data) {
		t.Fatalf("the log with its gaps covers %d bytes of %d: the end is missing and unmarked", pos, len(data))
	}
	return l
}

// readLoopStats sums an int attribute of the container's read_loop spans.
func readLoopStats(t *testing.T, tr *exporter.Tracing, id, key string) (sum int64, events []string) {
	t.Helper()
	for _, s := range tr.Spans() {
		if s.Name() != "read_loop" || !hasAttr(s.Attributes(), "container_id", id) {
			continue
		}
		for _, kv := range s.Attributes() {
			if string(kv.Key) == key {
				sum += kv.Value.AsInt64()
			}
		}
		for _, e := range s.Events() {
			events = append(events, e.Name)
		}
	}
	return sum, events
}

func hasAttr(kvs []attribute.KeyValue, key, val string) bool {
	for _, kv := range kvs {
		if string(kv.Key) == key && kv.Value.AsString() == val {
			return true
		}
	}
	return false
}

// runTimed creates, starts and waits for a container, returning the time
// from Start to the end of its log (Wait returns after the drain).
func runTimed(t *testing.T, m *Monitor, req CreateRequest) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m.Start(ctx, req.ID); err != nil {
		t.Fatal(err)
	}
	st, err := m.Wait(ctx, req.ID)
	d := time.Since(start)
	if err != nil || st.Code != 0 {
		t.Fatalf("wait: %+v %v", st, err)
	}
	if err := m.Delete(ctx, req.ID); err != nil {
		t.Fatal(err)
	}
	return d
}

// catBundle makes a bundle whose container cats data, with annotations.
func catBundle(t *testing.T, data []byte, ann map[string]string) string {
	b := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"cat", "/data"}, Annotations: ann})
	if err := os.WriteFile(filepath.Join(b, "rootfs/data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLogRateLimitDrop: a container writing 100 MB under 1 MiB/s with a
// 4 MiB burst (the node default), as fast as it can (cat) and in ten 10
// MiB bursts 300 ms apart (so the limit refills between them and the log
// has many gaps). The log holds about burst + limit x duration, every gap
// is marked with its exact size, the counters add up to exactly what the
// container wrote, the attach-like tee got everything, and the read_loop
// span tells when dropping started and stopped.
func TestLogRateLimitDrop(t *testing.T) {
	const rate, burst = 1 << 20, 4 << 20
	m, tr := newLimitedMonitor(t, ioloop.RateLimit{Rate: rate, Burst: burst})
	data := numberedLines(100 << 20)
	paced := `i=0; while [ $i -lt 10 ]; do [ $i -gt 0 ] && sleep 0.3; ` +
		`dd if=/data bs=1048576 skip=$((i*10)) count=10 2>/dev/null; i=$((i+1)); done`
	for _, tt := range []struct {
		name        string
		args        []string
		minSegments int
	}{
		{name: "flood", args: []string{"cat", "/data"}, minSegments: 1},
		{name: "paced", args: []string{"sh", "-c", paced}, minSegments: 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := monitortest.NewBundle(t, monitortest.BundleOptions{Args: tt.args})
			if err := os.WriteFile(filepath.Join(b, "rootfs/data"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			p := newPaths(t)
			id := "drop-" + tt.name
			req := p.request(id, b)
			tee := &countingWriter{}
			req.Stdout = tee
			d := runTimed(t, m, req)

			l := checkLimitedLog(t, p.log, data)
			dropped, events := readLoopStats(t, tr, id, "rate_limited_bytes")
			read, _ := readLoopStats(t, tr, id, "bytes")
			gaps, _ := readLoopStats(t, tr, id, "rate_limit_gaps")
			t.Logf("%v (log %v): logged %d bytes in %d segments, %d markers for %d bytes", d, l.last.Sub(l.first),
				l.logged, l.segments, l.markers, l.marked)
			if read != int64(len(data)) || int64(l.logged)+dropped != read || int64(l.marked) != dropped || int64(l.markers) != gaps {
				t.Fatalf("read %d, logged %d + dropped %d (markers report %d in %d, stats %d gaps); want %d",
					read, l.logged, dropped, l.marked, l.markers, gaps, len(data))
			}
			if tee.n.Load() != int64(len(data)) {
				t.Fatalf("the tee writer got %d bytes, want all %d", tee.n.Load(), len(data))
			}
			// The duration is the log's own, from its first record to
			// its last (the marker of the gap at the end, written at
			// EOF): Start to Wait also counts the runtime's start and
			// the drain, which a loaded machine stretches.
			span := l.last.Sub(l.first)
			want := float64(burst) + rate*span.Seconds()
			if got := float64(l.logged); got > want*1.1 || got < want*0.9 {
				t.Fatalf("log holds %d bytes, want burst + rate x %v = %.0f ± 10%%", l.logged, span, want)
			}
			if l.segments < tt.minSegments || l.markers == 0 {
				t.Fatalf("%d segments, %d markers: want at least %d segments", l.segments, l.markers, tt.minSegments)
			}
			if strings.Join(events, ",") != "log_rate_limit.dropping,log_rate_limit.resumed" {
				t.Fatalf("span events %v, want one episode", events)
			}
		})
	}
}

// TestLogRateLimitBlock: under the block policy nothing is dropped and the
// container's output reaches the log no faster than the limit allows: 4
// MiB at 1 MiB/s with a 1 MiB burst takes at least 3 s (90 % of it is
// asserted: a lower bound, the enforcement, not a speed).
func TestLogRateLimitBlock(t *testing.T) {
	const rate, burst = 1 << 20, 1 << 20
	m, tr := newLimitedMonitor(t, ioloop.RateLimit{Rate: rate, Burst: burst, Policy: ioloop.RateBlock})
	data := numberedLines(4 << 20)
	p := newPaths(t)
	req := p.request("blocked", catBundle(t, data, nil))
	d := runTimed(t, m, req)
	l := checkLimitedLog(t, p.log, data)
	dropped, _ := readLoopStats(t, tr, "blocked", "rate_limited_bytes")
	waited, _ := readLoopStats(t, tr, "blocked", "rate_limit_wait_ms")
	minimum := time.Duration(float64(len(data)-burst) / rate * float64(time.Second))
	t.Logf("%v (log from %v to %v), waited %d ms", d, l.first.Format(time.StampMicro), l.last.Format(time.StampMicro), waited)
	if l.logged != uint64(len(data)) || l.markers != 0 || dropped != 0 {
		t.Fatalf("logged %d of %d, %d markers, dropped %d: the block policy drops nothing", l.logged, len(data), l.markers, dropped)
	}
	if span := l.last.Sub(l.first); span < minimum*9/10 || waited == 0 {
		t.Fatalf("the log took %v for %d bytes (waited %d ms), want at least %v at %d B/s", span, len(data), waited, minimum, rate)
	}
}

// TestLogRateLimitAnnotations: a container's bundle annotations override
// the node default (here 1 KiB/s with a 64 KiB burst, dropping): "off"
// lifts it, a bad value keeps it (the container still runs), and a limit
// with its own burst and policy replaces it.
func TestLogRateLimitAnnotations(t *testing.T) {
	m, tr := newLimitedMonitor(t, ioloop.RateLimit{Rate: ioloop.MinRate, Burst: 64 << 10})
	data := numberedLines(1536 << 10)
	tests := []struct {
		name        string
		ann         map[string]string
		wantDropped bool
		minDuration time.Duration
	}{
		{name: "node-default", wantDropped: true},
		{name: "off", ann: map[string]string{"io.gomon.log.rate-limit": "off"}},
		{name: "typo", ann: map[string]string{"io.gomon.log.rate-limit": "lots"}, wantDropped: true},
		{name: "block", ann: map[string]string{"io.gomon.log.rate-limit": "256KiB/s",
			"io.gomon.log.rate-burst": "1MiB", "io.gomon.log.rate-policy": "block"},
			minDuration: 2 * time.Second * 9 / 10}, // (1.5 MiB - 1 MiB) / 256 KiB/s
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPaths(t)
			req := p.request("ann-"+tt.name, catBundle(t, data, tt.ann))
			d := runTimed(t, m, req)
			l := checkLimitedLog(t, p.log, data)
			dropped, _ := readLoopStats(t, tr, req.ID, "rate_limited_bytes")
			t.Logf("%v: logged %d, dropped %d", d, l.logged, dropped)
			if (dropped > 0) != tt.wantDropped || int64(l.logged)+dropped != int64(len(data)) {
				t.Fatalf("logged %d, dropped %d of %d; want dropped: %v", l.logged, dropped, len(data), tt.wantDropped)
			}
			if tt.wantDropped && l.logged > 512<<10 {
				t.Fatalf("logged %d bytes under the node's 1 KiB/s with a 64 KiB burst", l.logged)
			}
			if span := l.last.Sub(l.first); span < tt.minDuration {
				t.Fatalf("log written in %v, want at least %v under the annotation's block policy", span, tt.minDuration)
			}
		})
	}
}

// TestLogRateLimitExecNotLimited: an exec session's output is never rate
// limited, whatever the container's limit (here 1 KiB/s, 1 KiB burst).
func TestLogRateLimitExecNotLimited(t *testing.T) {
	m, _ := newLimitedMonitor(t, ioloop.RateLimit{Rate: ioloop.MinRate, Burst: 1024})
	p := newPaths(t)
	req := p.request("exec-unlimited", monitortest.Bundle(t, "sleep", "30"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, req.ID); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Delete(ctx, req.ID) }()
	res, err := m.ExecSync(ctx, ExecSyncRequest{ID: req.ID, Command: []string{"head", "-c", "1048576", "/dev/zero"},
		TimeoutSec: 30, Cgroup: Cgroupfs})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", res.ExitCode, err)
	}
	if !bytes.Equal(res.Stdout, make([]byte, 1<<20)) {
		t.Fatalf("exec output %d bytes, want 1 MiB of zeros", len(res.Stdout))
	}
}

// TestLogRateLimitConfigValidated: an embedder's node default out of
// bounds is refused by New, not discovered at the first create.
func TestLogRateLimitConfigValidated(t *testing.T) {
	for _, lim := range []ioloop.RateLimit{{Rate: 10}, {Rate: 1 << 20, Policy: 9}} {
		if _, err := New(Config{Runtime: "runc", LogRateLimit: lim}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("New with %+v: %v, want ErrInvalidArgument", lim, err)
		}
	}
}
