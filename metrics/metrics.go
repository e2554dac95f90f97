// Package metrics is gomon's small metrics model: the instruments the
// engine records into (atomic counters it already keeps, Histogram), the
// Batch a collection fills, and the outputs that do not need the OTel
// SDK: the Prometheus text format (WriteText) for node_exporter's
// textfile collector (Textfile) and the Reader that collects and exports
// on an interval. The OTLP output lives in package exporter.
//
// Collection is pull-based: nothing is aggregated when metrics are off,
// and when they are on the log path only bumps atomic counters
// (ioloop.Counters); a Reader walks the monitor's containers once per
// interval. Names follow the OpenTelemetry conventions with the prefix
// "gomon."; WriteText derives the Prometheus names (README.md, "Metrics").
//
// This package imports no other gomon package except internal/atomicfile,
// so the engine (monitor, rpc) and the outputs (exporter, the daemon) can
// all depend on it.
package metrics

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Kind is what a metric's points are.
type Kind uint8

// The kinds.
const (
	// Counter: a cumulative monotonic sum (an OTLP Sum, a Prometheus
	// counter).
	Counter Kind = iota
	// Gauge: a value read at collection time.
	Gauge
	// Histogram: a cumulative explicit-bucket histogram.
	Histogram
)

// Desc describes one metric. Descs are package-level values; a Batch
// groups points by their Desc's address.
type Desc struct {
	Name string // OTel name, e.g. "gomon.log.bytes"
	Unit string // UCUM, e.g. "By", "s", "{record}"
	Help string
	Kind Kind
	// Bounds are a Histogram's explicit upper bucket bounds, ascending.
	Bounds []float64
}

// Label is one attribute of a point.
type Label struct{ Key, Value string }

// HistogramData is a histogram's state: Counts has len(Bounds)+1 buckets,
// the last one above the largest bound.
type HistogramData struct {
	Counts []uint64
	Count  uint64
	Sum    float64
}

// Point is one series' value at collection time.
type Point struct {
	Labels []Label
	// Value is a Counter's or Gauge's value.
	Value float64
	// Hist is a Histogram's state.
	Hist HistogramData
	// Start is when a cumulative series began (Counter, Histogram).
	Start time.Time
}

// Family is one metric's points.
type Family struct {
	Desc   *Desc
	Points []Point
}

// Batch collects the points of one collection, grouped by metric in the
// order metrics were first added. Not safe for concurrent use.
//
// A Reader collects into one Batch again and again (reset): the points,
// label and bucket slices of the last collection are reused, so an idle
// daemon's periodic collection allocates next to nothing. Collectors take
// the labels of a point from Labels, which carves them out of the batch's
// own storage.
type Batch struct {
	Time     time.Time
	families []Family
	// spare are the families of the collection before reset, kept for
	// their Points slices.
	spare []Family
	// labels and counts are the storage Labels and Histogram carve
	// points' slices from; reset empties them for reuse.
	labels []Label
	counts []uint64
}

// NewBatch returns an empty batch stamped now.
func NewBatch() *Batch {
	return &Batch{Time: time.Now()}
}

// reset empties b for a new collection stamped now, keeping its memory.
// The slices of the points b held become invalid.
func (b *Batch) reset() {
	b.Time = time.Now()
	b.families, b.spare = b.spare[:0], b.families
	clear(b.families[:cap(b.families)]) // no stale references in the unused part
	b.labels = b.labels[:0]
	b.counts = b.counts[:0]
}

func (b *Batch) add(d *Desc, p Point) {
	// Points of one metric come in runs: the last family is checked
	// first, then the others (a batch holds a dozen or so metrics).
	i := len(b.families) - 1
	if i < 0 || b.families[i].Desc != d {
		i = slices.IndexFunc(b.families, func(f Family) bool { return f.Desc == d })
		if i < 0 {
			i = len(b.families)
			b.families = append(b.families, Family{Desc: d, Points: b.sparePoints(d)})
		}
	}
	b.families[i].Points = append(b.families[i].Points, p)
}

// sparePoints returns the emptied Points slice d had before reset, if any.
func (b *Batch) sparePoints(d *Desc) []Point {
	for j := range b.spare {
		if b.spare[j].Desc == d {
			pts := b.spare[j].Points[:0]
			b.spare[j] = Family{}
			clear(pts[:cap(pts)])
			return pts
		}
	}
	return nil
}

// Labels returns base followed by more, in a slice carved from b's storage
// (valid as long as b's points are): the labels of one point, built
// without an allocation of their own.
func (b *Batch) Labels(base []Label, more ...Label) []Label {
	l := carve(&b.labels, len(base)+len(more))
	copy(l[copy(l, base):], more)
	return l
}

// carve takes n elements from the spare capacity of *store and returns
// them as a slice of its own capacity. When *store has too few, it gets a
// new chunk: slices carved before keep referring to the old one.
func carve[T any](store *[]T, n int) []T {
	if cap(*store)-len(*store) < n {
		*store = make([]T, 0, max(2*cap(*store), n, 64))
	}
	at := len(*store)
	*store = (*store)[:at+n]
	return (*store)[at : at+n : at+n]
}

// Counter adds a counter's cumulative value since start.
func (b *Batch) Counter(d *Desc, v uint64, start time.Time, labels ...Label) {
	b.add(d, Point{Labels: labels, Value: float64(v), Start: start})
}

// Gauge adds a gauge's value.
func (b *Batch) Gauge(d *Desc, v float64, labels ...Label) {
	b.add(d, Point{Labels: labels, Value: v})
}

// Histogram adds a histogram's state since start; an empty one is
// skipped.
func (b *Batch) Histogram(d *Desc, h *Hist, start time.Time, labels ...Label) {
	data := h.snapshotInto(carve(&b.counts, len(h.counts)))
	if data.Count == 0 {
		b.counts = b.counts[:len(b.counts)-len(data.Counts)] // give the slots back
		return
	}
	b.add(d, Point{Labels: labels, Hist: data, Start: start})
}

// Families returns the collected metrics.
func (b *Batch) Families() []Family { return b.families }

// Hist is a histogram instrument with its Desc's bounds. Observations
// are rare (an exec, a create): a mutex is enough. The zero value is not
// usable; see NewHist.
type Hist struct {
	bounds []float64
	mu     sync.Mutex
	counts []uint64 // guarded by mu
	count  uint64   // guarded by mu
	sum    float64  // guarded by mu
}

// NewHist returns an empty histogram with d's bounds.
func NewHist(d *Desc) *Hist {
	return &Hist{bounds: d.Bounds, counts: make([]uint64, len(d.Bounds)+1)}
}

// State returns h's bucket counts (one per bound, and the last for
// values above them all), count and sum.
func (h *Hist) State() (counts []uint64, count uint64, sum float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]uint64(nil), h.counts...), h.count, h.sum
}

// SetState replaces h's state with one State returned (an upgrade in
// place carries it to the new process). It reports false, changing
// nothing, when counts does not fit h's bounds.
func (h *Hist) SetState(counts []uint64, count uint64, sum float64) bool {
	if len(counts) != len(h.bounds)+1 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	copy(h.counts, counts)
	h.count, h.sum = count, sum
	return true
}

// Observe records v. NaN is ignored.
func (h *Hist) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	i, _ := slices.BinarySearch(h.bounds, v) // first bound >= v: buckets are (lo, hi]
	h.mu.Lock()
	h.counts[i]++
	h.count++
	h.sum += v
	h.mu.Unlock()
}

// Snapshot returns a copy of the state.
func (h *Hist) Snapshot() HistogramData {
	return h.snapshotInto(make([]uint64, len(h.counts)))
}

// snapshotInto returns a copy of the state with the bucket counts copied
// into counts, which has len(h.counts).
func (h *Hist) snapshotInto(counts []uint64) HistogramData {
	h.mu.Lock()
	defer h.mu.Unlock()
	copy(counts, h.counts)
	return HistogramData{Counts: counts, Count: h.count, Sum: h.sum}
}

// DurationBounds are the bucket bounds, in seconds, of gomon's duration
// histograms: from 5 ms (a fast exec) to 2 minutes (the create timeout).
var DurationBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}
