package exporter

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// sink collects what a test collector received.
type sink struct {
	mu       sync.Mutex
	requests []*coltrace.ExportTraceServiceRequest
}

func (s *sink) add(r *coltrace.ExportTraceServiceRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

func (s *sink) spans() []*tracepb.Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*tracepb.Span
	for _, r := range s.requests {
		for _, rs := range r.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				out = append(out, ss.GetSpans()...)
			}
		}
	}
	return out
}

func (s *sink) first() *coltrace.ExportTraceServiceRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return nil
	}
	return s.requests[0]
}

// grpcCollector is a real OTLP gRPC TraceService (grpc-go, test only).
type grpcCollector struct {
	coltrace.UnimplementedTraceServiceServer
	sink
	reply func(*coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error)
}

func (c *grpcCollector) Export(_ context.Context, r *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.add(r)
	if c.reply != nil {
		return c.reply(r)
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

func startGRPCCollector(t *testing.T, c *grpcCollector) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(srv, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return "http://" + l.Addr().String()
}

// emit ends n spans named name with a few attributes on tp.
func emit(tp trace.TracerProvider, n int, name string, pad int) {
	tr := tp.Tracer("test")
	for i := range n {
		_, sp := tr.Start(context.Background(), name, trace.WithAttributes(
			attribute.Int("pid", i), attribute.String("container_id", "ctr"), attribute.String("pad", strings.Repeat("x", pad))))
		sp.End()
	}
}

func setupOTLP(t *testing.T, endpoint string, env map[string]string) *Tracing {
	t.Helper()
	tr, err := Setup(context.Background(), Config{
		Mode: ModeOTLP, Endpoint: endpoint, SamplingRatePerMillion: 1_000_000, Version: "v9.9.9",
		LookupEnv: mapEnv(env), ExportTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr
}

func mapEnv(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

func TestGRPCExport(t *testing.T) {
	tests := []struct {
		name        string
		spans       int
		pad         int
		reply       func(*coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error)
		wantExport  uint64
		wantDropped uint64
	}{
		{name: "few spans", spans: 3, wantExport: 3},
		// ~1 MiB request: more than the 64 KiB HTTP/2 windows, exercising flow control.
		{name: "large batch beyond flow-control window", spans: 400, pad: 2500, wantExport: 400},
		{name: "collector error status", spans: 5, wantDropped: 5,
			reply: func(*coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
				return nil, status.Error(grpccodes.Unavailable, "overloaded: try later")
			}},
		{name: "partial success", spans: 5, wantExport: 3, wantDropped: 2,
			reply: func(*coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
				return &coltrace.ExportTraceServiceResponse{PartialSuccess: &coltrace.ExportTracePartialSuccess{
					RejectedSpans: 2, ErrorMessage: "two too old"}}, nil
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &grpcCollector{reply: tc.reply}
			ep := startGRPCCollector(t, c)
			tr := setupOTLP(t, ep, nil)
			if _, p := tr.Endpoint(); p != ProtocolGRPC {
				t.Fatalf("protocol = %v, want grpc", p)
			}
			emit(tr.TracerProvider(), tc.spans, "create_container", tc.pad)
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if got := len(c.spans()); got != tc.spans {
				t.Errorf("collector received %d spans, want %d", got, tc.spans)
			}
			if tr.Exported() != tc.wantExport || tr.Dropped() != tc.wantDropped {
				t.Errorf("exported/dropped = %d/%d, want %d/%d", tr.Exported(), tr.Dropped(), tc.wantExport, tc.wantDropped)
			}
			checkResource(t, c.first())
		})
	}
}

// checkResource verifies the resource gomon attaches to every request.
func checkResource(t *testing.T, r *coltrace.ExportTraceServiceRequest) {
	t.Helper()
	if r == nil || len(r.ResourceSpans) == 0 {
		t.Fatal("no request received")
	}
	got := map[string]string{}
	for _, kv := range r.ResourceSpans[0].GetResource().GetAttributes() {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			got[kv.Key] = v.GetStringValue()
		default:
			got[kv.Key] = strconv.FormatInt(v.GetIntValue(), 10)
		}
	}
	want := map[string]string{"service.name": "gomon", "service.version": "v9.9.9", "process.runtime.name": "go",
		"process.pid": strconv.Itoa(osGetpid())}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	for _, k := range []string{"host.name", "process.runtime.version"} {
		if got[k] == "" {
			t.Errorf("resource lacks %s: %v", k, got)
		}
	}
}

func TestHTTPExport(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		chunked     bool
		body        proto.Message
		wantExport  uint64
		wantDropped uint64
	}{
		{name: "ok", status: 200, body: &coltrace.ExportTraceServiceResponse{}, wantExport: 4},
		{name: "ok chunked", status: 200, chunked: true, body: &coltrace.ExportTraceServiceResponse{
			PartialSuccess: &coltrace.ExportTracePartialSuccess{RejectedSpans: 1}}, wantExport: 3, wantDropped: 1},
		{name: "unavailable", status: 503, wantDropped: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s sink
			var gotPath, gotType string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotPath, gotType = r.URL.Path, r.Header.Get("Content-Type")
				b, err := io.ReadAll(r.Body)
				var req coltrace.ExportTraceServiceRequest
				if err == nil {
					err = proto.Unmarshal(b, &req)
				}
				if err != nil || r.Method != http.MethodPost {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				s.add(&req)
				w.Header().Set("Content-Type", "application/x-protobuf")
				if tc.status != 200 {
					http.Error(w, "collector down", tc.status)
					return
				}
				out, _ := proto.Marshal(tc.body)
				if tc.chunked {
					_, _ = w.Write(out[:len(out)/2])
					w.(http.Flusher).Flush()
					_, _ = w.Write(out[len(out)/2:])
					return
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(out)))
				_, _ = w.Write(out)
			}))
			t.Cleanup(srv.Close)
			tr := setupOTLP(t, srv.URL+"/otlp", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
			emit(tr.TracerProvider(), 4, "exec_sync_container", 0)
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if gotPath != "/otlp/v1/traces" || gotType != "application/x-protobuf" {
				t.Errorf("request path %q type %q", gotPath, gotType)
			}
			if got := len(s.spans()); got != 4 {
				t.Errorf("collector received %d spans, want 4", got)
			}
			if tr.Exported() != tc.wantExport || tr.Dropped() != tc.wantDropped {
				t.Errorf("exported/dropped = %d/%d, want %d/%d", tr.Exported(), tr.Dropped(), tc.wantExport, tc.wantDropped)
			}
			checkResource(t, s.first())
		})
	}
}

// TestDeadCollector ends 10 000 spans with nothing listening on the endpoint:
// End must not wait for the network, so almost everything is dropped by the
// time the loop returns, and the queue bounds what is held in memory.
func TestDeadCollector(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // now a closed port

	for _, ep := range []string{"http://" + addr, "http://" + addr + "/v1/traces"} {
		t.Run(ep, func(t *testing.T) {
			tr := setupOTLP(t, ep, nil)
			const n = 10_000
			emit(tr.TracerProvider(), n, "spam", 0)
			// Whatever is not dropped yet is in the queue or the batch being exported.
			if min := uint64(n - DefaultQueueSize - DefaultBatchSize); tr.Dropped() < min {
				t.Errorf("after End of %d spans only %d dropped; End must not wait for the exporter (want >= %d)", n, tr.Dropped(), min)
			}
			if q := len(tr.batch.queue); q > DefaultQueueSize {
				t.Errorf("queue holds %d spans, bound is %d", q, DefaultQueueSize)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if tr.Dropped() != n || tr.Exported() != 0 {
				t.Errorf("dropped/exported = %d/%d, want %d/0", tr.Dropped(), tr.Exported(), n)
			}
			if err := tr.Shutdown(ctx); err != nil {
				t.Errorf("second Shutdown: %v", err)
			}
		})
	}
}

// TestBlackholeShutdownBounded: a collector that accepts but never answers
// holds an export until Shutdown's context ends; Shutdown then returns and
// counts the spans as dropped.
func TestBlackholeShutdownBounded(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				<-stop
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		close(stop)
		conns.Wait()
	})
	tr, err := Setup(context.Background(), Config{Mode: ModeOTLP, Endpoint: "http://" + l.Addr().String(),
		SamplingRatePerMillion: 1_000_000, LookupEnv: mapEnv(nil), ExportTimeout: time.Hour, BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	emit(tr.TracerProvider(), 3, "stuck", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = tr.Shutdown(ctx)
	if tr.Dropped() != 3 {
		t.Errorf("dropped = %d, want 3", tr.Dropped())
	}
}
