package exporter

import (
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP messages gomon writes, from opentelemetry-proto
// (collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
// common/v1/common.proto, resource/v1/resource.proto). Encoding by hand keeps
// the generated OTLP Go types, their descriptors and the reflection-based
// protobuf runtime out of the daemon (see the package doc for the figures).
const (
	// ExportTraceServiceRequest / ExportTraceServiceResponse.
	fReqResourceSpans     = 1
	fRespPartialSuccess   = 1
	fPartialRejectedSpans = 1
	fPartialErrorMessage  = 2

	// ResourceSpans.
	fRSResource   = 1
	fRSScopeSpans = 2
	fRSSchemaURL  = 3

	// Resource.
	fResAttributes = 1
	fResDropped    = 2

	// ScopeSpans.
	fSSScope     = 1
	fSSSpans     = 2
	fSSSchemaURL = 3

	// InstrumentationScope.
	fScopeName       = 1
	fScopeVersion    = 2
	fScopeAttributes = 3

	// Span.
	fSpanTraceID       = 1
	fSpanSpanID        = 2
	fSpanTraceState    = 3
	fSpanParentSpanID  = 4
	fSpanName          = 5
	fSpanKind          = 6
	fSpanStart         = 7
	fSpanEnd           = 8
	fSpanAttributes    = 9
	fSpanDroppedAttrs  = 10
	fSpanEvents        = 11
	fSpanDroppedEvents = 12
	fSpanLinks         = 13
	fSpanDroppedLinks  = 14
	fSpanStatus        = 15
	fSpanFlags         = 16

	// Span.Event.
	fEventTime         = 1
	fEventName         = 2
	fEventAttributes   = 3
	fEventDroppedAttrs = 4

	// Span.Link.
	fLinkTraceID      = 1
	fLinkSpanID       = 2
	fLinkTraceState   = 3
	fLinkAttributes   = 4
	fLinkDroppedAttrs = 5
	fLinkFlags        = 6

	// Status.
	fStatusMessage = 2
	fStatusCode    = 3

	// KeyValue, AnyValue, ArrayValue, KeyValueList.
	fKVKey         = 1
	fKVValue       = 2
	fAnyString     = 1
	fAnyBool       = 2
	fAnyInt        = 3
	fAnyDouble     = 4
	fAnyArray      = 5
	fAnyKVList     = 6
	fAnyBytes      = 7
	fArrayValues   = 1
	fKVListValues  = 1
	otlpStatusOK   = 1
	otlpStatusErr  = 2
	flagHasRemote  = 0x100 // SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
	flagIsRemote   = 0x200 // SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
	maxAttrNesting = 8     // guard against pathological nested MAP/SLICE values
)

// scopeKey identifies one InstrumentationScope inside a request.
type scopeKey struct {
	name, version, schemaURL string
	attrs                    attribute.Distinct
}

// group is the spans of one resource, split by scope, in first-seen order.
type group struct {
	res    *resource.Resource
	scopes []scopeGroup
}

type scopeGroup struct {
	key   scopeKey
	scope instrumentation.Scope
	spans []sdktrace.ReadOnlySpan
}

// encodeRequest appends the ExportTraceServiceRequest for spans to b.
// Spans are grouped by resource and instrumentation scope in first-seen order.
func encodeRequest(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	var groups []*group
	for _, s := range spans {
		if s == nil {
			continue
		}
		res := s.Resource()
		var g *group
		for _, cand := range groups {
			if cand.res == res || (cand.res != nil && res != nil && cand.res.Equivalent() == res.Equivalent()) {
				g = cand
				break
			}
		}
		if g == nil {
			g = &group{res: res}
			groups = append(groups, g)
		}
		sc := s.InstrumentationScope()
		key := scopeKey{name: sc.Name, version: sc.Version, schemaURL: sc.SchemaURL, attrs: sc.Attributes.Equivalent()}
		idx := -1
		for i := range g.scopes {
			if g.scopes[i].key == key {
				idx = i
				break
			}
		}
		if idx < 0 {
			g.scopes = append(g.scopes, scopeGroup{key: key, scope: sc})
			idx = len(g.scopes) - 1
		}
		g.scopes[idx].spans = append(g.scopes[idx].spans, s)
	}
	for _, g := range groups {
		b = appendMsg(b, fReqResourceSpans, func(b []byte) []byte {
			return appendResourceSpans(b, g)
		})
	}
	return b
}

func appendResourceSpans(b []byte, g *group) []byte {
	if g.res != nil {
		b = appendMsg(b, fRSResource, func(b []byte) []byte {
			iter := g.res.Iter()
			for iter.Next() {
				b = appendKeyValue(b, fResAttributes, iter.Attribute(), 0)
			}
			return b
		})
	}
	for i := range g.scopes {
		sg := &g.scopes[i]
		b = appendMsg(b, fRSScopeSpans, func(b []byte) []byte {
			b = appendMsg(b, fSSScope, func(b []byte) []byte {
				b = appendString(b, fScopeName, sg.scope.Name)
				b = appendString(b, fScopeVersion, sg.scope.Version)
				iter := sg.scope.Attributes.Iter()
				for iter.Next() {
					b = appendKeyValue(b, fScopeAttributes, iter.Attribute(), 0)
				}
				return b
			})
			for _, s := range sg.spans {
				b = appendMsg(b, fSSSpans, func(b []byte) []byte { return appendSpan(b, s) })
			}
			return appendString(b, fSSSchemaURL, sg.scope.SchemaURL)
		})
	}
	if g.res != nil {
		b = appendString(b, fRSSchemaURL, g.res.SchemaURL())
	}
	return b
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, fSpanTraceID, tid[:])
	b = appendBytes(b, fSpanSpanID, sid[:])
	b = appendString(b, fSpanTraceState, sc.TraceState().String())
	parent := s.Parent()
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendBytes(b, fSpanParentSpanID, psid[:])
	}
	b = appendString(b, fSpanName, s.Name())
	if k := s.SpanKind(); k != trace.SpanKindUnspecified {
		// OTel Go's SpanKind values equal the OTLP enum values (1 internal … 5 consumer).
		b = appendVarint(b, fSpanKind, uint64(k))
	}
	b = appendFixed64(b, fSpanStart, unixNano(s.StartTime()))
	b = appendFixed64(b, fSpanEnd, unixNano(s.EndTime()))
	for _, kv := range s.Attributes() {
		b = appendKeyValue(b, fSpanAttributes, kv, 0)
	}
	b = appendVarint(b, fSpanDroppedAttrs, clampU32(s.DroppedAttributes()))
	for _, ev := range s.Events() {
		b = appendMsg(b, fSpanEvents, func(b []byte) []byte {
			b = appendFixed64(b, fEventTime, unixNano(ev.Time))
			b = appendString(b, fEventName, ev.Name)
			for _, kv := range ev.Attributes {
				b = appendKeyValue(b, fEventAttributes, kv, 0)
			}
			return appendVarint(b, fEventDroppedAttrs, clampU32(ev.DroppedAttributeCount))
		})
	}
	b = appendVarint(b, fSpanDroppedEvents, clampU32(s.DroppedEvents()))
	for _, l := range s.Links() {
		b = appendMsg(b, fSpanLinks, func(b []byte) []byte {
			ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
			b = appendBytes(b, fLinkTraceID, ltid[:])
			b = appendBytes(b, fLinkSpanID, lsid[:])
			b = appendString(b, fLinkTraceState, l.SpanContext.TraceState().String())
			for _, kv := range l.Attributes {
				b = appendKeyValue(b, fLinkAttributes, kv, 0)
			}
			b = appendVarint(b, fLinkDroppedAttrs, clampU32(l.DroppedAttributeCount))
			return appendFixed32(b, fLinkFlags, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		})
	}
	b = appendVarint(b, fSpanDroppedLinks, clampU32(s.DroppedLinks()))
	st := s.Status()
	// Always present, like the stock exporter, so collectors see an explicit Unset.
	b = appendMsg(b, fSpanStatus, func(b []byte) []byte {
		b = appendString(b, fStatusMessage, st.Description)
		switch st.Code {
		case codes.Ok:
			b = appendVarint(b, fStatusCode, otlpStatusOK)
		case codes.Error:
			b = appendVarint(b, fStatusCode, otlpStatusErr)
		}
		return b
	})
	return appendFixed32(b, fSpanFlags, spanFlags(sc.TraceFlags(), parent))
}

// spanFlags is the OTLP flags word: W3C trace flags in the low byte plus the
// "is the parent/linked context remote" bits.
func spanFlags(tf trace.TraceFlags, other trace.SpanContext) uint32 {
	f := uint32(tf) | flagHasRemote
	if other.IsRemote() {
		f |= flagIsRemote
	}
	return f
}

func appendKeyValue(b []byte, num protowire.Number, kv attribute.KeyValue, depth int) []byte {
	return appendMsg(b, num, func(b []byte) []byte {
		b = appendString(b, fKVKey, string(kv.Key))
		return appendMsg(b, fKVValue, func(b []byte) []byte { return appendAnyValue(b, kv.Value, depth) })
	})
}

// appendAnyValue writes the oneof of an AnyValue. Oneof members are written
// even when they hold the zero value: presence is what selects the member.
func appendAnyValue(b []byte, v attribute.Value, depth int) []byte {
	switch v.Type() {
	case attribute.BOOL:
		return appendBoolAlways(b, fAnyBool, v.AsBool())
	case attribute.INT64:
		return appendVarintAlways(b, fAnyInt, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		return appendStringAlways(b, fAnyString, v.AsString())
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, fAnyBytes, protowire.BytesType)
		return protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		return appendArray(b, func(b []byte) []byte {
			for _, x := range v.AsBoolSlice() {
				b = appendMsg(b, fArrayValues, func(b []byte) []byte { return appendBoolAlways(b, fAnyBool, x) })
			}
			return b
		})
	case attribute.INT64SLICE:
		return appendArray(b, func(b []byte) []byte {
			for _, x := range v.AsInt64Slice() {
				b = appendMsg(b, fArrayValues, func(b []byte) []byte { return appendVarintAlways(b, fAnyInt, uint64(x)) })
			}
			return b
		})
	case attribute.FLOAT64SLICE:
		return appendArray(b, func(b []byte) []byte {
			for _, x := range v.AsFloat64Slice() {
				b = appendMsg(b, fArrayValues, func(b []byte) []byte {
					b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
					return protowire.AppendFixed64(b, math.Float64bits(x))
				})
			}
			return b
		})
	case attribute.STRINGSLICE:
		return appendArray(b, func(b []byte) []byte {
			for _, x := range v.AsStringSlice() {
				b = appendMsg(b, fArrayValues, func(b []byte) []byte { return appendStringAlways(b, fAnyString, x) })
			}
			return b
		})
	case attribute.SLICE:
		if depth >= maxAttrNesting {
			return appendStringAlways(b, fAnyString, "TOO DEEP")
		}
		return appendArray(b, func(b []byte) []byte {
			for _, x := range v.AsSlice() {
				b = appendMsg(b, fArrayValues, func(b []byte) []byte { return appendAnyValue(b, x, depth+1) })
			}
			return b
		})
	case attribute.MAP:
		if depth >= maxAttrNesting {
			return appendStringAlways(b, fAnyString, "TOO DEEP")
		}
		return appendMsg(b, fAnyKVList, func(b []byte) []byte {
			for _, kv := range v.AsMap() {
				b = appendKeyValue(b, fKVListValues, kv, depth+1)
			}
			return b
		})
	case attribute.EMPTY:
		return b // an AnyValue with no member set is OTLP's empty value
	default:
		return appendStringAlways(b, fAnyString, "INVALID")
	}
}

func appendArray(b []byte, body func([]byte) []byte) []byte {
	return appendMsg(b, fAnyArray, body)
}

// appendMsg appends a length-delimited sub-message produced by body. The body
// is written in place and shifted right by the size of its length prefix, so
// no intermediate buffer is needed.
func appendMsg(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	start := len(b)
	b = body(b)
	n := len(b) - start
	sz := protowire.SizeVarint(uint64(n))
	for range sz {
		b = append(b, 0)
	}
	copy(b[start+sz:], b[start:start+n])
	protowire.AppendVarint(b[:start], uint64(n))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringAlways(b, num, s)
}

func appendStringAlways(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return appendVarintAlways(b, num, v)
}

func appendVarintAlways(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBoolAlways(b []byte, num protowire.Number, v bool) []byte {
	return appendVarintAlways(b, num, protowire.EncodeBool(v))
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(0, t.UnixNano())) //nolint:gosec // clamped to >= 0
}

func clampU32(v int) uint64 {
	return uint64(min(max(v, 0), math.MaxUint32)) //nolint:gosec // clamped
}

// exportResult is what a collector answered in an ExportTraceServiceResponse.
type exportResult struct {
	rejected int64
	message  string
}

// decodeResponse parses an ExportTraceServiceResponse, keeping only the
// partial_success fields; unknown fields are skipped.
func decodeResponse(b []byte) (exportResult, error) {
	var r exportResult
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != fRespPartialSuccess || typ != protowire.BytesType {
			return nil
		}
		return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
			switch {
			case num == fPartialRejectedSpans && typ == protowire.VarintType:
				r.rejected = int64(x) //nolint:gosec // wire int64
			case num == fPartialErrorMessage && typ == protowire.BytesType:
				r.message = string(v)
			}
			return nil
		})
	})
	return r, err
}

// walkFields calls fn for each top-level field of a protobuf message: v holds
// the payload of length-delimited fields, x the value of numeric ones.
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
