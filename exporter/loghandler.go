package exporter

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// LogHandler wraps next so that log records become events on the span in
// the record's context, as conmon-rs's tracing-opentelemetry layer does.
//
// A record logged with a context whose span is recording becomes a span event
// named by the message, with attributes log.message, log.severity (the slog
// level text) and the logger's and record's attributes (groups flatten to
// dotted keys). Error-level records also set the span status to Error with the
// message as description. Events are added whatever next's level; next sees
// exactly the records its own Enabled accepts. With no recording span the
// handler only forwards, so it costs nothing when tracing is off or the
// span is sampled out.
func LogHandler(next slog.Handler) slog.Handler {
	return &logHandler{next: next}
}

type logHandler struct {
	next   slog.Handler
	attrs  []slog.Attr // from WithAttrs, keys already prefixed by their groups
	prefix string      // open groups, "a.b." form
}

// Enabled reports true for every level when the span in ctx is recording.
func (h *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	if trace.SpanFromContext(ctx).IsRecording() {
		return true
	}
	return h.next.Enabled(ctx, level)
}

// Handle adds the span event (if recording) and forwards to next if enabled there.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		kvs := make([]attribute.KeyValue, 0, 2+len(h.attrs)+r.NumAttrs())
		kvs = append(kvs,
			attribute.String("log.message", r.Message),
			attribute.String("log.severity", r.Level.String()))
		for _, a := range h.attrs {
			kvs = appendAttr(kvs, "", a)
		}
		r.Attrs(func(a slog.Attr) bool {
			kvs = appendAttr(kvs, h.prefix, a)
			return true
		})
		opts := []trace.EventOption{trace.WithAttributes(kvs...)}
		if !r.Time.IsZero() {
			opts = append(opts, trace.WithTimestamp(r.Time))
		}
		span.AddEvent(r.Message, opts...)
		if r.Level >= slog.LevelError {
			span.SetStatus(codes.Error, r.Message)
		}
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	if err := h.next.Handle(ctx, r); err != nil {
		return fmt.Errorf("forward log record: %w", err)
	}
	return nil
}

// WithAttrs returns a handler whose records carry attrs.
func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	n := &logHandler{next: h.next.WithAttrs(attrs), prefix: h.prefix}
	n.attrs = make([]slog.Attr, 0, len(h.attrs)+len(attrs))
	n.attrs = append(n.attrs, h.attrs...)
	for _, a := range attrs {
		a.Key = h.prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return n
}

// WithGroup returns a handler that nests later attributes under name.
func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &logHandler{next: h.next.WithGroup(name), attrs: h.attrs, prefix: h.prefix + name + "."}
}

// appendAttr converts a slog attribute to OTel attributes, flattening groups.
func appendAttr(kvs []attribute.KeyValue, prefix string, a slog.Attr) []attribute.KeyValue {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			kvs = appendAttr(kvs, p, g)
		}
		return kvs
	}
	if a.Key == "" {
		return kvs // slog ignores empty attributes too
	}
	k := attribute.Key(prefix + a.Key)
	switch v.Kind() {
	case slog.KindString:
		return append(kvs, k.String(v.String()))
	case slog.KindInt64:
		return append(kvs, k.Int64(v.Int64()))
	case slog.KindUint64:
		return append(kvs, k.Int64(int64(min(v.Uint64(), math.MaxInt64)))) //nolint:gosec // clamped
	case slog.KindFloat64:
		return append(kvs, k.Float64(v.Float64()))
	case slog.KindBool:
		return append(kvs, k.Bool(v.Bool()))
	case slog.KindDuration:
		return append(kvs, k.String(v.Duration().String()))
	case slog.KindTime:
		return append(kvs, k.String(v.Time().Format(time.RFC3339Nano)))
	default:
		if err, ok := v.Any().(error); ok {
			return append(kvs, k.String(err.Error()))
		}
		return append(kvs, k.String(v.String()))
	}
}
