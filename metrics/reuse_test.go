package metrics

import (
	"bufio"
	"bytes"
	"io"
	"reflect"
	"testing"
	"time"
)

// collection is a collector as the monitor's: per-point labels from
// b.Labels, counters, a gauge and histograms, with the series present
// depending on round (a family missing in one collection, new in a later
// one, and more points in another).
func collection(round int, h *Hist) Collector {
	base := []Label{{"k8s.pod.name", "p"}, {"container.id", "c"}}
	start := time.Unix(1700000000, 0)
	names := []string{"a", "b", "c", "d", "e", "f"}
	empty := NewHist(tDur)
	return func(b *Batch) {
		if round != 1 {
			b.Histogram(tDur, h, start, b.Labels(base, Label{"outcome", "exit_zero"})...)
		}
		for i := range 2 + round {
			b.Counter(tBytes, uint64(100*i+round), start, b.Labels(base, Label{"stream", "stdout"}, Label{"n", names[i]})...)
		}
		b.Gauge(tLevel, float64(round), b.Labels(base)...)
		b.Histogram(tDur, empty, start, b.Labels(base, Label{"outcome", "timeout"})...) // empty: left out
	}
}

// A batch reset and collected into again holds exactly what a new batch
// collected the same way holds: the same families in the same order, the
// same points, labels and buckets, whatever the previous collection held.
func TestBatchReuse(t *testing.T) {
	h := NewHist(tDur)
	h.Observe(0.7)
	reused := NewBatch()
	for round := range 4 {
		fresh := NewBatch()
		collection(round, h)(fresh)
		reused.reset()
		collection(round, h)(reused)
		if !reflect.DeepEqual(reused.Families(), fresh.Families()) {
			t.Fatalf("round %d: reused batch\n%+v\nnew batch\n%+v", round, reused.Families(), fresh.Families())
		}
		var a, b bytes.Buffer
		if err := WriteText(&a, reused.Families()); err != nil {
			t.Fatal(err)
		}
		if err := WriteText(&b, fresh.Families()); err != nil {
			t.Fatal(err)
		}
		if a.String() != b.String() {
			t.Fatalf("round %d: text differs:\n%s\n---\n%s", round, a.String(), b.String())
		}
		h.Observe(float64(round))
	}
}

// Once the reader's batch has held a collection, collecting the same
// series again allocates nothing, and neither does writing them as text
// into a reused buffer beyond each family's Prometheus name.
func TestCollectReusesMemory(t *testing.T) {
	h := NewHist(tDur)
	h.Observe(0.7)
	c := collection(2, h)
	b := NewBatch()
	c(b)
	if n := testing.AllocsPerRun(20, func() {
		b.reset()
		c(b)
	}); n != 0 {
		t.Errorf("a collection into a reused batch allocates %v times, want 0", n)
	}
	bw := bufio.NewWriter(io.Discard)
	if n := testing.AllocsPerRun(20, func() {
		bw.Reset(io.Discard)
		writeText(bw, b.Families())
		_ = bw.Flush()
	}); n > float64(2*len(b.Families())) {
		t.Errorf("writing %d families as text allocates %v times, want at most 2 per family (its name)", len(b.Families()), n)
	}
}
