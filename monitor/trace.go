package monitor

import (
	"context"
	"errors"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. The monitor uses only the OTel API: package exporter installs
// the SDK. With no provider configured every span is a no-op, so tracing
// costs nothing when off (docs/architecture.md, "Tracing costs nothing when off"). Spans are per operation,
// never per chunk: a read loop is one span whose counters are set at its
// end.

const tracerName = "github.com/gomon-dev/gomon/monitor"

// stderrExcerpt bounds the runtime stderr copied onto a failed span.
const stderrExcerpt = 512

// endSpan records err (if any) on span and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		var re *RuntimeError
		if errors.As(err, &re) {
			span.SetAttributes(attribute.Int("runtime.exit_code", re.Code))
			if s := re.Stderr; s != "" {
				if len(s) > stderrExcerpt {
					s = s[:stderrExcerpt]
				}
				span.SetAttributes(attribute.String("runtime.stderr", s))
			}
		}
	}
	span.End()
}

// detached returns a context carrying only ctx's span: for work that
// outlives the request (read loops, the exit waiter) and must be parented
// to it without inheriting its cancellation.
func detached(ctx context.Context) context.Context {
	return trace.ContextWithSpan(context.Background(), trace.SpanFromContext(ctx))
}

// traceEnv returns TRACEPARENT and TRACESTATE for a runtime process, the
// OpenTelemetry convention for carrying context in the environment, so an
// instrumented runtime continues the trace. Empty when ctx has no span.
func traceEnv(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	env := make(map[string]string, len(carrier))
	for k, v := range carrier {
		env[strings.ToUpper(k)] = v
	}
	return env
}

// withTraceEnv merges the trace variables into a request's env.
func withTraceEnv(ctx context.Context, env map[string]string) map[string]string {
	t := traceEnv(ctx)
	if len(t) == 0 {
		return env
	}
	out := make(map[string]string, len(env)+len(t))
	for k, v := range env {
		out[k] = v
	}
	for k, v := range t {
		out[k] = v
	}
	return out
}
