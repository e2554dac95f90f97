package exporter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

const maxKeptBuffer = 64 << 10 // encode buffers above this are not kept between exports

// Limits on what a collector's answer may cost. A response beyond one of
// them fails the export (its spans are counted as dropped); nothing a
// collector sends is buffered beyond them.
const (
	// MaxHTTPResponseHead bounds an OTLP/HTTP response's status lines,
	// header lines and trailers together.
	MaxHTTPResponseHead = 64 << 10
	// MaxResponseBody bounds a response body (OTLP/HTTP) or gRPC response
	// message (OTLP/gRPC, DATA payloads together).
	MaxResponseBody = 1 << 20
	// MaxResponseBytes bounds everything read from the collector for one
	// export, framing included (chunk-size lines, HTTP/2 frames on any stream).
	MaxResponseBytes = 4 << 20
	// maxChunkLine bounds one chunk-size line (with its extensions).
	maxChunkLine = 4 << 10
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

	// grpcHeaders is the HPACK block of every call's request headers
	// (grpcRequestHeaders), encoded at the first gRPC export.
	grpcHeadersOnce sync.Once
	grpcHeaders     []byte
	grpcHeadersErr  error
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
	e.grpcHeadersOnce.Do(func() {
		e.grpcHeaders, e.grpcHeadersErr = grpcRequestHeaders(e.scheme, e.authority, e.path, e.userAgent)
	})
	if e.grpcHeadersErr != nil {
		return nil, e.grpcHeadersErr
	}
	return h2callWith(conn, e.grpcHeaders, body)
}

// Shutdown marks the exporter stopped; in-flight exports finish on their own
// deadline. There is no connection to close between exports.
func (e *otlpExporter) Shutdown(context.Context) error {
	e.stopped.Store(true)
	return nil
}

// httpPost sends one OTLP/HTTP request over conn and returns the response
// body of a 2xx answer. Everything read from the collector is bounded (see
// the limits in the package doc): a broken or hostile collector costs one
// failed export, never unbounded memory.
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
	return readHTTPResponse(conn)
}

// readHTTPResponse reads one HTTP/1.1 response from r and returns the body
// of a 2xx answer. Interim 1xx responses are skipped.
func readHTTPResponse(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(&capReader{r: r, left: MaxResponseBytes}, 4096)
	headBudget := MaxHTTPResponseHead // status lines, headers and trailers together
	var h httpHead
	for {
		var err error
		if h, err = readHTTPHead(br, &headBudget); err != nil {
			return nil, err
		}
		if h.code/100 != 1 || h.code == 101 {
			break
		}
	}
	var respBody []byte
	var err error
	switch {
	case h.code == 204 || h.code == 304:
		// No body, whatever the headers say (RFC 9112 6.3); the
		// connection closes after this answer, so what follows is unread.
	case h.chunked:
		respBody, err = readChunked(br, MaxResponseBody, &headBudget)
	case h.contentLength != "":
		n, perr := strconv.ParseInt(h.contentLength, 10, 64)
		if perr != nil || n < 0 {
			return nil, fmt.Errorf("bad content-length %q", truncate(h.contentLength, 64))
		}
		if n > MaxResponseBody {
			return nil, fmt.Errorf("response body of %d bytes: %w", n, errResponseTooLarge)
		}
		respBody = make([]byte, n)
		_, err = io.ReadFull(br, respBody)
	default:
		// Delimited by the end of the connection.
		respBody, err = io.ReadAll(io.LimitReader(br, MaxResponseBody+1))
		if err == nil && len(respBody) > MaxResponseBody {
			err = errResponseTooLarge
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read response body: %w", err)
	}
	if h.code/100 != 2 {
		return nil, fmt.Errorf("http status %d %s: %s", h.code, truncate(h.reason, 64), errorDetail(h.contentType, respBody))
	}
	return respBody, nil
}

// errResponseTooLarge: the collector sent more than a limit allows.
var errResponseTooLarge = errors.New("collector response exceeds limit")

// httpHead is what gomon uses of a response head.
type httpHead struct {
	code          int
	reason        string
	contentType   string
	contentLength string
	chunked       bool
}

// readHTTPHead reads a status line and the header lines up to the blank
// line, charging every byte to *budget.
func readHTTPHead(br *bufio.Reader, budget *int) (httpHead, error) {
	var h httpHead
	line, err := readLine(br, budget)
	if err != nil {
		return h, fmt.Errorf("read status line: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	codeText, reason, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || code < 100 || code > 999 {
		return h, fmt.Errorf("malformed status line %q", truncate(line, 64))
	}
	h.code, h.reason = code, reason
	http10 := proto == "HTTP/1.0"
	for {
		line, err := readLine(br, budget)
		if err != nil {
			return h, fmt.Errorf("read response headers: %w", err)
		}
		if line == "" {
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obsolete line folding: no header gomon reads is folded
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return h, fmt.Errorf("malformed header line %q", truncate(line, 64))
		}
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Content-Type"):
			h.contentType = value
		case strings.EqualFold(name, "Content-Length"):
			if h.contentLength != "" && h.contentLength != value {
				return h, errors.New("conflicting content-length headers")
			}
			h.contentLength = value
		case strings.EqualFold(name, "Transfer-Encoding") && !http10:
			// chunked is the last coding when present (RFC 9112 6.1).
			// An HTTP/1.0 answer cannot be chunked: its framing is the
			// Content-Length or the end of the connection, as net/http
			// reads it.
			codings := strings.Split(value, ",")
			h.chunked = strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked")
		}
	}
}

// readLine reads one CRLF- or LF-terminated line without its terminator,
// charging its length to *budget and failing once the budget is spent, so
// an endless line costs at most the budget plus the reader's buffer.
func readLine(br *bufio.Reader, budget *int) (string, error) {
	var long []byte
	for {
		frag, err := br.ReadSlice('\n')
		*budget -= len(frag)
		if *budget < 0 {
			return "", fmt.Errorf("response line or head: %w", errResponseTooLarge)
		}
		switch {
		case err == nil:
			if long != nil {
				frag = append(long, frag...)
			}
			line := strings.TrimSuffix(string(frag[:len(frag)-1]), "\r")
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, frag...)
		default:
			return "", err
		}
	}
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
// Chunk-size lines are bounded by maxChunkLine each, trailers by *budget.
func readChunked(br *bufio.Reader, limit int, budget *int) ([]byte, error) {
	var out []byte
	for {
		lineBudget := maxChunkLine
		line, err := readLine(br, &lineBudget)
		if err != nil {
			return nil, fmt.Errorf("read chunk size: %w", err)
		}
		sizeText, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		size, err := strconv.ParseInt(sizeText, 16, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("bad chunk size %q", truncate(sizeText, 64))
		}
		if size == 0 {
			// Trailers, up to the blank line.
			for {
				l, err := readLine(br, budget)
				if err != nil {
					return nil, fmt.Errorf("read trailers: %w", err)
				}
				if l == "" {
					return out, nil
				}
			}
		}
		// Compare in int64 before converting: a size near MaxInt64 must
		// not wrap around the check.
		if size > int64(limit-len(out)) {
			return nil, fmt.Errorf("chunk of %d bytes after %d: %w", size, len(out), errResponseTooLarge)
		}
		start := len(out)
		out = append(out, make([]byte, size)...)
		if _, err := io.ReadFull(br, out[start:]); err != nil {
			return nil, fmt.Errorf("read chunk: %w", err)
		}
		lineBudget = maxChunkLine
		l, err := readLine(br, &lineBudget)
		if err != nil {
			return nil, fmt.Errorf("read chunk terminator: %w", err)
		}
		if l != "" {
			return nil, errors.New("chunk not followed by CRLF")
		}
	}
}

// capReader fails reads once left bytes have been read: the total a
// collector may send for one export.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, fmt.Errorf("more than %d bytes: %w", MaxResponseBytes, errResponseTooLarge)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// truncate bounds collector-supplied text copied into an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
