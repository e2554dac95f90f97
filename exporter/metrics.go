package exporter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gomon-dev/gomon/metrics"
)

// OTLP metrics. gomon's metrics are collected by package metrics (a
// Reader calls Export once per interval and at shutdown); this exporter
// encodes them as one ExportMetricsServiceRequest by hand and sends it
// with the span exporter's transport (one short-lived connection per
// export, OTLP/gRPC or OTLP/HTTP), for the same reason the span exporter
// exists: the OTel metric SDK and its stock OTLP exporter cost more
// resident memory than the per-pod budget allows (exporter/MEASUREMENTS.md,
// "Metrics").

// grpcMetricsPath is the gRPC method of OTLP metrics export.
const grpcMetricsPath = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// metricsScope is the instrumentation scope of gomon's metrics.
const metricsScope = "github.com/gomon-dev/gomon"

// Field numbers of opentelemetry-proto's metrics messages
// (opentelemetry/proto/metrics/v1/metrics.proto).
const (
	fReqResourceMetrics = 1
	fRMResource         = 1
	fRMScopeMetrics     = 2
	fSMScope            = 1
	fSMMetrics          = 2
	fMetricName         = 1
	fMetricDescription  = 2
	fMetricUnit         = 3
	fMetricGauge        = 5
	fMetricSum          = 7
	fMetricHistogram    = 9
	fDataPoints         = 1
	fTemporality        = 2
	fIsMonotonic        = 3
	fNDPStart           = 2
	fNDPTime            = 3
	fNDPAsInt           = 6
	fNDPAttributes      = 7
	fHDPStart           = 2
	fHDPTime            = 3
	fHDPCount           = 4
	fHDPSum             = 5
	fHDPBucketCounts    = 6
	fHDPExplicitBounds  = 7
	fHDPAttributes      = 9
	temporalityCumul    = 2 // AGGREGATION_TEMPORALITY_CUMULATIVE
)

// MetricsConfig configures the OTLP metrics exporter.
type MetricsConfig struct {
	// Endpoint is the tracing endpoint (--tracing-endpoint), used unless
	// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is set; see NewMetricsExporter.
	Endpoint string
	// ServiceName and Version are as in Config.
	ServiceName, Version string
	// Timeout bounds one export, dial included; 0 means
	// OTEL_METRIC_EXPORT_TIMEOUT (milliseconds), else metrics.DefaultExportTimeout.
	Timeout time.Duration
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// OTLPMetricsRequested reports whether the environment asks for OTLP
// metrics: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT set, or
// OTEL_METRICS_EXPORTER=otlp, or, with tracing on, GOMON_METRICS=otlp.
// OTEL_METRICS_EXPORTER=none and OTEL_SDK_DISABLED=true turn it off.
// ignored, when not empty, says why a GOMON_METRICS setting was not used
// (another value than otlp, or otlp without tracing and nothing else
// asking for OTLP metrics), for the caller's log.
func OTLPMetricsRequested(tracing bool, lookup func(string) (string, bool)) (on bool, ignored string) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	on = otlpMetricsOn(tracing, get)
	switch gm := get("GOMON_METRICS"); {
	case gm == "":
	case !strings.EqualFold(gm, "otlp"):
		ignored = fmt.Sprintf("GOMON_METRICS=%q is not a known output (otlp)", gm)
	case !tracing && !on:
		ignored = "GOMON_METRICS=otlp needs --enable-tracing (OTEL_METRICS_EXPORTER=otlp exports without it)"
	}
	return on, ignored
}

// otlpMetricsOn is OTLPMetricsRequested's answer; get reads a variable,
// trimmed.
func otlpMetricsOn(tracing bool, get func(string) string) bool {
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(get("OTEL_METRICS_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	if get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != "" {
		return true
	}
	return tracing && strings.EqualFold(get("GOMON_METRICS"), "otlp")
}

// MetricsExporter sends metric batches over OTLP. It implements
// metrics.Exporter: only the metrics Reader's goroutine calls it.
type MetricsExporter struct {
	e   *otlpExporter
	res *resource.Resource
	buf []byte
}

var _ metrics.Exporter = (*MetricsExporter)(nil)

// NewMetricsExporter builds the exporter. The endpoint is
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (used as given), else cfg.Endpoint,
// else OTEL_EXPORTER_OTLP_ENDPOINT, else http://127.0.0.1:4317; the
// protocol is OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL, else as for spans (port 4318 or a /v1/...
// path means OTLP/HTTP, whose path becomes /v1/metrics).
func NewMetricsExporter(cfg MetricsConfig) (*MetricsExporter, error) {
	lookup := cfg.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	u, p, err := resolveMetricsEndpoint(cfg.Endpoint, lookup)
	if err != nil {
		return nil, err
	}
	timeout := orEnvMillis(cfg.Timeout, lookup, "OTEL_METRIC_EXPORT_TIMEOUT")
	if timeout <= 0 {
		timeout = metrics.DefaultExportTimeout
	}
	e, err := newOTLPExporter(u, p, timeout, userAgent(cfg.Version))
	if err != nil {
		return nil, err
	}
	if p == ProtocolGRPC {
		e.path = grpcMetricsPath
	}
	res := buildResource(Config{ServiceName: cfg.ServiceName, Version: cfg.Version}, lookup)
	return &MetricsExporter{e: e, res: res}, nil
}

// Endpoint returns the collector address and protocol in use.
func (m *MetricsExporter) Endpoint() (string, Protocol) {
	return m.e.scheme + "://" + m.e.authority + m.e.path, m.e.protocol
}

// Export encodes b as one ExportMetricsServiceRequest and sends it.
func (m *MetricsExporter) Export(ctx context.Context, b *metrics.Batch) error {
	if m.e.stopped.Load() {
		return errors.New("otlp metrics exporter is shut down")
	}
	if n := metricsSizeHint(m.res, b); cap(m.buf) < n {
		// Once, at the first export: grown by appends, the buffer would
		// leave its smaller copies behind as garbage.
		m.buf = make([]byte, 0, n)
	}
	m.buf = encodeMetrics(m.buf[:0], m.res, b)
	defer func() {
		if cap(m.buf) > maxKeptBuffer {
			m.buf = nil // an idle daemon should not pin a large buffer
		}
	}()
	resp, err := m.e.send(ctx, m.buf)
	if err != nil {
		return fmt.Errorf("otlp %s metrics export to %s: %w", m.e.protocol, m.e.addr, err)
	}
	res, err := decodeResponse(resp)
	if err != nil {
		return fmt.Errorf("decode otlp metrics response: %w", err)
	}
	if res.rejected > 0 || res.message != "" {
		return fmt.Errorf("collector rejected %d metric data points: %s", res.rejected, res.message)
	}
	return nil
}

// Shutdown stops the exporter; there is no connection to close.
func (m *MetricsExporter) Shutdown(ctx context.Context) error { return m.e.Shutdown(ctx) }

// resolveMetricsEndpoint applies NewMetricsExporter's rules.
func resolveMetricsEndpoint(endpoint string, lookup func(string) (string, bool)) (*url.URL, Protocol, error) {
	exactURL := false
	if v, ok := lookup("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"); ok && strings.TrimSpace(v) != "" {
		endpoint, exactURL = v, true
	} else if endpoint == "" {
		if v, ok := lookup("OTEL_EXPORTER_OTLP_ENDPOINT"); ok && v != "" {
			endpoint = v
		} else {
			endpoint = DefaultEndpoint
		}
	} else if strings.HasSuffix(strings.TrimSpace(endpoint), "/v1/traces") {
		// The tracing endpoint as OTLP/HTTP's trace URL: the same
		// collector's metrics URL.
		endpoint = strings.TrimSuffix(strings.TrimSpace(endpoint), "/v1/traces") + "/v1/metrics"
	}
	u, p, err := parseEndpoint(endpoint, exactURL, lookup, "METRICS", "/v1/metrics")
	if err != nil {
		return nil, 0, fmt.Errorf("metrics endpoint: %w", err)
	}
	return u, p, nil
}

// encodeMetrics appends the ExportMetricsServiceRequest for b to buf:
// one resource, one scope, one Metric per family. Counters are cumulative
// monotonic Sums and gauges Gauges, both of integers (every gomon counter
// and gauge is one); histograms are cumulative explicit-bucket histograms.
func encodeMetrics(buf []byte, res *resource.Resource, b *metrics.Batch) []byte {
	now := unixNano(b.Time)
	return appendMsg(buf, fReqResourceMetrics, func(buf []byte) []byte {
		buf = appendMsg(buf, fRMResource, func(buf []byte) []byte {
			iter := res.Iter()
			for iter.Next() {
				buf = appendKeyValue(buf, fResAttributes, iter.Attribute(), 0)
			}
			return buf
		})
		return appendMsg(buf, fRMScopeMetrics, func(buf []byte) []byte {
			buf = appendMsg(buf, fSMScope, func(buf []byte) []byte {
				return appendString(buf, fScopeName, metricsScope)
			})
			for _, f := range b.Families() {
				if len(f.Points) == 0 {
					continue
				}
				buf = appendMsg(buf, fSMMetrics, func(buf []byte) []byte { return appendMetric(buf, f, now) })
			}
			return buf
		})
	})
}

// metricsSizeHint is a close upper estimate of encodeMetrics' size for b:
// the strings' lengths plus generous room for tags, lengths and numbers.
func metricsSizeHint(res *resource.Resource, b *metrics.Batch) int {
	n := 64 + len(metricsScope)
	iter := res.Iter()
	for iter.Next() {
		kv := iter.Attribute()
		n += 24 + len(kv.Key)
		if kv.Value.Type() == attribute.STRING {
			n += len(kv.Value.AsString())
		}
	}
	for _, f := range b.Families() {
		d := f.Desc
		n += 24 + len(d.Name) + len(d.Help) + len(d.Unit)
		for _, p := range f.Points {
			n += 48 + 10*len(p.Hist.Counts) + 10*len(d.Bounds)
			for _, l := range p.Labels {
				n += 12 + len(l.Key) + len(l.Value)
			}
		}
	}
	return n
}

func appendMetric(buf []byte, f metrics.Family, now uint64) []byte {
	d := f.Desc
	buf = appendString(buf, fMetricName, d.Name)
	buf = appendString(buf, fMetricDescription, d.Help)
	buf = appendString(buf, fMetricUnit, d.Unit)
	switch d.Kind {
	case metrics.Counter:
		return appendMsg(buf, fMetricSum, func(buf []byte) []byte {
			for _, p := range f.Points {
				buf = appendMsg(buf, fDataPoints, func(buf []byte) []byte { return appendNumberPoint(buf, p, now) })
			}
			buf = appendVarint(buf, fTemporality, temporalityCumul)
			return appendBoolAlways(buf, fIsMonotonic, true)
		})
	case metrics.Gauge:
		return appendMsg(buf, fMetricGauge, func(buf []byte) []byte {
			for _, p := range f.Points {
				p.Start = time.Time{} // a gauge has no start
				buf = appendMsg(buf, fDataPoints, func(buf []byte) []byte { return appendNumberPoint(buf, p, now) })
			}
			return buf
		})
	default:
		return appendMsg(buf, fMetricHistogram, func(buf []byte) []byte {
			for _, p := range f.Points {
				buf = appendMsg(buf, fDataPoints, func(buf []byte) []byte { return appendHistPoint(buf, d, p, now) })
			}
			return appendVarint(buf, fTemporality, temporalityCumul)
		})
	}
}

func appendNumberPoint(buf []byte, p metrics.Point, now uint64) []byte {
	buf = appendFixed64(buf, fNDPStart, unixNano(p.Start))
	buf = appendFixed64(buf, fNDPTime, now)
	buf = protowire.AppendTag(buf, fNDPAsInt, protowire.Fixed64Type)
	buf = protowire.AppendFixed64(buf, uint64(int64(math.Round(p.Value)))) //nolint:gosec // sfixed64 is the two's complement
	return appendLabels(buf, fNDPAttributes, p.Labels)
}

func appendHistPoint(buf []byte, d *metrics.Desc, p metrics.Point, now uint64) []byte {
	buf = appendFixed64(buf, fHDPStart, unixNano(p.Start))
	buf = appendFixed64(buf, fHDPTime, now)
	buf = protowire.AppendTag(buf, fHDPCount, protowire.Fixed64Type)
	buf = protowire.AppendFixed64(buf, p.Hist.Count)
	buf = protowire.AppendTag(buf, fHDPSum, protowire.Fixed64Type)
	buf = protowire.AppendFixed64(buf, math.Float64bits(p.Hist.Sum))
	buf = protowire.AppendTag(buf, fHDPBucketCounts, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(8*len(p.Hist.Counts)))
	for _, c := range p.Hist.Counts {
		buf = protowire.AppendFixed64(buf, c)
	}
	buf = protowire.AppendTag(buf, fHDPExplicitBounds, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(8*len(d.Bounds)))
	for _, v := range d.Bounds {
		buf = protowire.AppendFixed64(buf, math.Float64bits(v))
	}
	return appendLabels(buf, fHDPAttributes, p.Labels)
}

func appendLabels(buf []byte, num protowire.Number, labels []metrics.Label) []byte {
	for _, l := range labels {
		buf = appendMsg(buf, num, func(buf []byte) []byte {
			buf = appendStringAlways(buf, fKVKey, l.Key)
			return appendMsg(buf, fKVValue, func(buf []byte) []byte {
				return appendStringAlways(buf, fAnyString, l.Value)
			})
		})
	}
	return buf
}
