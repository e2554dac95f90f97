package exporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// jsonExporter writes one JSON object per span and line (ModeStdout).
type jsonExporter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newJSONExporter(w io.Writer) *jsonExporter {
	return &jsonExporter{enc: json.NewEncoder(w)}
}

// jsonSpan is the line format of ModeStdout.
type jsonSpan struct {
	Name         string         `json:"name"`
	TraceID      string         `json:"trace_id"`
	SpanID       string         `json:"span_id"`
	ParentSpanID string         `json:"parent_span_id,omitempty"`
	Kind         string         `json:"kind"`
	Start        time.Time      `json:"start"`
	End          time.Time      `json:"end"`
	DurationNS   int64          `json:"duration_ns"`
	Status       string         `json:"status,omitempty"`
	StatusDesc   string         `json:"status_description,omitempty"`
	Attributes   map[string]any `json:"attributes,omitempty"`
	Events       []jsonEvent    `json:"events,omitempty"`
	Scope        string         `json:"scope,omitempty"`
	Service      string         `json:"service,omitempty"`
}

type jsonEvent struct {
	Name       string         `json:"name"`
	Time       time.Time      `json:"time"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// ExportSpans writes the spans; the first write error aborts the batch.
func (e *jsonExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		js := jsonSpan{
			Name:       s.Name(),
			TraceID:    s.SpanContext().TraceID().String(),
			SpanID:     s.SpanContext().SpanID().String(),
			Kind:       s.SpanKind().String(),
			Start:      s.StartTime(),
			End:        s.EndTime(),
			DurationNS: s.EndTime().Sub(s.StartTime()).Nanoseconds(),
			Attributes: attrMap(s.Attributes()),
			Scope:      s.InstrumentationScope().Name,
		}
		if p := s.Parent(); p.SpanID().IsValid() {
			js.ParentSpanID = p.SpanID().String()
		}
		if st := s.Status(); st.Code != codes.Unset {
			js.Status, js.StatusDesc = st.Code.String(), st.Description
		}
		if r := s.Resource(); r != nil {
			if v, ok := r.Set().Value("service.name"); ok {
				js.Service = v.AsString()
			}
		}
		for _, ev := range s.Events() {
			js.Events = append(js.Events, jsonEvent{Name: ev.Name, Time: ev.Time, Attributes: attrMap(ev.Attributes)})
		}
		if err := e.enc.Encode(&js); err != nil {
			return fmt.Errorf("write span as json: %w", err)
		}
	}
	return nil
}

// Shutdown does nothing: the writer belongs to the caller.
func (e *jsonExporter) Shutdown(context.Context) error { return nil }

func attrMap(kvs []attribute.KeyValue) map[string]any {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}
