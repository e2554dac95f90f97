package exporter

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestLogHandler(t *testing.T) {
	tr, err := Setup(context.Background(), Config{Mode: ModeTree, LookupEnv: mapEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tr.Shutdown(context.Background()) }()
	tracer := tr.TracerProvider().Tracer("test")

	type event struct {
		name  string
		attrs map[string]string
	}
	tests := []struct {
		name       string
		log        func(ctx context.Context, l *slog.Logger)
		recording  bool
		wantEvents []event
		wantStatus codes.Code
		wantOut    []string // substrings next must have received
		wantNotOut []string
	}{
		{
			name:      "debug below next's level: event only",
			recording: true,
			log: func(ctx context.Context, l *slog.Logger) {
				l.DebugContext(ctx, "reading stdout", "container_id", "abc", "bytes", 42)
			},
			wantEvents: []event{{"reading stdout", map[string]string{"log.message": "reading stdout", "log.severity": "DEBUG",
				"container_id": "abc", "bytes": "42"}}},
			wantNotOut: []string{"reading stdout"},
		},
		{
			name:      "error: event, status, forwarded",
			recording: true,
			log: func(ctx context.Context, l *slog.Logger) {
				l.ErrorContext(ctx, "runtime failed", "error", errors.New("exit status 1"))
			},
			wantEvents: []event{{"runtime failed", map[string]string{"log.severity": "ERROR", "error": "exit status 1"}}},
			wantStatus: codes.Error,
			wantOut:    []string{"runtime failed"},
		},
		{
			name:      "logger attrs and groups flatten",
			recording: true,
			log: func(ctx context.Context, l *slog.Logger) {
				l.With("pid", 7).WithGroup("req").With("id", "r1").WarnContext(ctx, "slow", slog.Group("io", "n", 3))
			},
			wantEvents: []event{{"slow", map[string]string{"log.severity": "WARN", "pid": "7", "req.id": "r1", "req.io.n": "3"}}},
			wantOut:    []string{"slow", "req.id=r1"},
		},
		{
			name:       "no span: forwarded only",
			recording:  false,
			log:        func(ctx context.Context, l *slog.Logger) { l.WarnContext(ctx, "plain warning") },
			wantOut:    []string{"plain warning"},
			wantStatus: codes.Unset,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			l := slog.New(LogHandler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
			ctx := context.Background()
			var sp trace.Span
			if tc.recording {
				ctx, sp = tracer.Start(ctx, tc.name)
			}
			tc.log(ctx, l)
			if sp == nil {
				for _, w := range tc.wantOut {
					if !strings.Contains(out.String(), w) {
						t.Errorf("next lacks %q: %s", w, out.String())
					}
				}
				return
			}
			sp.End()
			ro := sp.(sdktrace.ReadOnlySpan)
			if len(ro.Events()) != len(tc.wantEvents) {
				t.Fatalf("events = %+v, want %d", ro.Events(), len(tc.wantEvents))
			}
			for i, want := range tc.wantEvents {
				ev := ro.Events()[i]
				if ev.Name != want.name {
					t.Errorf("event name %q, want %q", ev.Name, want.name)
				}
				got := map[string]string{}
				for _, kv := range ev.Attributes {
					got[string(kv.Key)] = kv.Value.String()
				}
				for k, v := range want.attrs {
					if got[k] != v {
						t.Errorf("event attr %s = %q, want %q (all %v)", k, got[k], v, got)
					}
				}
			}
			if ro.Status().Code != tc.wantStatus {
				t.Errorf("status %v, want %v", ro.Status().Code, tc.wantStatus)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("next lacks %q: %s", w, out.String())
				}
			}
			for _, w := range tc.wantNotOut {
				if strings.Contains(out.String(), w) {
					t.Errorf("next got %q despite its level: %s", w, out.String())
				}
			}
		})
	}
}

// TestLogHandlerNotRecording: with a sampled-out span Enabled defers to next,
// so disabled levels cost what they cost without the wrapper.
func TestLogHandlerNotRecording(t *testing.T) {
	h := LogHandler(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid1, SpanID: sidA}))
	if h.Enabled(ctx, slog.LevelDebug) {
		t.Error("debug enabled without a recording span")
	}
	if !h.Enabled(ctx, slog.LevelInfo) {
		t.Error("info disabled")
	}
}
