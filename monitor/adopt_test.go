package monitor

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestTraceParentRoundTrip: the create's span context survives the
// record, so an adopted container's spans join its trace; a missing or
// malformed one gives no parent.
func TestTraceParentRoundTrip(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
	})
	tp := traceParent(trace.ContextWithSpanContext(context.Background(), sc))
	if tp != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" {
		t.Fatalf("traceparent %q", tp)
	}
	got := trace.SpanContextFromContext(fromTraceParent(tp))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("span context %+v, want %+v (remote)", got, sc)
	}
	for _, bad := range []string{"", "00-xyz-0102030405060708-01", "01-0102030405060708090a0b0c0d0e0f10-0102030405060708-01"} {
		if trace.SpanContextFromContext(fromTraceParent(bad)).IsValid() {
			t.Errorf("traceparent %q gave a parent", bad)
		}
	}
	if traceParent(context.Background()) != "" {
		t.Error("no span: traceparent not empty")
	}
}
