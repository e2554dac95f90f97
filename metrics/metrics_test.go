package metrics

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/gomon-dev/gomon/internal/contain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	tBytes = &Desc{Name: "gomon.log.bytes", Unit: "By", Kind: Counter, Help: "Bytes.\nWith a \\ newline."}
	tLevel = &Desc{Name: "gomon.process.open_fds", Unit: "{fd}", Kind: Gauge, Help: "Fds."}
	tDur   = &Desc{Name: "gomon.exec.sync.duration", Unit: "s", Kind: Histogram, Help: "Durations.", Bounds: []float64{0.5, 1, 2.5}}
)

// parse parses Prometheus text as node_exporter does.
func parse(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("textfile does not parse: %v\n%s", err, text)
	}
	return fams
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.Label {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestWriteTextParses writes every kind with awkward label values and
// parses it with the Prometheus text parser.
func TestWriteTextParses(t *testing.T) {
	b := NewBatch()
	start := time.Now()
	b.Counter(tBytes, 1<<40+3, start, Label{"k8s.pod.name", `we"ird\pod` + "\n"}, Label{"stream", "stdout"})
	b.Counter(tBytes, 0, start, Label{"k8s.pod.name", "p"}, Label{"stream", "stderr"})
	b.Gauge(tLevel, 12)
	h := NewHist(tDur)
	for _, v := range []float64{0.1, 0.5, 0.7, 2, 9} {
		h.Observe(v)
	}
	b.Histogram(tDur, h, start, Label{"outcome", "timeout"})
	b.Histogram(tDur, NewHist(tDur), start, Label{"outcome", "exit_zero"}) // empty: left out
	var buf bytes.Buffer
	if err := WriteText(&buf, b.Families()); err != nil {
		t.Fatal(err)
	}
	fams := parse(t, buf.Bytes())

	c := fams["gomon_log_bytes_total"]
	if c == nil || c.GetType() != dto.MetricType_COUNTER || len(c.Metric) != 2 {
		t.Fatalf("counter family: %v\n%s", c, buf.String())
	}
	if c.GetHelp() != "Bytes.\nWith a \\ newline." {
		t.Errorf("help %q", c.GetHelp())
	}
	m0 := c.Metric[0]
	if got := m0.GetCounter().GetValue(); got != float64(1<<40+3) {
		t.Errorf("counter value %v", got)
	}
	if l := labelsOf(m0); l["k8s_pod_name"] != `we"ird\pod`+"\n" || l["stream"] != "stdout" {
		t.Errorf("labels %v", l)
	}
	g := fams["gomon_process_open_fds"]
	if g == nil || g.GetType() != dto.MetricType_GAUGE || g.Metric[0].GetGauge().GetValue() != 12 {
		t.Errorf("gauge family: %v", g)
	}
	hf := fams["gomon_exec_sync_duration_seconds"]
	if hf == nil || hf.GetType() != dto.MetricType_HISTOGRAM || len(hf.Metric) != 1 {
		t.Fatalf("histogram family: %v\n%s", hf, buf.String())
	}
	hm := hf.Metric[0].GetHistogram()
	if hm.GetSampleCount() != 5 || math.Abs(hm.GetSampleSum()-12.3) > 1e-9 {
		t.Errorf("histogram count %d sum %v", hm.GetSampleCount(), hm.GetSampleSum())
	}
	want := []uint64{2, 3, 4, 5} // cumulative: <=0.5, <=1, <=2.5, +Inf
	if len(hm.Bucket) != len(want) {
		t.Fatalf("%d buckets, want %d", len(hm.Bucket), len(want))
	}
	for i, bk := range hm.Bucket[:len(tDur.Bounds)] {
		if bk.GetCumulativeCount() != want[i] || bk.GetUpperBound() != tDur.Bounds[i] {
			t.Errorf("bucket %d: le=%v count %d, want le=%v count %d", i, bk.GetUpperBound(), bk.GetCumulativeCount(), tDur.Bounds[i], want[i])
		}
	}
	if inf := hm.Bucket[len(want)-1]; !math.IsInf(inf.GetUpperBound(), +1) || inf.GetCumulativeCount() != 5 {
		t.Errorf("+Inf bucket le=%v count %d", inf.GetUpperBound(), inf.GetCumulativeCount())
	}
	if l := labelsOf(hf.Metric[0]); l["outcome"] != "timeout" {
		t.Errorf("histogram labels %v", l)
	}
}

func TestPromName(t *testing.T) {
	for _, tc := range []struct {
		d    Desc
		want string
	}{
		{Desc{Name: "gomon.log.bytes", Unit: "By", Kind: Counter}, "gomon_log_bytes_total"},
		{Desc{Name: "gomon.log.records", Unit: "{record}", Kind: Counter}, "gomon_log_records_total"},
		{Desc{Name: "gomon.process.memory.rss", Unit: "By", Kind: Gauge}, "gomon_process_memory_rss_bytes"},
		{Desc{Name: "gomon.exec.sync.duration", Unit: "s", Kind: Histogram}, "gomon_exec_sync_duration_seconds"},
	} {
		if got := PromName(&tc.d); got != tc.want {
			t.Errorf("PromName(%s) = %q, want %q", tc.d.Name, got, tc.want)
		}
	}
}

// TestTextfile checks the file's name, its atomic replacement when the
// ID changes, and its removal at Shutdown.
func TestTextfile(t *testing.T) {
	dir := t.TempDir()
	id := "rundir-abc"
	tf := &Textfile{Dir: dir, ID: func() string { return id }}
	b := NewBatch()
	b.Gauge(tLevel, 3)
	if err := tf.Export(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "gomon-rundir-abc.prom")
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	if fams := parse(t, data); fams["gomon_process_open_fds"] == nil {
		t.Fatalf("file lacks the gauge:\n%s", data)
	}
	id = "0b3c5a0e-1f2d-4c3b-9a8e-7d6c5b4a3f21"
	if err := tf.Export(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old file not removed after the ID changed: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "gomon-"+id+".prom" {
		t.Errorf("directory holds %v", entries)
	}
	if err := tf.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Shutdown left %v", entries)
	}
	if got := fileSafe("../x/.y"); strings.ContainsAny(got, "/") || strings.HasPrefix(got, ".") {
		t.Errorf("fileSafe left a path: %q", got)
	}
}

// recordingExporter records exports.
type recordingExporter struct {
	exports  chan *Batch
	shutdown bool
}

func (r *recordingExporter) Export(_ context.Context, b *Batch) error { r.exports <- b; return nil }
func (r *recordingExporter) Shutdown(context.Context) error           { r.shutdown = true; return nil }

// TestReaderIntervalAndShutdown: the reader exports every interval and
// once more at Shutdown, then shuts the exporter down; no goroutine is
// left (TestMain).
func TestReaderIntervalAndShutdown(t *testing.T) {
	rec := &recordingExporter{exports: make(chan *Batch, 100)}
	n := 0
	afters := make(chan struct{}, 100)
	r := StartReader(ReaderConfig{
		Collectors:  []Collector{func(b *Batch) { n++; b.Gauge(tLevel, float64(n)) }},
		Exporters:   []Exporter{rec},
		Interval:    10 * time.Millisecond,
		AfterExport: func() { afters <- struct{}{} },
	})
	<-rec.exports
	<-afters // after the export it follows
	<-rec.exports
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !rec.shutdown {
		t.Error("exporter not shut down")
	}
	var last *Batch
	for len(rec.exports) > 0 {
		last = <-rec.exports
	}
	if last == nil || last.Families()[0].Points[0].Value != float64(n) {
		t.Error("no final export with the last collection at Shutdown")
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestProcessCollector(t *testing.T) {
	b := NewBatch()
	ProcessCollector(func() []Label { return []Label{{"process.pid", "1"}} })(b)
	got := map[string]float64{}
	for _, f := range b.Families() {
		got[f.Desc.Name] = f.Points[0].Value
	}
	if got["gomon.process.memory.rss"] < 1<<20 || got["gomon.process.goroutines"] < 1 || got["gomon.process.open_fds"] < 3 {
		t.Errorf("process metrics %v", got)
	}
	// A recovered panic is counted under its kind.
	func() {
		defer contain.Recover(slog.New(slog.DiscardHandler), contain.Attach, nil)
		panic("injected")
	}()
	b = NewBatch()
	ProcessCollector(func() []Label { return nil })(b)
	found := false
	for _, f := range b.Families() {
		if f.Desc != ProcessPanics {
			continue
		}
		for _, p := range f.Points {
			if len(p.Labels) == 1 && p.Labels[0].Value == "attach" {
				found = p.Value == float64(contain.PanicsOf(contain.Attach)) && p.Value >= 1
			}
		}
	}
	if !found {
		t.Errorf("no gomon.process.panics{kind=attach} >= 1 series")
	}
}

// TestTextfileSweep: another daemon's file that nobody replaced for
// StaleAfter is removed (its daemon was killed); a fresh one, other
// files and our own stay.
func TestTextfileSweep(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, age time.Duration) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := write("gomon-dead-pod.prom", time.Hour)
	fresh := write("gomon-live-pod.prom", time.Second)
	other := write("node.prom", time.Hour)
	tf := &Textfile{Dir: dir, ID: func() string { return "me" }, StaleAfter: 5 * time.Minute}
	b := NewBatch()
	b.Gauge(tLevel, 1)
	if err := tf.Export(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale file of a dead daemon kept: %v", err)
	}
	for _, p := range []string{fresh, other, filepath.Join(dir, "gomon-me.prom")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := tf.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}
