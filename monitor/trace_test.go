package monitor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// TestRuntimeGetsTraceContext: the runtime's environment carries
// TRACEPARENT (the OTel convention for environment carriers) from the
// caller's span, so an instrumented runtime continues the trace, and the
// request's env vars are kept beside it.
func TestRuntimeGetsTraceContext(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "env")
	m, err := New(Config{Runtime: writeScript(t, "env > "+envFile+"; exit 1"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Shutdown(context.Background()) }()

	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled,
	}))
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req := newPaths(t).request("traced", t.TempDir())
	req.Env = map[string]string{"FROM_REQUEST": "yes"}
	if _, err := m.CreateContainer(ctx, req); err == nil {
		t.Fatal("the fake runtime fails; create succeeded")
	}
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env := string(raw)
	if !strings.Contains(env, "TRACEPARENT=00-0af7651916cd43dd8448eb211c80319c-") || !strings.Contains(env, "FROM_REQUEST=yes") {
		t.Errorf("runtime environment lacks TRACEPARENT of the caller's trace or the request's env:\n%s", env)
	}
}
