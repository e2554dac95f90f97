package exporter

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// recorder keeps finished spans in memory (ModeTree), up to limit.
type recorder struct {
	limit   int
	mu      sync.Mutex
	ended   []sdktrace.ReadOnlySpan
	dropped atomic.Uint64
}

var _ sdktrace.SpanProcessor = (*recorder)(nil)

func (r *recorder) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (r *recorder) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ended) >= r.limit {
		r.dropped.Add(1)
		return
	}
	r.ended = append(r.ended, s)
}

func (r *recorder) spans() []sdktrace.ReadOnlySpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ended)
}

func (r *recorder) ForceFlush(context.Context) error { return nil }
func (r *recorder) Shutdown(context.Context) error   { return nil }

// treeBarWidth is the width of the waterfall bar in RenderTree.
const treeBarWidth = 40

// treeKeyAttrs are the attributes RenderTree prints, in this order.
var treeKeyAttrs = []attribute.Key{"container_id", "exec_id", "pid", "exit_code", "signal", "bytes"}

// RenderTree draws finished spans as an indented waterfall, one block per
// trace (ordered by start) and one line per span:
//
//	trace 4bf92f3577b34da6a3ce929d0e0e4736 (3 spans, 12ms)
//	|████████████████████████████████████████|     12ms create_container container_id=abc
//	|          ████████████████              |      5ms   promise
//
// The bar shows the span's start offset and duration relative to its trace;
// the indentation of the name is the span's depth. Spans whose parent is not
// among spans (remote parents, still-open spans) are drawn as roots. After the
// name come the key attributes (container_id, exec_id, pid, exit_code, signal,
// bytes) and, for spans with an Error status, error=<description>.
func RenderTree(w io.Writer, spans []sdktrace.ReadOnlySpan) error {
	bw := bufio.NewWriter(w)
	byTrace := map[trace.TraceID][]sdktrace.ReadOnlySpan{}
	var order []trace.TraceID
	for _, s := range spans {
		if s == nil {
			continue
		}
		id := s.SpanContext().TraceID()
		if _, ok := byTrace[id]; !ok {
			order = append(order, id)
		}
		byTrace[id] = append(byTrace[id], s)
	}
	first := func(id trace.TraceID) time.Time {
		t := byTrace[id][0].StartTime()
		for _, s := range byTrace[id][1:] {
			if s.StartTime().Before(t) {
				t = s.StartTime()
			}
		}
		return t
	}
	slices.SortStableFunc(order, func(a, b trace.TraceID) int {
		if c := first(a).Compare(first(b)); c != 0 {
			return c
		}
		return strings.Compare(a.String(), b.String())
	})
	for i, id := range order {
		if i > 0 {
			_, _ = bw.WriteString("\n")
		}
		renderTrace(bw, id, byTrace[id])
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write span tree: %w", err)
	}
	return nil
}

func renderTrace(w *bufio.Writer, id trace.TraceID, spans []sdktrace.ReadOnlySpan) {
	start, end := spans[0].StartTime(), spans[0].EndTime()
	present := make(map[trace.SpanID]bool, len(spans))
	for _, s := range spans {
		if s.StartTime().Before(start) {
			start = s.StartTime()
		}
		if s.EndTime().After(end) {
			end = s.EndTime()
		}
		present[s.SpanContext().SpanID()] = true
	}
	total := end.Sub(start)
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		p := s.Parent().SpanID()
		if p.IsValid() && present[p] && p != s.SpanContext().SpanID() {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(a, b sdktrace.ReadOnlySpan) int {
		return cmp.Or(a.StartTime().Compare(b.StartTime()),
			strings.Compare(a.Name(), b.Name()),
			strings.Compare(a.SpanContext().SpanID().String(), b.SpanContext().SpanID().String()))
	}
	// w is buffered: a write error sticks and is returned by Flush.
	_, _ = fmt.Fprintf(w, "trace %s (%d spans, %s)\n", id, len(spans), fmtDuration(total))
	visited := make(map[trace.SpanID]bool, len(spans))
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		sid := s.SpanContext().SpanID()
		if visited[sid] {
			return
		}
		visited[sid] = true
		d := s.EndTime().Sub(s.StartTime())
		_, _ = fmt.Fprintf(w, "|%s| %8s %s%s%s\n", bar(s.StartTime().Sub(start), d, total), fmtDuration(d),
			strings.Repeat("  ", depth), s.Name(), keyAttrs(s))
		kids := children[sid]
		slices.SortStableFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	slices.SortStableFunc(roots, byStart)
	for _, r := range roots {
		walk(r, 0)
	}
}

// bar draws [offset, offset+d) of total on treeBarWidth cells; every span
// gets at least one cell.
func bar(offset, d, total time.Duration) string {
	from, to := 0, treeBarWidth
	if total > 0 {
		from = int(int64(offset) * treeBarWidth / int64(total))
		to = int((int64(offset+d)*treeBarWidth + int64(total) - 1) / int64(total))
	}
	from = min(max(from, 0), treeBarWidth-1)
	to = min(max(to, from+1), treeBarWidth)
	return strings.Repeat(" ", from) + strings.Repeat("█", to-from) + strings.Repeat(" ", treeBarWidth-to)
}

func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		d = d.Round(time.Millisecond)
	case d >= time.Millisecond:
		d = d.Round(10 * time.Microsecond)
	default:
		d = d.Round(time.Microsecond)
	}
	return d.String()
}

func keyAttrs(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	attrs := s.Attributes()
	for _, k := range treeKeyAttrs {
		for _, kv := range attrs {
			if kv.Key == k {
				b.WriteString(" " + string(k) + "=" + quoteIfNeeded(kv.Value.String()))
				break
			}
		}
	}
	if st := s.Status(); st.Code == codes.Error {
		desc := st.Description
		if desc == "" {
			desc = "error"
		}
		b.WriteString(" error=" + quoteIfNeeded(desc))
	}
	return b.String()
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}
