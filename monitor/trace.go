package monitor

import (
	"context"
	"errors"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/gomon-dev/gomon/monitor/internal/bundle"
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

// OpenTelemetry semantic-convention attribute names of a container's
// Kubernetes identity (https://opentelemetry.io/docs/specs/semconv/resource/k8s/,
// .../resource/container/), so a trace backend finds a pod's spans by name.
const (
	attrK8sPodName       = "k8s.pod.name"
	attrK8sNamespaceName = "k8s.namespace.name"
	attrK8sPodUID        = "k8s.pod.uid"
	attrK8sContainerName = "k8s.container.name"
	attrContainerID      = "container.id"
	// attrContainerIDLegacy is the name gomon's spans have always used
	// (as conmon-rs's do); kept beside attrContainerID for existing queries.
	attrContainerIDLegacy = "container_id"
)

// identityAttrs renders a container's ID and Kubernetes identity as span
// (and metric) attributes: both container ID names, and each identity
// field that is known.
func identityAttrs(id string, ident bundle.Identity) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, attribute.String(attrContainerIDLegacy, id), attribute.String(attrContainerID, id))
	for _, f := range []struct{ key, v string }{
		{attrK8sPodName, ident.PodName},
		{attrK8sNamespaceName, ident.PodNamespace},
		{attrK8sPodUID, ident.PodUID},
		{attrK8sContainerName, ident.ContainerName},
	} {
		if f.v != "" {
			attrs = append(attrs, attribute.String(f.key, f.v))
		}
	}
	return slices.Clip(attrs) // an append by a user copies
}

// attrs returns the container's identity attributes: container_id and
// container.id, and k8s.pod.name, k8s.namespace.name, k8s.pod.uid and
// k8s.container.name when its bundle names them. Computed once at create;
// the slice is shared: callers may append to it (it is full, so append
// copies) but not modify its elements.
func (c *container) attrs() []attribute.KeyValue {
	if c.attrSet == nil {
		return []attribute.KeyValue{attribute.String(attrContainerIDLegacy, c.id), attribute.String(attrContainerID, c.id)}
	}
	return c.attrSet
}
