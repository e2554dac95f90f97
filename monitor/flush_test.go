package monitor

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// otlpReceiver is a real OTLP/gRPC trace receiver (grpc-go, test only).
type otlpReceiver struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *otlpReceiver) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// find returns the received spans named name whose container_id is id.
func (r *otlpReceiver) find(name, id string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.GetName() != name {
			continue
		}
		for _, kv := range s.GetAttributes() {
			if kv.GetKey() == "container_id" && kv.GetValue().GetStringValue() == id {
				out = append(out, s)
			}
		}
	}
	return out
}

func intAttr(s *tracepb.Span, key string) (int64, bool) {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetIntValue(), true
		}
	}
	return 0, false
}

// TestExitFlushesSpansPromptly: a container's read_loop and
// wait_for_exit_code spans reach a real OTLP receiver soon after it exits,
// although the batch timer is a minute: under a kubelet, gomon may be
// SIGKILLed a second or two after the pod's last container stops, and the
// spans still waiting for the timer would be lost.
func TestExitFlushesSpansPromptly(t *testing.T) {
	runc := monitortest.Runc(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	recv := &otlpReceiver{}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, recv)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})

	const batchDelay = time.Minute
	tr, err := exporter.Setup(context.Background(), exporter.Config{
		Mode: exporter.ModeOTLP, Endpoint: "http://" + l.Addr().String(), SamplingRatePerMillion: 1_000_000,
		BatchTimeout: batchDelay, LookupEnv: func(string) (string, bool) { return "", false },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})

	// Wired as the daemon wires it.
	m, err := New(Config{
		Runtime: runc, RuntimeRoot: t.TempDir(), Logger: testLogger(),
		TracerProvider: tr.TracerProvider(), OnContainerExit: func(string) { tr.FlushSoon() },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})

	p := newPaths(t)
	req := p.request("flushed", monitortest.Bundle(t, "sh", "-c", "echo out; echo err >&2; exit 3"))
	if st := runToExit(t, m, req); st.Code != 3 {
		t.Fatalf("exit status %+v, want code 3", st)
	}
	exited := time.Now()
	// Generous, yet far below the batch timer: only the exit flush can
	// deliver the spans in time.
	deadline := exited.Add(5 * time.Second)
	var loops, waits []*tracepb.Span
	for time.Now().Before(deadline) {
		loops, waits = recv.find("read_loop", "flushed"), recv.find("wait_for_exit_code", "flushed")
		if len(loops) == 2 && len(waits) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("spans arrived %v after Wait returned", time.Since(exited).Round(time.Millisecond))
	if len(loops) != 2 || len(waits) != 1 {
		t.Fatalf("5 s after the exit (batch delay %v) the receiver has %d read_loop and %d wait_for_exit_code spans; want 2 and 1",
			batchDelay, len(loops), len(waits))
	}
	if code, ok := intAttr(waits[0], "exit_code"); !ok || code != 3 {
		t.Errorf("wait_for_exit_code exit_code = %d (present %v), want 3", code, ok)
	}
	var bytes int64
	for _, s := range loops {
		n, _ := intAttr(s, "bytes")
		bytes += n
	}
	if bytes != int64(len("out\nerr\n")) {
		t.Errorf("read_loop spans count %d bytes, want %d", bytes, len("out\nerr\n"))
	}
}
