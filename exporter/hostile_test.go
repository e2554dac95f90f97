package exporter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2/hpack"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/gomon-dev/gomon/internal/contain"
)

// hostileSent is how much junk a hostile collector sends: far more than any
// limit, so a reader that buffers it shows up in the allocation figures.
const hostileSent = 64 << 20

// allocBound is the generous bound on what one export may allocate while a
// hostile collector sends hostileSent bytes (the limits allow ~5 MiB).
const allocBound = 16 << 20

// startRawCollector serves every connection on a loopback listener with
// serve; serve must return once the client has gone (its writes fail).
func startRawCollector(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(time.Minute)) // a test bug must not hang the suite
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}

// readHTTPRequest consumes one OTLP/HTTP request (head and body).
func readHTTPRequest(c net.Conn) error {
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			return err
		}
		head = append(head, b[0])
	}
	var n int
	for line := range strings.SplitSeq(string(head), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			_, _ = fmt.Sscan(v, &n)
		}
	}
	_, err := io.CopyN(io.Discard, c, int64(n))
	return err
}

// writeJunk writes prefix, then n bytes of fill, then suffix; it stops at
// the first write error (the client gave up).
func writeJunk(c net.Conn, prefix string, fill byte, n int, suffix string) {
	if _, err := io.WriteString(c, prefix); err != nil {
		return
	}
	buf := bytes.Repeat([]byte{fill}, 64<<10)
	for sent := 0; sent < n; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
	_, _ = io.WriteString(c, suffix)
}

// exportAgainst sets up OTLP export to endpoint, ends spans spans, flushes
// them through one export and returns the tracing and the bytes the process
// allocated meanwhile. The flush returning at all proves the exporter
// goroutine survived the answer.
func exportAgainst(t *testing.T, endpoint string, env map[string]string, spans int) (*Tracing, uint64) {
	t.Helper()
	tr, err := Setup(context.Background(), Config{
		Mode: ModeOTLP, Endpoint: endpoint, SamplingRatePerMillion: 1_000_000,
		LookupEnv: mapEnv(env), ExportTimeout: 3 * time.Second, BatchTimeout: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	emit(tr.TracerProvider(), spans, "hostile", 0)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.ForceFlush(ctx); err != nil {
		t.Fatalf("ForceFlush: %v", err)
	}
	runtime.ReadMemStats(&after)
	return tr, after.TotalAlloc - before.TotalAlloc
}

// TestHostileHTTPCollector: OTLP/HTTP answers that used to panic the
// exporter goroutine (and with it the daemon) or be buffered without bound.
// Each must cost one dropped batch and bounded memory.
func TestHostileHTTPCollector(t *testing.T) {
	const okChunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	tests := []struct {
		name  string
		serve func(net.Conn)
	}{
		// 32 + MaxInt64 wraps negative in an int check: makeslice panic.
		{"chunk size near MaxInt64", func(c net.Conn) {
			_, _ = io.WriteString(c, okChunked+"20\r\n"+strings.Repeat("x", 32)+"\r\n7fffffffffffffff\r\n")
		}},
		{"chunk size MaxInt64 first", func(c net.Conn) {
			_, _ = io.WriteString(c, okChunked+"7fffffffffffffff\r\n")
		}},
		{"endless header line", func(c net.Conn) {
			writeJunk(c, "HTTP/1.1 200 OK\r\nX-Junk: ", 'a', hostileSent, "\r\n\r\n")
		}},
		{"endless status line", func(c net.Conn) {
			writeJunk(c, "HTTP/1.1 200 ", 'a', hostileSent, "\r\n\r\n")
		}},
		{"endless header list", func(c net.Conn) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			line := []byte("X-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
			for sent := 0; sent < hostileSent; sent += len(line) * 1024 {
				if _, err := c.Write(bytes.Repeat(line, 1024)); err != nil {
					return
				}
			}
		}},
		{"endless chunk-size line", func(c net.Conn) {
			writeJunk(c, okChunked, '0', hostileSent, "\r\n")
		}},
		{"endless trailers", func(c net.Conn) {
			writeJunk(c, okChunked+"0\r\nX-Trailer: ", 'a', hostileSent, "\r\n\r\n")
		}},
		{"endless body without length", func(c net.Conn) {
			writeJunk(c, "HTTP/1.1 200 OK\r\n\r\n", 'a', hostileSent, "")
		}},
		{"endless interim responses", func(c net.Conn) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			line := []byte("HTTP/1.1 103 Early Hints\r\n\r\n")
			for sent := 0; sent < hostileSent; sent += len(line) * 1024 {
				if _, err := c.Write(bytes.Repeat(line, 1024)); err != nil {
					return
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := startRawCollector(t, func(c net.Conn) {
				if readHTTPRequest(c) == nil {
					tc.serve(c)
				}
			})
			const spans = 5
			panics := contain.PanicsOf(contain.Exporter)
			tr, alloc := exportAgainst(t, "http://"+addr+"/v1/traces", nil, spans)
			t.Logf("allocated %d KiB during the export", alloc>>10)
			if alloc > allocBound {
				t.Errorf("export allocated %d MiB against a hostile collector, bound %d MiB", alloc>>20, allocBound>>20)
			}
			if tr.Dropped() != spans || tr.Exported() != 0 {
				t.Errorf("dropped/exported = %d/%d, want %d/0", tr.Dropped(), tr.Exported(), spans)
			}
			// The answer must be refused by the reader's limits, not by
			// the recovery that keeps a panicking export from killing
			// the daemon (which would also count the batch as dropped).
			if n := contain.PanicsOf(contain.Exporter) - panics; n != 0 {
				t.Errorf("the export panicked %d time(s) (recovered): the reader did not refuse the answer", n)
			}
		})
	}
}

// TestHTTPResponseReaderStillReads: the bounded reader still reads what a
// sane collector sends: a head near the limit, chunk extensions, trailers,
// interim responses, and a body delimited by the end of the connection.
func TestHTTPResponseReaderStillReads(t *testing.T) {
	big := strings.Repeat("h", MaxHTTPResponseHead-200)
	tests := []struct {
		name, resp, want string
		wantErr          bool
	}{
		{name: "content-length", resp: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", want: "abc"},
		{
			name: "chunked with extension and trailer",
			resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n1\r\nc\r\n0\r\nT: v\r\n\r\n", want: "abc",
		},
		{name: "lf only", resp: "HTTP/1.1 200 OK\nContent-Length: 1\n\nz", want: "z"},
		{name: "interim", resp: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nq", want: "q"},
		{name: "until close", resp: "HTTP/1.1 200 OK\r\n\r\nrest", want: "rest"},
		{name: "large header under limit", resp: "HTTP/1.1 200 OK\r\nX-Big: " + big + "\r\nContent-Length: 1\r\n\r\nk", want: "k"},
		{name: "header over limit", resp: "HTTP/1.1 200 OK\r\nX-Big: " + big + big + "\r\n\r\n", wantErr: true},
		{
			name: "body at limit", resp: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", MaxResponseBody, strings.Repeat("b", MaxResponseBody)),
			want: strings.Repeat("b", MaxResponseBody),
		},
		{name: "body over limit", resp: fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", MaxResponseBody+1), wantErr: true},
		{name: "chunk without crlf", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n", wantErr: true},
		{name: "conflicting lengths", resp: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", wantErr: true},
		{name: "error status", resp: "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\ndown", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readHTTPResponse(strings.NewReader(tc.resp))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("accepted; body %d bytes", len(got))
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %d bytes %q…, %v; want %d bytes", len(got), truncate(string(got), 20), err, len(tc.want))
			}
		})
	}
}

// h2Collector runs serve on every connection after reading the client's
// preface; the client's frames are parsed in the background (so its
// writes never block) and its SETTINGS and PING acknowledgements counted.
func h2Collector(t *testing.T, acks *atomic.Int64, serve func(net.Conn)) string {
	t.Helper()
	return startRawCollector(t, func(c net.Conn) {
		pre := make([]byte, len(h2Preface))
		if _, err := io.ReadFull(c, pre); err != nil || string(pre) != h2Preface {
			return
		}
		go func() {
			var h [9]byte
			for {
				if _, err := io.ReadFull(c, h[:]); err != nil {
					return
				}
				n := int64(h[0])<<16 | int64(h[1])<<8 | int64(h[2])
				if (h[3] == frameSettings || h[3] == framePing) && h[4]&flagAck != 0 {
					acks.Add(1)
				}
				if _, err := io.CopyN(io.Discard, c, n); err != nil {
					return
				}
			}
		}()
		serve(c)
	})
}

// h2Frame encodes one HTTP/2 frame.
func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	var b bytes.Buffer
	(&h2conn{}).appendFrameHeader(&b, len(payload), typ, flags, stream)
	b.Write(payload)
	return b.Bytes()
}

// writeFrames writes frames from next until hostileSent bytes went out or
// the client went away.
func writeFrames(c net.Conn, first []byte, next func() []byte) {
	if _, err := c.Write(first); err != nil {
		return
	}
	var batch bytes.Buffer
	for sent := 0; sent < hostileSent; sent += batch.Len() {
		batch.Reset()
		for batch.Len() < 64<<10 {
			batch.Write(next())
		}
		if _, err := c.Write(batch.Bytes()); err != nil {
			return
		}
	}
}

// TestHostileGRPCCollector: HTTP/2 answers that flood, oversize or bomb the
// response reader. Each costs one dropped batch, bounded memory, and at
// most h2MaxControlFrames acknowledgements.
func TestHostileGRPCCollector(t *testing.T) {
	settings := h2Frame(frameSettings, 0, 0, nil)
	var status bytes.Buffer
	enc := hpack.NewEncoder(&status)
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	hdrs := h2Frame(frameHeaders, 0, h2RequestStream, status.Bytes()) // no END_HEADERS

	// An HPACK bomb: one 4 KiB grpc-message entry in the dynamic table,
	// then thousands of one-byte references to it.
	var bomb bytes.Buffer
	benc := hpack.NewEncoder(&bomb)
	_ = benc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	msg := hpack.HeaderField{Name: "grpc-message", Value: strings.Repeat("%41", 1300)}
	for bomb.Len() < h2MaxHeaderBlock-h2DefaultMaxFrame {
		_ = benc.WriteField(msg)
	}
	var bombFrames []byte
	for b, typ := bomb.Bytes(), byte(frameHeaders); len(b) > 0; typ = frameContinuation {
		n := min(len(b), h2DefaultMaxFrame)
		var flags byte
		if n == len(b) {
			flags = flagEndHeaders
		}
		bombFrames = append(bombFrames, h2Frame(typ, flags, h2RequestStream, b[:n])...)
		b = b[n:]
	}

	tests := []struct {
		name  string
		serve func(net.Conn)
	}{
		{"SETTINGS flood", func(c net.Conn) {
			writeFrames(c, settings, func() []byte { return settings })
		}},
		{"PING flood", func(c net.Conn) {
			ping := h2Frame(framePing, 0, 0, make([]byte, 8))
			writeFrames(c, settings, func() []byte { return ping })
		}},
		{"endless CONTINUATION", func(c net.Conn) {
			cont := h2Frame(frameContinuation, 0, h2RequestStream, make([]byte, h2DefaultMaxFrame))
			writeFrames(c, slicesConcat(settings, hdrs), func() []byte { return cont })
		}},
		{"DATA flood on another stream", func(c net.Conn) {
			data := h2Frame(frameData, 0, 3, make([]byte, h2DefaultMaxFrame))
			writeFrames(c, settings, func() []byte { return data })
		}},
		{"unknown frames flood", func(c net.Conn) {
			unknown := h2Frame(0xee, 0, 0, make([]byte, h2DefaultMaxFrame))
			writeFrames(c, settings, func() []byte { return unknown })
		}},
		{"DATA beyond the response limit", func(c net.Conn) {
			data := h2Frame(frameData, 0, h2RequestStream, make([]byte, h2DefaultMaxFrame))
			writeFrames(c, slicesConcat(settings, h2Frame(frameHeaders, flagEndHeaders, h2RequestStream, status.Bytes())),
				func() []byte { return data })
		}},
		{"oversized frame", func(c net.Conn) {
			var h [9]byte
			h[0], h[1], h[2], h[3] = 0xff, 0xff, 0xff, frameData
			binary.BigEndian.PutUint32(h[5:], h2RequestStream)
			writeJunk(c, string(settings)+string(h[:]), 0, hostileSent, "")
		}},
		{"HPACK bomb", func(c net.Conn) {
			_, _ = c.Write(slicesConcat(settings, bombFrames))
			_, _ = io.Copy(io.Discard, c)
		}},
		{"window overflow", func(c net.Conn) {
			inc := h2Frame(frameWindowUpdate, 0, 0, []byte{0x7f, 0xff, 0xff, 0xff})
			_, _ = c.Write(slicesConcat(settings, inc, inc))
			_, _ = io.Copy(io.Discard, c)
		}},
		{"GOAWAY with a large debug text", func(c net.Conn) {
			_, _ = c.Write(slicesConcat(settings, h2Frame(frameGoAway, 0, 0, append([]byte{0, 0, 0, 0, 0, 0, 0, 2}, make([]byte, h2DefaultMaxFrame-8)...))))
			_, _ = io.Copy(io.Discard, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var acks atomic.Int64
			addr := h2Collector(t, &acks, tc.serve)
			const spans = 5
			tr, alloc := exportAgainst(t, "http://"+addr, nil, spans)
			t.Logf("allocated %d KiB during the export; %d acknowledgements", alloc>>10, acks.Load())
			if alloc > allocBound {
				t.Errorf("export allocated %d MiB against a hostile collector, bound %d MiB", alloc>>20, allocBound>>20)
			}
			if a := acks.Load(); a > h2MaxControlFrames+1 {
				t.Errorf("client acknowledged %d SETTINGS/PING frames, bound %d", a, h2MaxControlFrames)
			}
			if tr.Dropped() != spans || tr.Exported() != 0 {
				t.Errorf("dropped/exported = %d/%d, want %d/0", tr.Dropped(), tr.Exported(), spans)
			}
		})
	}
}

func slicesConcat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// panicExporter panics on its first export and records the later ones.
type panicExporter struct {
	calls atomic.Int64
	spans atomic.Int64
}

func (p *panicExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	if p.calls.Add(1) == 1 {
		var counts []int
		counts[len(s)]++ // index out of range: a runtime panic, like a decoder bug
	}
	p.spans.Add(int64(len(s)))
	return nil
}

func (p *panicExporter) Shutdown(context.Context) error { return nil }

// TestExportPanicRecovered: a panic in the exporter costs its batch, is
// counted and reported with its stack, and the goroutine goes on exporting.
func TestExportPanicRecovered(t *testing.T) {
	before := contain.PanicsOf(contain.Exporter)
	exp := &panicExporter{}
	var mu sync.Mutex
	var errs []error
	b := newBatcher(exp, 16, 4, time.Hour, time.Second, func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	})
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	emit(tp, 3, "first", 0)
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	emit(tp, 2, "second", 0)
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.dropped.Load() != 3 || b.exported.Load() != 2 || b.panics.Load() != 1 || exp.spans.Load() != 2 {
		t.Errorf("dropped/exported/panics/received = %d/%d/%d/%d, want 3/2/1/2",
			b.dropped.Load(), b.exported.Load(), b.panics.Load(), exp.spans.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	var pe *ExportPanicError
	if len(errs) != 1 || !errors.As(errs[0], &pe) {
		t.Fatalf("errors reported: %v, want one ExportPanicError", errs)
	}
	if !strings.Contains(pe.Stack, "panicExporter).ExportSpans") {
		t.Errorf("panic stack does not show the panicking function:\n%s", pe.Stack)
	}
	if got := contain.PanicsOf(contain.Exporter) - before; got != 1 {
		t.Errorf("daemon's exporter panic count went up by %d, want 1", got)
	}
}

// shutdownPanicExporter panics when shut down.
type shutdownPanicExporter struct{ panicExporter }

func (*shutdownPanicExporter) Shutdown(context.Context) error { panic("shutdown bug") }

// TestExporterShutdownPanicIsAnError: a panic in the exporter's Shutdown
// is returned as an error, so the daemon's shutdown goes on.
func TestExporterShutdownPanicIsAnError(t *testing.T) {
	before := contain.PanicsOf(contain.Exporter)
	b := newBatcher(&shutdownPanicExporter{}, 16, 4, time.Hour, time.Second, nil)
	err := b.Shutdown(context.Background())
	var pe *ExportPanicError
	if !errors.As(err, &pe) || pe.Value != "shutdown bug" {
		t.Fatalf("Shutdown = %v, want the panic as an ExportPanicError", err)
	}
	if got := contain.PanicsOf(contain.Exporter) - before; got != 1 {
		t.Errorf("daemon's exporter panic count went up by %d, want 1", got)
	}
}

// TestPanicLoggedDespiteRateLimit: an export error logged just before does
// not suppress the panic's log record, which carries the stack.
func TestPanicLoggedDespiteRateLimit(t *testing.T) {
	var buf syncBuf
	h := newErrorHandler(slog.New(slog.NewJSONHandler(&buf, nil)), time.Hour)
	h.Handle(errors.New("collector down"))
	h.Handle(errors.New("collector still down")) // suppressed
	h.Handle(&ExportPanicError{Value: "boom", Stack: "goroutine 1 [running]:\nexporter.decode()"})
	out := buf.String()
	if !strings.Contains(out, `"level":"ERROR","msg":"span export panicked; batch dropped","panic":"boom","stack":"goroutine 1`) {
		t.Errorf("panic not logged at error level with its stack:\n%s", out)
	}
	if strings.Contains(out, "still down") {
		t.Errorf("rate limit lost:\n%s", out)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestGRPCTrailersOnlyAcrossContinuation: a trailers-only response whose
// HEADERS carries END_STREAM but not END_HEADERS ends the stream only once
// its CONTINUATION completes the block, and the block is decoded.
func TestGRPCTrailersOnlyAcrossContinuation(t *testing.T) {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}, {Name: "grpc-status", Value: "0"}} {
		_ = enc.WriteField(f)
	}
	b := block.Bytes()
	var acks atomic.Int64
	addr := h2Collector(t, &acks, func(c net.Conn) {
		_, _ = c.Write(slicesConcat(h2Frame(frameSettings, 0, 0, nil),
			h2Frame(frameHeaders, flagEndStream, h2RequestStream, b[:3]),
			h2Frame(frameContinuation, flagEndHeaders, h2RequestStream, b[3:])))
		_, _ = io.Copy(io.Discard, c)
	})
	tr, _ := exportAgainst(t, "http://"+addr, nil, 2)
	if tr.Dropped() != 0 || tr.Exported() != 2 {
		t.Errorf("dropped/exported = %d/%d, want 0/2", tr.Dropped(), tr.Exported())
	}
}
