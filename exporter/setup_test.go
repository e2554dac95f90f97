package exporter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func TestResolveEndpoint(t *testing.T) {
	tests := []struct {
		name      string
		endpoint  string
		env       map[string]string
		wantURL   string
		wantProto Protocol
		wantErr   bool
	}{
		{name: "default", wantURL: "http://127.0.0.1:4317", wantProto: ProtocolGRPC},
		{name: "crio style", endpoint: "http://10.0.0.1:4317", wantURL: "http://10.0.0.1:4317", wantProto: ProtocolGRPC},
		{name: "bare host:port", endpoint: "collector:5555", wantURL: "http://collector:5555", wantProto: ProtocolGRPC},
		{name: "port 4318 means http", endpoint: "http://localhost:4318", wantURL: "http://localhost:4318/v1/traces", wantProto: ProtocolHTTP},
		{name: "path means http", endpoint: "http://h:80/otlp/v1/traces", wantURL: "http://h:80/otlp/v1/traces", wantProto: ProtocolHTTP},
		{name: "generic protocol env", endpoint: "http://h:9999", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			wantURL: "http://h:9999/v1/traces", wantProto: ProtocolHTTP},
		{name: "traces protocol env wins", endpoint: "http://h:4318",
			env:     map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			wantURL: "http://h:4318", wantProto: ProtocolGRPC},
		{name: "endpoint env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			wantURL: "http://c:4318/v1/traces", wantProto: ProtocolHTTP},
		{name: "traces endpoint env used as given", env: map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:1234/custom",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			wantURL: "http://c:1234/custom", wantProto: ProtocolHTTP},
		{name: "flag beats env", endpoint: "http://flag:4317", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"},
			wantURL: "http://flag:4317", wantProto: ProtocolGRPC},
		{name: "json unsupported", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: true},
		{name: "bad scheme", endpoint: "unix:///run/otel.sock", wantErr: true},
		{name: "no host", endpoint: "http://:4317", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, p, err := resolveEndpoint(tc.endpoint, mapEnv(tc.env))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %v %v", u, p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.String() != tc.wantURL || p != tc.wantProto {
				t.Errorf("got %s %v, want %s %v", u, p, tc.wantURL, tc.wantProto)
			}
		})
	}
}

func TestSetupHTTPSNeedsTLSBuild(t *testing.T) {
	if tlsClient != nil {
		t.Skip("built with gomon_otlp_tls")
	}
	if _, err := Setup(context.Background(), Config{Mode: ModeOTLP, Endpoint: "https://c:4317", LookupEnv: mapEnv(nil)}); err == nil {
		t.Fatal("https endpoint accepted without TLS support")
	}
}

func TestSetupResource(t *testing.T) {
	tests := []struct {
		name, cfgName string
		env           map[string]string
		want          map[string]string
	}{
		{name: "default", want: map[string]string{"service.name": "gomon"}},
		{name: "config", cfgName: "gomon-x", want: map[string]string{"service.name": "gomon-x"}},
		{name: "OTEL_RESOURCE_ATTRIBUTES", cfgName: "gomon-x",
			env:  map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,k8s.node.name=node%201,broken"},
			want: map[string]string{"service.name": "from-attrs", "k8s.node.name": "node 1"}},
		{name: "OTEL_SERVICE_NAME wins",
			env:  map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "svc"},
			want: map[string]string{"service.name": "svc"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Setup(context.Background(), Config{Mode: ModeTree, ServiceName: tc.cfgName, LookupEnv: mapEnv(tc.env)})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tr.Shutdown(context.Background()) }()
			emit(tr.TracerProvider(), 1, "version", 0)
			spans := tr.Spans()
			if len(spans) != 1 {
				t.Fatalf("got %d spans", len(spans))
			}
			set := spans[0].Resource().Set()
			for k, v := range tc.want {
				if got, _ := set.Value(attributeKey(k)); got.String() != v {
					t.Errorf("%s = %q, want %q", k, got.String(), v)
				}
			}
		})
	}
}

func TestSetupGlobalsAndOff(t *testing.T) {
	t.Run("on installs provider and W3C propagators", func(t *testing.T) {
		tr, err := Setup(context.Background(), Config{Mode: ModeTree, LookupEnv: mapEnv(nil)})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tr.Shutdown(context.Background()) }()
		if otel.GetTracerProvider() != tr.TracerProvider() {
			t.Error("global tracer provider not installed")
		}
		fields := otel.GetTextMapPropagator().Fields()
		slices.Sort(fields)
		if strings.Join(fields, ",") != "baggage,traceparent,tracestate" {
			t.Errorf("propagator fields = %v", fields)
		}
	})
	for name, env := range map[string]map[string]string{
		"ModeOff":           nil,
		"OTEL_SDK_DISABLED": {"OTEL_SDK_DISABLED": "true"},
	} {
		t.Run(name, func(t *testing.T) {
			mode := ModeOff
			if env != nil {
				mode = ModeOTLP
			}
			tr, err := Setup(context.Background(), Config{Mode: mode, LookupEnv: mapEnv(env)})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Mode() != ModeOff {
				t.Errorf("mode = %v", tr.Mode())
			}
			_, sp := otel.Tracer("x").Start(context.Background(), "noop")
			if sp.IsRecording() {
				t.Error("span records with tracing off")
			}
			sp.End()
			if err := tr.Shutdown(context.Background()); err != nil || tr.Dropped() != 0 || tr.Spans() != nil {
				t.Errorf("off: shutdown %v dropped %d spans %v", err, tr.Dropped(), tr.Spans())
			}
		})
	}
}

// TestSampler: a sampled-out caller yields no spans; a sampled caller yields
// spans in its trace with its span as parent; roots follow the ratio. Uses
// ModeStdout, which also checks the JSON-lines output.
func TestSampler(t *testing.T) {
	parent := func(sampled bool) context.Context {
		flags := "00"
		if sampled {
			flags = "01"
		}
		carrier := propagation.MapCarrier{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-" + flags}
		return propagation.TraceContext{}.Extract(context.Background(), carrier)
	}
	tests := []struct {
		name      string
		rate      int
		ctx       context.Context
		wantSpans int
		wantTrace string
	}{
		{name: "sampled remote parent", rate: 0, ctx: parent(true), wantSpans: 2, wantTrace: "4bf92f3577b34da6a3ce929d0e0e4736"},
		{name: "sampled-out remote parent, rate 1e6", rate: 1_000_000, ctx: parent(false), wantSpans: 0},
		{name: "root, rate 0", rate: 0, ctx: context.Background(), wantSpans: 0},
		{name: "root, rate 1e6", rate: 1_000_000, ctx: context.Background(), wantSpans: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			tr, err := Setup(context.Background(), Config{Mode: ModeStdout, Out: &out, SamplingRatePerMillion: tc.rate, LookupEnv: mapEnv(nil)})
			if err != nil {
				t.Fatal(err)
			}
			tracer := tr.TracerProvider().Tracer("rpc")
			ctx, root := tracer.Start(tc.ctx, "create_container", trace.WithSpanKind(trace.SpanKindServer))
			_, child := tracer.Start(ctx, "promise")
			child.End()
			root.End()
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			var lines []jsonSpan
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				var js jsonSpan
				if err := json.Unmarshal(sc.Bytes(), &js); err != nil {
					t.Fatalf("bad json line %q: %v", sc.Text(), err)
				}
				lines = append(lines, js)
			}
			if len(lines) != tc.wantSpans {
				t.Fatalf("got %d spans, want %d: %s", len(lines), tc.wantSpans, out.String())
			}
			if tc.wantSpans == 0 {
				return
			}
			byName := map[string]jsonSpan{}
			for _, js := range lines {
				byName[js.Name] = js
			}
			r, c := byName["create_container"], byName["promise"]
			if tc.wantTrace != "" {
				if r.TraceID != tc.wantTrace || r.ParentSpanID != "00f067aa0ba902b7" {
					t.Errorf("root trace %s parent %s, want the remote caller's", r.TraceID, r.ParentSpanID)
				}
			}
			if c.TraceID != r.TraceID || c.ParentSpanID != r.SpanID || r.Kind != "server" || r.Service != "gomon" {
				t.Errorf("bad span lines: %+v", lines)
			}
		})
	}
}

func TestErrorHandlerRateLimited(t *testing.T) {
	var buf bytes.Buffer
	h := newErrorHandler(slog.New(slog.NewTextHandler(&buf, nil)), 1<<62)
	for range 5 {
		h.Handle(errString("collector down"))
	}
	if n := strings.Count(buf.String(), "collector down"); n != 1 {
		t.Errorf("logged %d times, want 1: %s", n, buf.String())
	}
	if h.suppressed.Load() != 4 {
		t.Errorf("suppressed = %d, want 4", h.suppressed.Load())
	}
}

type errString string

func (e errString) Error() string { return string(e) }
