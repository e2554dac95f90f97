package exporter

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/gomon-dev/gomon/metrics"
)

// metricsCollector is a real OTLP gRPC MetricsService (grpc-go, test only).
type metricsCollector struct {
	colmetrics.UnimplementedMetricsServiceServer
	mu   sync.Mutex
	reqs []*colmetrics.ExportMetricsServiceRequest
}

func (c *metricsCollector) Export(_ context.Context, r *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

func (c *metricsCollector) last() *colmetrics.ExportMetricsServiceRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		return nil
	}
	return c.reqs[len(c.reqs)-1]
}

func startMetricsCollector(t *testing.T, c *metricsCollector) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	colmetrics.RegisterMetricsServiceServer(srv, c)
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

var (
	testCounter = &metrics.Desc{Name: "gomon.test.bytes", Unit: "By", Kind: metrics.Counter, Help: "Test bytes."}
	testGauge   = &metrics.Desc{Name: "gomon.test.level", Unit: "{thing}", Kind: metrics.Gauge, Help: "Test level."}
	testHist    = &metrics.Desc{Name: "gomon.test.duration", Unit: "s", Kind: metrics.Histogram, Help: "Test durations.",
		Bounds: []float64{0.1, 1}}
)

// testBatch is a batch with one series of each kind.
func testBatch(start time.Time) *metrics.Batch {
	b := metrics.NewBatch()
	b.Counter(testCounter, 12345, start, metrics.Label{Key: "container.id", Value: "c1"}, metrics.Label{Key: "stream", Value: "stdout"})
	b.Gauge(testGauge, 7)
	h := metrics.NewHist(testHist)
	for _, v := range []float64{0.05, 0.5, 0.5, 3} {
		h.Observe(v)
	}
	b.Histogram(testHist, h, start, metrics.Label{Key: "outcome", Value: "exit_zero"})
	return b
}

// checkMetrics checks what a collector received against testBatch.
func checkMetrics(t *testing.T, req *colmetrics.ExportMetricsServiceRequest, start time.Time) {
	t.Helper()
	if req == nil || len(req.ResourceMetrics) != 1 || len(req.ResourceMetrics[0].ScopeMetrics) != 1 {
		t.Fatalf("want one resource with one scope, got %v", req)
	}
	rm := req.ResourceMetrics[0]
	var service string
	for _, kv := range rm.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			service = kv.GetValue().GetStringValue()
		}
	}
	if service != "gomon" {
		t.Errorf("service.name = %q, want gomon", service)
	}
	sm := rm.ScopeMetrics[0]
	if sm.GetScope().GetName() != metricsScope {
		t.Errorf("scope %q", sm.GetScope().GetName())
	}
	byName := map[string]*metricspb.Metric{}
	for _, m := range sm.Metrics {
		byName[m.Name] = m
	}
	c := byName["gomon.test.bytes"]
	if c == nil || c.Unit != "By" || c.Description != "Test bytes." {
		t.Fatalf("counter missing or mislabelled: %v", c)
	}
	sum := c.GetSum()
	if sum == nil || !sum.IsMonotonic || sum.AggregationTemporality != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE ||
		len(sum.DataPoints) != 1 {
		t.Fatalf("counter is not one cumulative monotonic sum point: %v", sum)
	}
	dp := sum.DataPoints[0]
	if dp.GetAsInt() != 12345 || dp.StartTimeUnixNano != uint64(start.UnixNano()) || dp.TimeUnixNano == 0 {
		t.Errorf("counter point %v", dp)
	}
	attrs := map[string]string{}
	for _, kv := range dp.Attributes {
		attrs[kv.Key] = kv.GetValue().GetStringValue()
	}
	if attrs["container.id"] != "c1" || attrs["stream"] != "stdout" || len(attrs) != 2 {
		t.Errorf("counter attributes %v", attrs)
	}
	g := byName["gomon.test.level"].GetGauge()
	if g == nil || len(g.DataPoints) != 1 || g.DataPoints[0].GetAsInt() != 7 || g.DataPoints[0].StartTimeUnixNano != 0 {
		t.Errorf("gauge %v", g)
	}
	h := byName["gomon.test.duration"].GetHistogram()
	if h == nil || len(h.DataPoints) != 1 || h.AggregationTemporality != metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
		t.Fatalf("histogram %v", h)
	}
	hp := h.DataPoints[0]
	if hp.Count != 4 || hp.GetSum() != 4.05 || !equalU64(hp.BucketCounts, []uint64{1, 2, 1}) || len(hp.ExplicitBounds) != 2 ||
		hp.ExplicitBounds[0] != 0.1 || hp.ExplicitBounds[1] != 1 {
		t.Errorf("histogram point %v", hp)
	}
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMetricsExportGRPC sends a batch to a real OTLP/gRPC MetricsService
// and checks every field against what was recorded.
func TestMetricsExportGRPC(t *testing.T) {
	var c metricsCollector
	ep := startMetricsCollector(t, &c)
	e, err := NewMetricsExporter(MetricsConfig{Endpoint: ep, LookupEnv: mapEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, p := e.Endpoint(); p != ProtocolGRPC {
		t.Fatalf("protocol %v, want gRPC", p)
	}
	start := time.Now().Add(-time.Minute)
	if err := e.Export(context.Background(), testBatch(start)); err != nil {
		t.Fatalf("Export: %v", err)
	}
	checkMetrics(t, c.last(), start)
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Export(context.Background(), testBatch(start)); err == nil {
		t.Error("Export after Shutdown succeeded")
	}
}

// TestMetricsExportHTTP sends a batch to an OTLP/HTTP receiver found
// through OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, used as given.
func TestMetricsExportHTTP(t *testing.T) {
	var got *colmetrics.ExportMetricsServiceRequest
	var gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		b, _ := io.ReadAll(r.Body)
		var req colmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got = &req
		out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	e, err := NewMetricsExporter(MetricsConfig{Endpoint: "http://127.0.0.1:1", LookupEnv: mapEnv(map[string]string{
		"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": srv.URL + "/custom/metrics",
		"OTEL_EXPORTER_OTLP_PROTOCOL":         "http/protobuf",
	})})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second)
	if err := e.Export(context.Background(), testBatch(start)); err != nil {
		t.Fatalf("Export: %v", err)
	}
	if gotPath != "/custom/metrics" {
		t.Errorf("path %q, want the metrics endpoint as given", gotPath)
	}
	checkMetrics(t, got, start)
}

func TestResolveMetricsEndpoint(t *testing.T) {
	tests := []struct {
		name, endpoint string
		env            map[string]string
		wantURL        string
		wantProto      Protocol
	}{
		{"tracing flag, gRPC", "http://collector:4317", nil, "http://collector:4317", ProtocolGRPC},
		{"tracing flag, HTTP port", "http://collector:4318", nil, "http://collector:4318/v1/metrics", ProtocolHTTP},
		{"tracing trace URL", "http://collector:4318/v1/traces", nil, "http://collector:4318/v1/metrics", ProtocolHTTP},
		{"metrics endpoint wins", "http://collector:4317", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:9000/x"},
			"http://m:9000/x", ProtocolGRPC},
		{"metrics protocol", "http://collector:9999", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
			"http://collector:9999/v1/metrics", ProtocolHTTP},
		{"generic endpoint", "", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4318"}, "http://g:4318/v1/metrics", ProtocolHTTP},
		{"default", "", nil, DefaultEndpoint, ProtocolGRPC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, p, err := resolveMetricsEndpoint(tc.endpoint, mapEnv(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tc.wantURL || p != tc.wantProto {
				t.Errorf("got %s %v, want %s %v", u, p, tc.wantURL, tc.wantProto)
			}
		})
	}
}

func TestOTLPMetricsRequested(t *testing.T) {
	tests := []struct {
		name    string
		tracing bool
		env     map[string]string
		want    bool
	}{
		{"nothing", true, nil, false},
		{"GOMON_METRICS with tracing", true, map[string]string{"GOMON_METRICS": "otlp"}, true},
		{"GOMON_METRICS without tracing", false, map[string]string{"GOMON_METRICS": "otlp"}, false},
		{"OTEL_METRICS_EXPORTER", false, map[string]string{"OTEL_METRICS_EXPORTER": "otlp"}, true},
		{"metrics endpoint", false, map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318"}, true},
		{"exporter none wins", true, map[string]string{"OTEL_METRICS_EXPORTER": "none", "GOMON_METRICS": "otlp",
			"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318"}, false},
		{"SDK disabled", true, map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_METRICS_EXPORTER": "otlp"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := OTLPMetricsRequested(tc.tracing, mapEnv(tc.env)); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
