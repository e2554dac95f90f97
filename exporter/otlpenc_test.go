package exporter

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

var (
	tid1   = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	tid2   = trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sidA   = trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	sidB   = trace.SpanID{1, 1, 1, 1, 1, 1, 1, 1}
	sidC   = trace.SpanID{2, 2, 2, 2, 2, 2, 2, 2}
	epoch  = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	nanos  = func(t time.Time) uint64 { return uint64(t.UnixNano()) } //nolint:gosec // test times are positive
	strAny = func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	intAny = func(i int64) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
	}
)

func kv(k string, v *commonpb.AnyValue) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: v}
}

func arr(vs ...*commonpb.AnyValue) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
}

func boolAny(b bool) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: b}}
}

func dblAny(f float64) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: f}}
}

// TestEncodeRoundTrip decodes the hand-written protobuf with the generated
// OTLP types and compares every field with what the spans hold.
func TestEncodeRoundTrip(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=x,other=y")
	if err != nil {
		t.Fatal(err)
	}
	res1 := resource.NewSchemaless(attribute.String("service.name", "gomon"), attribute.Int("process.pid", 42))
	res2 := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "other"))
	scope1 := instrumentation.Scope{Name: "github.com/gomon-dev/gomon/rpc", Version: "v1.2.3", SchemaURL: "https://example/schema",
		Attributes: attribute.NewSet(attribute.String("scope.attr", "s"))}
	scope2 := instrumentation.Scope{Name: "monitor"}

	allTypes := []attribute.KeyValue{
		attribute.String("container_id", "abc"),
		attribute.String("empty_string", ""),
		attribute.Bool("t", true),
		attribute.Bool("f", false),
		attribute.Int64("zero", 0),
		attribute.Int64("neg", -7),
		attribute.Float64("pi", 3.25),
		attribute.BoolSlice("bools", []bool{true, false}),
		attribute.Int64Slice("ints", []int64{1, -2}),
		attribute.Float64Slice("floats", []float64{0.5, 0}),
		attribute.StringSlice("strs", []string{"a", ""}),
		{Key: "bytes", Value: attribute.ByteSliceValue([]byte{0, 1, 0xff})},
		{Key: "slice", Value: attribute.SliceValue(attribute.StringValue("x"), attribute.IntValue(3))},
		{Key: "map", Value: attribute.MapValue(attribute.String("k", "v"), attribute.Bool("b", true))},
		{Key: "empty", Value: attribute.Value{}},
	}
	allTypesPB := []*commonpb.KeyValue{
		kv("container_id", strAny("abc")),
		kv("empty_string", strAny("")),
		kv("t", boolAny(true)),
		kv("f", boolAny(false)),
		kv("zero", intAny(0)),
		kv("neg", intAny(-7)),
		kv("pi", dblAny(3.25)),
		kv("bools", arr(boolAny(true), boolAny(false))),
		kv("ints", arr(intAny(1), intAny(-2))),
		kv("floats", arr(dblAny(0.5), dblAny(0))),
		kv("strs", arr(strAny("a"), strAny(""))),
		kv("bytes", &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1, 0xff}}}),
		kv("slice", arr(strAny("x"), intAny(3))),
		kv("map", &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{
			Values: []*commonpb.KeyValue{kv("b", boolAny(true)), kv("k", strAny("v"))}}}}), // MapValue sorts keys
		kv("empty", &commonpb.AnyValue{}),
	}

	root := tracetest.SpanStub{
		Name: "create_container",
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid1, SpanID: sidA,
			TraceFlags: trace.FlagsSampled, TraceState: ts}),
		Parent: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid1, SpanID: sidC,
			TraceFlags: trace.FlagsSampled, Remote: true}),
		SpanKind:   trace.SpanKindServer,
		StartTime:  epoch,
		EndTime:    epoch.Add(1500 * time.Millisecond),
		Attributes: allTypes,
		Events: []sdktrace.Event{
			{Name: "log line", Time: epoch.Add(time.Millisecond), DroppedAttributeCount: 2,
				Attributes: []attribute.KeyValue{attribute.String("log.message", "hi"), attribute.Int("pid", 7)}},
			{Name: "bare", Time: epoch.Add(2 * time.Millisecond)},
		},
		Links: []sdktrace.Link{{
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid2, SpanID: sidB, TraceState: ts, Remote: true}),
			Attributes:  []attribute.KeyValue{attribute.String("link", "l")}, DroppedAttributeCount: 1,
		}},
		Status:               sdktrace.Status{Code: codes.Error, Description: "runtime failed"},
		DroppedAttributes:    3,
		DroppedEvents:        4,
		DroppedLinks:         5,
		Resource:             res1,
		InstrumentationScope: scope1,
	}
	child := tracetest.SpanStub{
		Name:                 "promise",
		SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid1, SpanID: sidB, TraceFlags: trace.FlagsSampled}),
		Parent:               root.SpanContext,
		SpanKind:             trace.SpanKindInternal,
		StartTime:            epoch.Add(time.Millisecond),
		EndTime:              epoch.Add(time.Second),
		Status:               sdktrace.Status{Code: codes.Ok},
		Resource:             res1,
		InstrumentationScope: scope1,
	}
	otherScope := tracetest.SpanStub{
		Name:                 "watch",
		SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid1, SpanID: sidC}),
		SpanKind:             trace.SpanKindClient,
		StartTime:            epoch,
		EndTime:              epoch.Add(time.Microsecond),
		Resource:             res1,
		InstrumentationScope: scope2,
	}
	otherRes := tracetest.SpanStub{
		Name:                 "kinds-unspecified",
		SpanContext:          trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid2, SpanID: sidA, TraceFlags: trace.FlagsSampled}),
		StartTime:            epoch,
		EndTime:              epoch,
		Resource:             res2,
		InstrumentationScope: scope2,
	}

	wantRoot := &tracepb.Span{
		TraceId: tid1[:], SpanId: sidA[:], TraceState: "vendor=x,other=y", ParentSpanId: sidC[:],
		Flags: 0x01 | 0x100 | 0x200, Name: "create_container", Kind: tracepb.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: nanos(epoch), EndTimeUnixNano: nanos(epoch.Add(1500 * time.Millisecond)),
		Attributes: allTypesPB, DroppedAttributesCount: 3,
		Events: []*tracepb.Span_Event{
			{TimeUnixNano: nanos(epoch.Add(time.Millisecond)), Name: "log line", DroppedAttributesCount: 2,
				Attributes: []*commonpb.KeyValue{kv("log.message", strAny("hi")), kv("pid", intAny(7))}},
			{TimeUnixNano: nanos(epoch.Add(2 * time.Millisecond)), Name: "bare"},
		},
		DroppedEventsCount: 4,
		Links: []*tracepb.Span_Link{{
			TraceId: tid2[:], SpanId: sidB[:], TraceState: "vendor=x,other=y",
			Attributes: []*commonpb.KeyValue{kv("link", strAny("l"))}, DroppedAttributesCount: 1,
			Flags: 0x100 | 0x200,
		}},
		DroppedLinksCount: 5,
		Status:            &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "runtime failed"},
	}
	wantChild := &tracepb.Span{
		TraceId: tid1[:], SpanId: sidB[:], ParentSpanId: sidA[:], Flags: 0x01 | 0x100,
		Name: "promise", Kind: tracepb.Span_SPAN_KIND_INTERNAL,
		StartTimeUnixNano: nanos(epoch.Add(time.Millisecond)), EndTimeUnixNano: nanos(epoch.Add(time.Second)),
		Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK},
	}
	wantOtherScope := &tracepb.Span{
		TraceId: tid1[:], SpanId: sidC[:], Flags: 0x100, Name: "watch", Kind: tracepb.Span_SPAN_KIND_CLIENT,
		StartTimeUnixNano: nanos(epoch), EndTimeUnixNano: nanos(epoch.Add(time.Microsecond)), Status: &tracepb.Status{},
	}
	wantOtherRes := &tracepb.Span{
		TraceId: tid2[:], SpanId: sidA[:], Flags: 0x101, Name: "kinds-unspecified",
		StartTimeUnixNano: nanos(epoch), EndTimeUnixNano: nanos(epoch), Status: &tracepb.Status{},
	}
	scope1PB := &commonpb.InstrumentationScope{Name: scope1.Name, Version: "v1.2.3",
		Attributes: []*commonpb.KeyValue{kv("scope.attr", strAny("s"))}}
	scope2PB := &commonpb.InstrumentationScope{Name: "monitor"}
	res1PB := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("process.pid", intAny(42)), kv("service.name", strAny("gomon"))}}
	res2PB := &resourcepb.Resource{Attributes: []*commonpb.KeyValue{kv("service.name", strAny("other"))}}

	tests := []struct {
		name  string
		spans tracetest.SpanStubs
		want  *coltrace.ExportTraceServiceRequest
	}{
		{
			name:  "one span, every field",
			spans: tracetest.SpanStubs{root},
			want: &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
				Resource: res1PB,
				ScopeSpans: []*tracepb.ScopeSpans{{Scope: scope1PB, Spans: []*tracepb.Span{wantRoot},
					SchemaUrl: "https://example/schema"}},
			}}},
		},
		{
			name:  "grouped by resource and scope",
			spans: tracetest.SpanStubs{root, otherRes, otherScope, child},
			want: &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
				{
					Resource: res1PB,
					ScopeSpans: []*tracepb.ScopeSpans{
						{Scope: scope1PB, Spans: []*tracepb.Span{wantRoot, wantChild}, SchemaUrl: "https://example/schema"},
						{Scope: scope2PB, Spans: []*tracepb.Span{wantOtherScope}},
					},
				},
				{
					Resource:   res2PB,
					ScopeSpans: []*tracepb.ScopeSpans{{Scope: scope2PB, Spans: []*tracepb.Span{wantOtherRes}}},
					SchemaUrl:  "https://opentelemetry.io/schemas/1.26.0",
				},
			}},
		},
		{
			name: "no spans",
			want: &coltrace.ExportTraceServiceRequest{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := encodeRequest(nil, tc.spans.Snapshots())
			var got coltrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatalf("real protobuf decoder rejects our bytes: %v", err)
			}
			if !proto.Equal(&got, tc.want) {
				t.Errorf("decoded request differs\n got: %s\nwant: %s", prototext.Format(&got), prototext.Format(tc.want))
			}
			// Canonical encoding: re-marshalling the decoded message gives the same size.
			if again, err := proto.Marshal(&got); err != nil || len(again) != len(b) {
				t.Errorf("re-encoded size %d (err %v), ours %d", len(again), err, len(b))
			}
		})
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		name string
		msg  *coltrace.ExportTraceServiceResponse
		want exportResult
	}{
		{"empty", &coltrace.ExportTraceServiceResponse{}, exportResult{}},
		{"partial", &coltrace.ExportTraceServiceResponse{PartialSuccess: &coltrace.ExportTracePartialSuccess{
			RejectedSpans: 3, ErrorMessage: "too old"}}, exportResult{rejected: 3, message: "too old"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeResponse(b)
			if err != nil || got != tc.want {
				t.Errorf("decodeResponse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if _, err := decodeResponse([]byte{0x0a, 0x05, 0x01}); err == nil {
		t.Error("truncated response decoded without error")
	}
}
