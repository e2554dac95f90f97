package exporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// Protocol is the OTLP transport.
type Protocol int

const (
	// ProtocolGRPC is OTLP/gRPC: unary TraceService/Export over HTTP/2.
	ProtocolGRPC Protocol = iota
	// ProtocolHTTP is OTLP/HTTP with binary protobuf bodies (POST …/v1/traces).
	ProtocolHTTP
)

// String returns the OTEL_EXPORTER_OTLP_PROTOCOL spelling.
func (p Protocol) String() string {
	if p == ProtocolHTTP {
		return "http/protobuf"
	}
	return "grpc"
}

const (
	maxKeptBuffer   = 64 << 10 // encode buffers above this are not kept between exports
	maxHTTPRespBody = 1 << 20
)

// PartialSuccessError reports spans the collector accepted the request for
// but rejected (OTLP partial_success). The rest of the batch was delivered.
type PartialSuccessError struct {
	Rejected int64
	Message  string
}

func (e *PartialSuccessError) Error() string {
	return fmt.Sprintf("collector rejected %d spans: %s", e.Rejected, e.Message)
}

// otlpExporter is an sdktrace.SpanExporter that encodes OTLP protobuf by hand
// and sends it over a fresh TCP (or TLS) connection per batch, either as a
// gRPC unary call over HTTP/2 or as an HTTP/1.1 POST. See the package doc for
// why it exists instead of the stock otlptracegrpc/otlptracehttp exporters.
type otlpExporter struct {
	protocol  Protocol
	scheme    string // "http" or "https"
	addr      string // host:port to dial
	hostname  string // TLS server name
	authority string // :authority / Host header
	path      string // gRPC method path or HTTP request path
	tls       bool   // https endpoint: wrap the connection with tlsClient
	timeout   time.Duration
	userAgent string
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)

	mu      sync.Mutex // serialises exports; guards buf
	buf     []byte
	stopped atomic.Bool
}

var _ sdktrace.SpanExporter = (*otlpExporter)(nil)

// tlsClient performs a TLS client handshake on conn (ALPN "h2" when h2 is
// set). It is nil unless gomon is built with the gomon_otlp_tls tag: linking
// crypto/tls's handshake code costs about 1.4 MB of binary and 0.8 MiB of
// resident pages in every per-pod daemon, and collectors are node-local.
var tlsClient func(ctx context.Context, conn net.Conn, serverName string, h2 bool) (net.Conn, error)

// newOTLPExporter builds an exporter for a parsed endpoint URL (see
// resolveEndpoint for how the URL and protocol are chosen).
func newOTLPExporter(u *url.URL, p Protocol, timeout time.Duration, userAgent string) (*otlpExporter, error) {
	def := "4317"
	if p == ProtocolHTTP {
		def = "4318"
	}
	e := &otlpExporter{
		protocol:  p,
		scheme:    u.Scheme,
		addr:      hostPort(u, def),
		authority: u.Host,
		hostname:  u.Hostname(),
		timeout:   timeout,
		userAgent: userAgent,
	}
	if e.authority == "" {
		e.authority = e.addr
	}
	d := &net.Dialer{KeepAlive: -1}
	e.dial = d.DialContext
	switch p {
	case ProtocolHTTP:
		e.path = u.EscapedPath()
	default:
		e.path = grpcServicePath
	}
	if u.Scheme == "https" {
		if tlsClient == nil {
			return nil, fmt.Errorf("tracing endpoint %s: https needs a gomon built with -tags gomon_otlp_tls", u.Redacted())
		}
		e.tls = true
	}
	return e, nil
}

// ExportSpans encodes spans as one ExportTraceServiceRequest and sends it,
// bounded by ctx and the exporter's own timeout.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() {
		return errors.New("otlp exporter is shut down")
	}
	if len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf = encodeRequest(e.buf[:0], spans)
	defer func() {
		if cap(e.buf) > maxKeptBuffer {
			e.buf = nil // an idle daemon should not pin a large batch buffer
		}
	}()
	resp, err := e.send(ctx, e.buf)
	if err != nil {
		return fmt.Errorf("otlp %s export to %s: %w", e.protocol, e.addr, err)
	}
	res, err := decodeResponse(resp)
	if err != nil {
		return fmt.Errorf("decode otlp response: %w", err)
	}
	if res.rejected > 0 || res.message != "" {
		return &PartialSuccessError{Rejected: res.rejected, Message: res.message}
	}
	return nil
}

func (e *otlpExporter) send(ctx context.Context, body []byte) ([]byte, error) {
	if e.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.timeout)
		defer cancel()
	}
	conn, err := e.dial(ctx, "tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Cancellation without a deadline still unblocks reads and writes.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if e.tls {
		tc, err := tlsClient(ctx, conn, strings.Trim(e.hostname, "[]"), e.protocol == ProtocolGRPC)
		if err != nil {
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	if e.protocol == ProtocolHTTP {
		return httpPost(conn, e.authority, e.path, body, e.userAgent)
	}
	return h2call(conn, e.scheme, e.authority, e.path, body, e.userAgent)
}

// Shutdown marks the exporter stopped; in-flight exports finish on their own
// deadline. There is no connection to close between exports.
func (e *otlpExporter) Shutdown(context.Context) error {
	e.stopped.Store(true)
	return nil
}

// httpPost sends one OTLP/HTTP request over conn and returns the response
// body of a 2xx answer.
func httpPost(conn io.ReadWriter, host, path string, body []byte, userAgent string) ([]byte, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n", path, host, userAgent)
	fmt.Fprintf(&req, "Content-Type: application/x-protobuf\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	if _, err := conn.Write(body); err != nil {
		return nil, fmt.Errorf("write request body: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return nil, fmt.Errorf("read status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	codeText, reason, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return nil, fmt.Errorf("malformed status line %q", line)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("read response headers: %w", err)
	}
	var respBody []byte
	switch {
	case strings.EqualFold(hdr.Get("Transfer-Encoding"), "chunked"):
		respBody, err = readChunked(br, maxHTTPRespBody)
	case hdr.Get("Content-Length") != "":
		n, perr := strconv.ParseInt(hdr.Get("Content-Length"), 10, 64)
		if perr != nil || n < 0 || n > maxHTTPRespBody {
			return nil, fmt.Errorf("bad content-length %q", hdr.Get("Content-Length"))
		}
		respBody = make([]byte, n)
		_, err = io.ReadFull(br, respBody)
	default:
		respBody, err = io.ReadAll(io.LimitReader(br, maxHTTPRespBody))
	}
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	if code/100 != 2 {
		return nil, fmt.Errorf("http status %d %s: %s", code, reason, errorDetail(hdr.Get("Content-Type"), respBody))
	}
	return respBody, nil
}

// errorDetail extracts a human-readable message from an OTLP/HTTP error
// body: google.rpc.Status.message for protobuf bodies, else a text prefix.
func errorDetail(contentType string, body []byte) string {
	if strings.HasPrefix(contentType, "application/x-protobuf") {
		var msg string
		_ = walkFields(body, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
			if num == 2 && typ == protowire.BytesType { // google.rpc.Status.message
				msg = string(v)
			}
			return nil
		})
		if msg != "" {
			return msg
		}
	}
	const maxDetail = 200
	s := strings.TrimSpace(string(body[:min(len(body), maxDetail)]))
	if s == "" {
		return "(no body)"
	}
	return s
}

// readChunked decodes a chunked HTTP/1.1 body of at most limit bytes.
func readChunked(br *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		sizeText, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		size, err := strconv.ParseInt(sizeText, 16, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad chunk size %q", sizeText)
		}
		if size == 0 {
			// Trailers, up to the blank line.
			for {
				l, err := br.ReadString('\n')
				if err != nil || strings.TrimSpace(l) == "" {
					return out, nil
				}
			}
		}
		if len(out)+int(size) > limit {
			return nil, errors.New("response body too large")
		}
		start := len(out)
		out = append(out, make([]byte, size)...)
		if _, err := io.ReadFull(br, out[start:]); err != nil {
			return nil, err
		}
		if _, err := br.Discard(2); err != nil { // CRLF after the chunk
			return nil, err
		}
	}
}
