// Package exporter sets up gomon's OpenTelemetry tracing: the SDK tracer
// provider, sampler, batching, the OTLP export, W3C propagation and the slog
// bridge that turns log records into span events. It is the only gomon
// package that imports the OTel SDK; everything else uses the OTel API.
//
// # Why a hand-written OTLP exporter
//
// gomon runs once per pod, so resident memory is a feature (docs/architecture.md,
// "Performance budgets"). The OTel SDK's sdk/trace is used as is (provider,
// samplers, span recording), but the stock OTLP exporters are not: the stock
// otlptracegrpc exporter (grpc-go plus the generated OTLP protobuf types) added
// about 8.6 MiB VmRSS to a small test program after exporting a few spans, and
// otlptracehttp about 7.8 MiB; even a net/http client adds about 2.4 MiB of
// touched pages. This package instead encodes ExportTraceServiceRequest by hand
// with protowire and speaks the wire protocol itself over one short-lived TCP
// connection per batch: OTLP/gRPC as a single unary call over cleartext HTTP/2
// (or TLS for https endpoints), or OTLP/HTTP as one HTTP/1.1 POST of
// application/x-protobuf. The measurements are in exporter/MEASUREMENTS.md.
//
// # Endpoint and protocol
//
// The endpoint is Config.Endpoint, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// else OTEL_EXPORTER_OTLP_ENDPOINT, else http://127.0.0.1:4317. A bare host:port means http://host:port. The
// protocol is OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL ("grpc" or "http/protobuf"); without either,
// an endpoint on port 4318 or with a path ending in /v1/traces means
// OTLP/HTTP, anything else OTLP/gRPC. For OTLP/HTTP a path that does not end
// in /v1/traces gets it appended, except for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// which is used as given. https endpoints (TLS with the system roots) need
// a build with -tags gomon_otlp_tls; the default build rejects them in Setup.
//
// # Sampling, batching and failure
//
// Root spans are sampled with probability SamplingRatePerMillion/1e6 (like
// CRI-O's and the kubelet's flag); spans with a parent follow the parent's
// sampled flag, so a sampled-out caller yields no spans at all. Finished spans
// go to a bounded queue (Config.QueueSize, default 2048) drained by one
// goroutine in batches (default 512 spans or 5 s, OTEL_BSP_SCHEDULE_DELAY);
// span End never blocks and never waits for the network. When the queue is
// full or an export fails (default timeout 5 s, OTEL_BSP_EXPORT_TIMEOUT; no
// retries), the spans are dropped and counted
// (Tracing.Dropped); errors are logged through the slog logger, rate limited.
// FlushSoon (called by gomon when a container's exit is recorded) starts an
// export of everything queued without waiting for the batch timer.
//
// # Limits
//
// A broken or hostile collector costs at most one failed export per batch:
// its spans are counted as dropped, and nothing it sends is buffered beyond
// these bounds (exporter/LIMITS.md lists them with the rest):
//
//   - queued spans: Config.QueueSize (default 2048); spans per export:
//     Config.BatchSize (default 512); a full queue drops new spans;
//   - one export, dial included: Config.ExportTimeout (default 5 s);
//   - OTLP/HTTP response head (status lines, headers, trailers):
//     MaxHTTPResponseHead (64 KiB); one chunk-size line: 4 KiB;
//   - response body (OTLP/HTTP) or gRPC response message: MaxResponseBody
//     (1 MiB);
//   - everything read from the collector for one export, framing included:
//     MaxResponseBytes (4 MiB);
//   - HTTP/2: frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE,
//     read into one reused buffer), a header block and its decoded header
//     list of at most 64 KiB (SETTINGS_MAX_HEADER_LIST_SIZE), at most 100
//     SETTINGS and PING frames answered per export, flow-control windows
//     above 2^31-1 refused;
//   - a panic in the export path is recovered in the exporting goroutine:
//     the batch is dropped and counted, the panic is logged at error level
//     with its stack (at most once per 10 s), and export continues.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Mode selects where spans go.
type Mode int

const (
	// ModeOff disables tracing: a no-op provider, no goroutine, no propagator.
	ModeOff Mode = iota
	// ModeOTLP exports spans to an OTLP collector (gRPC or HTTP).
	ModeOTLP
	// ModeStdout writes finished spans as JSON lines to Config.Out.
	ModeStdout
	// ModeTree keeps finished spans in memory for RenderTree (gomon run --trace).
	ModeTree
)

// String returns the mode's lower-case name.
func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeOTLP:
		return "otlp"
	case ModeStdout:
		return "stdout"
	case ModeTree:
		return "tree"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// Defaults used when the corresponding Config field is zero.
const (
	DefaultEndpoint      = "http://127.0.0.1:4317"
	DefaultServiceName   = "gomon"
	DefaultQueueSize     = 2048
	DefaultBatchSize     = 512
	DefaultBatchTimeout  = 5 * time.Second
	DefaultExportTimeout = 5 * time.Second
	// MaxTreeSpans bounds the spans ModeTree keeps; later ones are dropped.
	MaxTreeSpans = 100_000
	// errorLogInterval is the minimum time between two logged OTel errors.
	errorLogInterval = 10 * time.Second
)

// Config is the tracing configuration, filled from flags by the caller; the
// OTEL_* environment is read by Setup through LookupEnv. To add a knob, add a
// field here with its default in the Defaults block and document which env
// variable (if any) overrides it; to deprecate one, keep the field, ignore it
// and log once in Setup.
type Config struct {
	// Mode selects the span destination; ModeOff disables tracing.
	Mode Mode
	// Endpoint is the collector URL (see the package doc for the default and
	// how the protocol is chosen).
	Endpoint string
	// SamplingRatePerMillion is the probability, in millionths, that a root
	// span is sampled: ParentBased(TraceIDRatioBased(n/1e6)). 0 samples no
	// root spans (children of sampled remote parents are still recorded);
	// 1_000_000 samples all. ModeTree ignores it and samples everything.
	SamplingRatePerMillion int
	// ServiceName is service.name unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES set it; default "gomon".
	ServiceName string
	// Version is service.version; omitted when empty.
	Version string
	// Logger receives export errors (rate limited); nil discards them.
	Logger *slog.Logger
	// Out is the ModeStdout destination; nil means os.Stdout.
	Out io.Writer
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)

	// QueueSize bounds the finished spans waiting for export (default 2048).
	QueueSize int
	// BatchSize is the maximum spans per export (default 512).
	BatchSize int
	// BatchTimeout is how long a partial batch waits before export; when
	// zero, OTEL_BSP_SCHEDULE_DELAY (milliseconds), else 5 s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one export, dial included; when zero,
	// OTEL_BSP_EXPORT_TIMEOUT (milliseconds), else 5 s.
	ExportTimeout time.Duration
}

// Tracing is an installed tracing setup. Its methods are safe for concurrent use.
type Tracing struct {
	mode     Mode
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil in ModeOff
	batch    *batcher                 // ModeOTLP, ModeStdout
	rec      *recorder                // ModeTree
	// Endpoint and protocol actually used (ModeOTLP only).
	endpoint string
	protocol Protocol

	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the tracer provider for cfg and installs it globally together
// with the W3C TraceContext+Baggage propagator and an OTel error handler that
// logs through cfg.Logger. With ModeOff (or OTEL_SDK_DISABLED=true) it only
// installs a no-op provider. ctx is not retained.
func Setup(ctx context.Context, cfg Config) (*Tracing, error) {
	_ = ctx // nothing in setup blocks: the exporter dials per batch
	lookup := cfg.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, ok := lookup("OTEL_SDK_DISABLED"); ok && strings.EqualFold(strings.TrimSpace(v), "true") {
		cfg.Mode = ModeOff
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.BatchTimeout = orEnvMillis(cfg.BatchTimeout, lookup, "OTEL_BSP_SCHEDULE_DELAY")
	cfg.ExportTimeout = orEnvMillis(cfg.ExportTimeout, lookup, "OTEL_BSP_EXPORT_TIMEOUT")
	if cfg.Mode == ModeOff {
		tp := noop.NewTracerProvider()
		otel.SetTracerProvider(tp)
		return &Tracing{mode: ModeOff, provider: tp}, nil
	}

	t := &Tracing{mode: cfg.Mode}
	var proc sdktrace.SpanProcessor
	onError := func(err error) { otel.Handle(err) }
	switch cfg.Mode {
	case ModeOTLP:
		u, p, err := resolveEndpoint(cfg.Endpoint, lookup)
		if err != nil {
			return nil, err
		}
		t.endpoint, t.protocol = u.String(), p
		exp, err := newOTLPExporter(u, p, orDuration(cfg.ExportTimeout, DefaultExportTimeout), userAgent(cfg.Version))
		if err != nil {
			return nil, err
		}
		t.batch = newBatcherFromConfig(exp, cfg, onError)
		proc = t.batch
	case ModeStdout:
		out := cfg.Out
		if out == nil {
			out = os.Stdout
		}
		t.batch = newBatcherFromConfig(newJSONExporter(out), cfg, onError)
		proc = t.batch
	case ModeTree:
		t.rec = &recorder{limit: MaxTreeSpans}
		proc = t.rec
	default:
		return nil, fmt.Errorf("unknown tracing mode %d", cfg.Mode)
	}

	sampler := sdktrace.ParentBased(rootSampler(cfg.SamplingRatePerMillion))
	if cfg.Mode == ModeTree {
		sampler = sdktrace.AlwaysSample()
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithResource(buildResource(cfg, lookup)),
		sdktrace.WithSampler(sampler),
		sdktrace.WithSpanProcessor(proc),
	)
	t.provider = t.sdk
	otel.SetTracerProvider(t.sdk)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(newErrorHandler(logger, errorLogInterval))
	return t, nil
}

func newBatcherFromConfig(exp sdktrace.SpanExporter, cfg Config, onError func(error)) *batcher {
	return newBatcher(exp,
		orInt(cfg.QueueSize, DefaultQueueSize),
		orInt(cfg.BatchSize, DefaultBatchSize),
		orDuration(cfg.BatchTimeout, DefaultBatchTimeout),
		orDuration(cfg.ExportTimeout, DefaultExportTimeout),
		onError)
}

func rootSampler(perMillion int) sdktrace.Sampler {
	switch {
	case perMillion >= 1_000_000:
		return sdktrace.AlwaysSample()
	case perMillion <= 0:
		return sdktrace.NeverSample()
	default:
		return sdktrace.TraceIDRatioBased(float64(perMillion) / 1e6)
	}
}

// TracerProvider returns the installed provider (a no-op one in ModeOff).
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Mode returns the mode in effect (ModeOff if OTEL_SDK_DISABLED forced it).
func (t *Tracing) Mode() Mode { return t.mode }

// Endpoint returns the collector URL and protocol in use (ModeOTLP only).
func (t *Tracing) Endpoint() (string, Protocol) { return t.endpoint, t.protocol }

// Shutdown flushes pending spans, bounded by ctx, and stops the exporter.
// Later calls return the first call's result.
func (t *Tracing) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		if t.sdk != nil {
			if err := t.sdk.Shutdown(ctx); err != nil {
				t.shutdownErr = fmt.Errorf("shut down tracer provider: %w", err)
			}
		}
	})
	return t.shutdownErr
}

// FlushSoon asks for every finished span to be exported now, without
// waiting and without ever blocking (a dead collector costs the export's
// own timeout, in the exporter's goroutine). Requests made while one is
// pending coalesce. gomon calls it when a container's exit is recorded:
// the kubelet may SIGKILL every process in the pod's cgroup a second or
// two after the pod's last container stops, long before the batch timer.
func (t *Tracing) FlushSoon() {
	if t.batch != nil {
		t.batch.FlushSoon()
	}
}

// ForceFlush exports every finished span now, bounded by ctx.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return fmt.Errorf("flush tracer provider: %w", err)
	}
	return nil
}

// Spans returns the finished spans recorded so far (ModeTree only; nil otherwise).
func (t *Tracing) Spans() []sdktrace.ReadOnlySpan {
	if t.rec == nil {
		return nil
	}
	return t.rec.spans()
}

// Dropped returns how many sampled spans were lost: queue full, export
// failed, rejected by the collector, or still queued when Shutdown ended.
func (t *Tracing) Dropped() uint64 {
	switch {
	case t.batch != nil:
		return t.batch.dropped.Load()
	case t.rec != nil:
		return t.rec.dropped.Load()
	}
	return 0
}

// Exported returns how many spans were delivered (ModeOTLP, ModeStdout).
func (t *Tracing) Exported() uint64 {
	if t.batch == nil {
		return 0
	}
	return t.batch.exported.Load()
}

// resolveEndpoint applies the rules in the package doc.
func resolveEndpoint(endpoint string, lookup func(string) (string, bool)) (*url.URL, Protocol, error) {
	exactURL := false // a signal-specific URL is used as given (OTLP spec)
	if endpoint == "" {
		if v, ok := lookup("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); ok && v != "" {
			endpoint, exactURL = v, true
		} else if v, ok := lookup("OTEL_EXPORTER_OTLP_ENDPOINT"); ok && v != "" {
			endpoint = v
		} else {
			endpoint = DefaultEndpoint
		}
	}
	return parseEndpoint(endpoint, exactURL, lookup, "TRACES", "/v1/traces")
}

// parseEndpoint parses the endpoint of one signal ("TRACES", "METRICS",
// whose OTLP/HTTP path is sigPath) and chooses its protocol; exactURL
// keeps an OTLP/HTTP path as given.
func parseEndpoint(endpoint string, exactURL bool, lookup func(string) (string, bool), signal, sigPath string) (*url.URL, Protocol, error) {
	raw := strings.TrimSpace(endpoint)
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("parse tracing endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, 0, fmt.Errorf("tracing endpoint %q: scheme must be http or https", endpoint)
	}
	if u.Hostname() == "" {
		return nil, 0, fmt.Errorf("tracing endpoint %q: missing host", endpoint)
	}

	proto := ProtocolGRPC
	env, ok := lookup("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL")
	if !ok || env == "" {
		env, ok = lookup("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch {
	case ok && env != "":
		switch strings.TrimSpace(env) {
		case "grpc":
			proto = ProtocolGRPC
		case "http/protobuf":
			proto = ProtocolHTTP
		default:
			return nil, 0, fmt.Errorf("otlp protocol %q not supported (want grpc or http/protobuf)", env)
		}
	case u.Port() == "4318" || strings.HasSuffix(u.Path, sigPath):
		proto = ProtocolHTTP
	}
	if proto == ProtocolHTTP && !exactURL && !strings.HasSuffix(u.Path, sigPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + sigPath
		u.RawPath = ""
	}
	return u, proto, nil
}

// buildResource assembles the resource; OTEL_RESOURCE_ATTRIBUTES overrides
// the defaults and OTEL_SERVICE_NAME overrides everything for service.name.
func buildResource(cfg Config, lookup func(string) (string, bool)) *resource.Resource {
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	attrs := []attribute.KeyValue{
		attribute.String("service.name", name),
		attribute.Int("process.pid", os.Getpid()),
		attribute.String("process.runtime.name", "go"),
		attribute.String("process.runtime.version", runtime.Version()),
	}
	if host, err := os.Hostname(); err == nil {
		attrs = append(attrs, attribute.String("host.name", host))
	}
	if cfg.Version != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.Version))
	}
	if v, ok := lookup("OTEL_RESOURCE_ATTRIBUTES"); ok {
		attrs = append(attrs, parseResourceAttributes(v)...)
	}
	if v, ok := lookup("OTEL_SERVICE_NAME"); ok && strings.TrimSpace(v) != "" {
		attrs = append(attrs, attribute.String("service.name", strings.TrimSpace(v)))
	}
	// NewSchemaless keeps the last value of duplicate keys.
	return resource.NewSchemaless(attrs...)
}

// parseResourceAttributes parses "k1=v1,k2=v2" with percent-encoded values;
// malformed entries are skipped.
func parseResourceAttributes(s string) []attribute.KeyValue {
	var out []attribute.KeyValue
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		if dv, err := url.PathUnescape(strings.TrimSpace(v)); err == nil {
			v = dv
		} else {
			v = strings.TrimSpace(v)
		}
		out = append(out, attribute.String(k, v))
	}
	return out
}

func userAgent(version string) string {
	if version == "" {
		return "gomon"
	}
	return "gomon/" + version
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// orEnvMillis returns v if set, else the positive number of milliseconds
// in env variable name, else 0 (the default applies); malformed values are
// ignored, as the OTel SDK does.
func orEnvMillis(v time.Duration, lookup func(string) (string, bool), name string) time.Duration {
	if v > 0 {
		return v
	}
	s, ok := lookup(name)
	if !ok {
		return 0
	}
	ms, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || ms <= 0 || ms > int64(24*time.Hour/time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

func orDuration(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// errorHandler logs OTel errors at most once per interval, reporting how
// many were suppressed in between. Export panics have their own interval,
// so ordinary export errors never hide one.
type errorHandler struct {
	logger     *slog.Logger
	interval   time.Duration
	mu         sync.Mutex
	last       time.Time // guarded by mu
	lastPanic  time.Time // guarded by mu
	suppressed atomic.Uint64
}

func newErrorHandler(logger *slog.Logger, interval time.Duration) *errorHandler {
	return &errorHandler{logger: logger, interval: interval}
}

// Handle implements otel.ErrorHandler.
func (h *errorHandler) Handle(err error) {
	if err == nil {
		return
	}
	var panicked *ExportPanicError
	isPanic := errors.As(err, &panicked)
	now := time.Now()
	h.mu.Lock()
	last := &h.last
	if isPanic {
		last = &h.lastPanic
	}
	if !last.IsZero() && now.Sub(*last) < h.interval {
		h.mu.Unlock()
		h.suppressed.Add(1)
		return
	}
	*last = now
	h.mu.Unlock()
	if isPanic {
		h.logger.LogAttrs(context.Background(), slog.LevelError, "span export panicked; batch dropped",
			slog.String("panic", fmt.Sprint(panicked.Value)), slog.String("stack", panicked.Stack),
			slog.Uint64("suppressed", h.suppressed.Swap(0)))
		return
	}
	var partial *PartialSuccessError
	level := slog.LevelWarn
	if errors.As(err, &partial) {
		level = slog.LevelInfo
	}
	h.logger.LogAttrs(context.Background(), level, "tracing error",
		slog.String("error", err.Error()),
		slog.Uint64("suppressed", h.suppressed.Swap(0)))
}
