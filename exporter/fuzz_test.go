package exporter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ so plain `go test` runs
// them; `make fuzz` runs each target for a while.

const (
	// fuzzStreamCap bounds what a hostile collector gets to send before
	// the export's deadline ends the connection. It is well above every
	// legitimate response (1 MiB of body plus framing and headers), so a
	// reader that buffers whatever it is sent shows up as heap growth past
	// the target's bound.
	fuzzStreamCap = 4 << 20
	// fuzzSampleEvery is how often (in bytes served) the live heap is
	// measured; each sample costs a GC, so only long responses pay it.
	fuzzSampleEvery = 256 << 10
	// fuzzKeepWritten and fuzzKeepWrites bound the client output a fuzz
	// conn keeps (an endless stream of PINGs makes endless acks).
	fuzzKeepWritten = 512 << 10
	fuzzKeepWrites  = 4096
	// fuzzGrowBase: a grow byte above it repeats the tail 2, 4, … 2^23
	// times.
	fuzzGrowBase = 232
)

// collectorConn is the client side of a connection to a hostile collector:
// reads return resp, then tail once, or, for grow above fuzzGrowBase, tail
// repeated 1<<(grow-fuzzGrowBase) times (the collector keeps sending), at
// most fuzzStreamCap bytes in all; then EOF, or at the cap the error the
// exporter's connection deadline gives. Only about one input in ten is
// long (and slow, see fuzzSampleEvery). While serving a long response it
// samples the live heap.
type collectorConn struct {
	stream []byte // resp and the repeated tail; built once per input
	served int
	capped bool // the stream was cut at fuzzStreamCap

	written   bytes.Buffer // the first fuzzKeepWritten bytes the client wrote
	writes    []fuzzWrite  // the first fuzzKeepWrites writes
	truncated bool         // the client wrote more than written and writes keep

	// The live heap at the first sample (after fuzzSampleEvery bytes) is
	// the baseline: the harness's own buffers are allocated by then.
	based    bool
	live0    uint64
	maxGrown uint64
	sample   [1]metrics.Sample
}

// fuzzWrite is one client write and how much of the response had been
// read before it.
type fuzzWrite struct {
	servedBefore int
	start, end   int // offsets into written
}

func newCollectorConn(resp, tail []byte, grow uint8) *collectorConn {
	n := len(resp) + len(tail)
	if grow > fuzzGrowBase {
		n = len(resp) + len(tail)<<(grow-fuzzGrowBase)
	}
	c := &collectorConn{stream: make([]byte, 0, min(n, fuzzStreamCap))}
	c.capped = n > fuzzStreamCap
	c.stream = append(c.stream, resp[:min(len(resp), fuzzStreamCap)]...)
	for len(tail) > 0 && len(c.stream) < cap(c.stream) {
		c.stream = append(c.stream, tail[:min(len(tail), cap(c.stream)-len(c.stream))]...)
	}
	c.sample[0].Name = "/gc/heap/live:bytes"
	return c
}

// liveHeap is the heap marked live by the last GC.
func (c *collectorConn) liveHeap() uint64 {
	metrics.Read(c.sample[:])
	return c.sample[0].Value.Uint64()
}

func (c *collectorConn) Read(p []byte) (int, error) {
	if c.served == len(c.stream) {
		if c.capped {
			return 0, os.ErrDeadlineExceeded
		}
		return 0, io.EOF
	}
	before := c.served
	c.served += copy(p, c.stream[c.served:])
	if before/fuzzSampleEvery != c.served/fuzzSampleEvery {
		runtime.GC()
		switch live := c.liveHeap(); {
		case !c.based:
			c.live0, c.based = live, true
		case live > c.live0:
			c.maxGrown = max(c.maxGrown, live-c.live0)
		}
	}
	return c.served - before, nil
}

func (c *collectorConn) Write(p []byte) (int, error) {
	start := c.written.Len()
	if c.truncated || start+len(p) > fuzzKeepWritten || len(c.writes) == fuzzKeepWrites {
		c.truncated = true
		return len(p), nil
	}
	c.written.Write(p)
	c.writes = append(c.writes, fuzzWrite{servedBefore: c.served, start: start, end: c.written.Len()})
	return len(p), nil
}

// checkMemory fails t when reading the response grew the live heap past
// limit.
func (c *collectorConn) checkMemory(t *testing.T, limit uint64) {
	t.Helper()
	if c.maxGrown > limit {
		t.Fatalf("live heap grew by %d MiB while reading %d MiB of response: the reader buffers without a bound",
			c.maxGrown>>20, c.served>>20)
	}
}

// FuzzOTLPHTTPResponse feeds httpPost arbitrary collector answers: it must
// not panic, must hold a bounded amount of memory whatever it is sent,
// must return at most MaxResponseBody bytes, and, when net/http also reads
// a complete 2xx response from the same bytes, must return the same body.
// The request it wrote must be a well-formed POST of the body.
func FuzzOTLPHTTPResponse(f *testing.F) {
	body := []byte("\x0a\x05hello")
	// The largest body is 1 MiB, held in one slice grown by append.
	const maxLive = 5 << 19 // 2.5 MiB
	f.Fuzz(func(t *testing.T, resp, tail []byte, grow uint8) {
		conn := newCollectorConn(resp, tail, grow)
		got, err := httpPost(conn, "collector:4318", "/v1/traces", body, "gomon-fuzz")
		conn.checkMemory(t, maxLive)
		checkHTTPRequest(t, conn.written.Bytes(), body)
		if err != nil {
			return
		}
		if len(got) > MaxResponseBody {
			t.Fatalf("returned a body of %d bytes, limit %d", len(got), MaxResponseBody)
		}
		// Differential check against net/http on the bytes httpPost read.
		served := conn.stream[:conn.served]
		ref, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(served)), nil)
		if rerr != nil {
			return // net/http is stricter about some heads
		}
		defer func() { _ = ref.Body.Close() }() // an in-memory body
		want, rerr := io.ReadAll(io.LimitReader(ref.Body, MaxResponseBody+1))
		if rerr != nil || len(want) > MaxResponseBody || ref.StatusCode/100 != 2 {
			return
		}
		if ref.ContentLength < 0 && len(ref.TransferEncoding) == 0 {
			return // read to EOF: the reference saw exactly what httpPost was served, no more
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("body %q, net/http reads %q", got, want)
		}
	})
}

// checkHTTPRequest parses what httpPost wrote.
func checkHTTPRequest(t *testing.T, written, body []byte) {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(written)))
	if err != nil {
		t.Fatalf("request %q does not parse: %v", written, err)
	}
	defer func() { _ = req.Body.Close() }() // an in-memory body
	got, err := io.ReadAll(req.Body)
	if err != nil || req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || !bytes.Equal(got, body) {
		t.Fatalf("request %s %s with body %q (%v), want POST /v1/traces with %q", req.Method, req.URL, got, err, body)
	}
}

// FuzzOTLPGRPCResponse feeds h2call arbitrary HTTP/2 frames from the
// collector: it must not panic and must hold a bounded amount of memory
// whatever it is sent. What it writes must be valid HTTP/2 that never
// exceeds the flow-control windows or the frame size the collector
// granted by the time of the write. When it returns a message and the
// frames it read are valid HTTP/2 (checked with x/net/http2's Framer), the
// message must be what the DATA frames of the call's stream carried.
func FuzzOTLPGRPCResponse(f *testing.F) {
	// A frame's payload (up to 1 MiB) is live while it is read, next to
	// the response body (up to 1 MiB) grown by append and the kept output.
	const maxLive = 3 << 20
	f.Fuzz(func(t *testing.T, resp, tail []byte, grow uint8, msgLen uint32) {
		msg := bytes.Repeat([]byte{'m'}, int(msgLen%(200<<10)))
		conn := newCollectorConn(resp, tail, grow)
		got, err := h2call(conn, "http", "collector:4317", grpcServicePath, msg, "gomon-fuzz")
		conn.checkMemory(t, maxLive)
		data := checkH2Client(t, conn, msg)
		if err != nil {
			return
		}
		if len(got) > MaxResponseBody {
			t.Fatalf("returned a message of %d bytes, limit %d", len(got), MaxResponseBody)
		}
		if data == nil {
			return // the frames read were not all valid HTTP/2: no reference
		}
		var want []byte
		if len(data) >= grpcHeaderLen {
			n := binary.BigEndian.Uint32(data[1:grpcHeaderLen])
			if uint64(n) <= uint64(len(data)-grpcHeaderLen) {
				want = data[grpcHeaderLen : grpcHeaderLen+int(n)]
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %q, the DATA frames carried %q", got, want)
		}
	})
}

// checkH2Client replays the connection: the collector's frames in the
// order h2call read them, with x/net/http2's Framer as the reference, and
// h2call's writes in between. It fails t when the client's output is not
// HTTP/2, its request is wrong, or a DATA frame exceeded what the
// collector had granted when it was written. It returns the response DATA
// of stream 1 when every frame h2call read parsed cleanly, else nil.
func checkH2Client(t *testing.T, conn *collectorConn, msg []byte) []byte {
	t.Helper()
	written := conn.written.Bytes()
	if !bytes.HasPrefix(written, []byte(http2.ClientPreface)) {
		t.Fatalf("client output does not start with the preface: %q", written[:min(len(written), 40)])
	}
	if conn.truncated {
		return nil // too long to replay; only a prefix was kept
	}
	out := http2.NewFramer(nil, bytes.NewReader(written[len(http2.ClientPreface):]))
	out.MaxHeaderListSize = h2MaxHeaderBlock

	served := conn.stream[:conn.served]
	in := http2.NewFramer(nil, bytes.NewReader(served))
	in.SetMaxReadFrameSize(h2MaxReadFrame)
	inRead, inOK := 0, true

	var (
		connWin, streamWin   = int64(h2DefaultWindow), int64(h2DefaultWindow)
		initWin, maxFrame    = int64(h2DefaultWindow), uint32(h2DefaultMaxFrame)
		sentData, sentStream int64
		respData             []byte
		respEnded            bool
		reqBody              []byte
		reqEnded             bool
	)
	// advance reads the collector's frames up to offset upTo.
	advance := func(upTo int) {
		for inOK && inRead < upTo {
			fr, err := in.ReadFrame()
			if err != nil {
				inOK = false
				return
			}
			inRead += 9 + int(fr.Header().Length)
			switch fr := fr.(type) {
			case *http2.SettingsFrame:
				if fr.IsAck() {
					continue
				}
				_ = fr.ForeachSetting(func(s http2.Setting) error {
					switch s.ID {
					case http2.SettingInitialWindowSize:
						streamWin += int64(s.Val) - initWin
						initWin = int64(s.Val)
					case http2.SettingMaxFrameSize:
						maxFrame = s.Val
					}
					return nil
				})
			case *http2.WindowUpdateFrame:
				switch fr.StreamID {
				case 0:
					connWin += int64(fr.Increment)
				case h2RequestStream:
					streamWin += int64(fr.Increment)
				}
			case *http2.DataFrame:
				if fr.StreamID == h2RequestStream && !respEnded {
					respData = append(respData, fr.Data()...)
					respEnded = fr.StreamEnded()
				}
			case *http2.HeadersFrame:
				if fr.StreamID == h2RequestStream && fr.StreamEnded() {
					respEnded = true
				}
			}
		}
	}
	// Replay the client's frames in order; before each, read the
	// collector's frames h2call had read when it wrote it.
	outOff, wi := len(http2.ClientPreface), 0
	for {
		fr, err := out.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("client wrote invalid HTTP/2 at offset %d: %v", outOff, err)
		}
		for wi+1 < len(conn.writes) && conn.writes[wi].end <= outOff {
			wi++
		}
		outOff += 9 + int(fr.Header().Length)
		advance(conn.writes[wi].servedBefore)
		switch fr := fr.(type) {
		case *http2.HeadersFrame:
			if fr.StreamID != h2RequestStream || !fr.HeadersEnded() || fr.StreamEnded() {
				t.Fatalf("request HEADERS %v", fr.Header())
			}
		case *http2.DataFrame:
			if fr.StreamID != h2RequestStream || reqEnded {
				t.Fatalf("DATA %v after the request ended or on another stream", fr.Header())
			}
			n := int64(len(fr.Data()))
			reqBody = append(reqBody, fr.Data()...)
			reqEnded = fr.StreamEnded()
			if !inOK {
				break // the collector broke the protocol: no reference for the windows
			}
			if uint32(n) > maxFrame { //nolint:gosec // n is a frame length
				t.Fatalf("DATA frame of %d bytes, the collector allows %d", n, maxFrame)
			}
			sentData += n
			sentStream += n
			if sentData > connWin || sentStream > streamWin {
				t.Fatalf("sent %d bytes on the connection (window %d) and %d on the stream (window %d)",
					sentData, connWin, sentStream, streamWin)
			}
		}
	}
	if reqEnded {
		want := make([]byte, grpcHeaderLen, grpcHeaderLen+len(msg))
		binary.BigEndian.PutUint32(want[1:], uint32(len(msg))) //nolint:gosec // test message is small
		want = append(want, msg...)
		if !bytes.Equal(reqBody, want) {
			t.Fatalf("request body of %d bytes, want %d", len(reqBody), len(want))
		}
	}
	advance(conn.served)
	if !inOK || inRead != conn.served {
		return nil
	}
	return respData
}

// frame encodes one HTTP/2 frame.
func frame(typ, flags byte, stream uint32, payload []byte) []byte {
	var b bytes.Buffer
	(&h2conn{}).appendFrameHeader(&b, len(payload), typ, flags, stream)
	b.Write(payload)
	return b.Bytes()
}

// validGRPCResponse is a collector's successful answer carrying msg.
func validGRPCResponse(msg []byte) []byte {
	var hb bytes.Buffer
	enc := hpackEncoder(&hb)
	enc(":status", "200")
	enc("content-type", "application/grpc")
	headers := append([]byte(nil), hb.Bytes()...)
	hb.Reset()
	enc("grpc-status", "0")
	trailers := hb.Bytes()
	body := make([]byte, grpcHeaderLen, grpcHeaderLen+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg))) //nolint:gosec // seed message is small
	body = append(body, msg...)
	var out []byte
	out = append(out, frame(frameSettings, 0, 0, nil)...)
	out = append(out, frame(frameSettings, flagAck, 0, nil)...)
	out = append(out, frame(frameHeaders, flagEndHeaders, 1, headers)...)
	out = append(out, frame(frameData, 0, 1, body)...)
	out = append(out, frame(frameHeaders, flagEndHeaders|flagEndStream, 1, trailers)...)
	return out
}

// hpackEncoder returns a function that HPACK-encodes one field into b.
func hpackEncoder(b *bytes.Buffer) func(name, value string) {
	enc := hpack.NewEncoder(b)
	return func(name, value string) {
		_ = enc.WriteField(hpack.HeaderField{Name: name, Value: value}) // a bytes.Buffer never fails
	}
}

// TestFuzzCollectorHarness makes sure the fuzz targets' checks can fail
// and their references engage: reading a whole hostile stream into memory
// is caught by the heap sampling, a bounded reader is not, and a valid
// answer goes through the differential checks.
func TestFuzzCollectorHarness(t *testing.T) {
	greedy := newCollectorConn(nil, []byte("a"), fuzzGrowBase+23)
	if _, err := io.ReadAll(greedy); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("hostile stream ended with %v, want the deadline", err)
	}
	if greedy.maxGrown < 3<<20 {
		t.Errorf("buffering 4 MiB grew the live heap by only %d bytes", greedy.maxGrown)
	}
	bounded := newCollectorConn(nil, []byte("a"), fuzzGrowBase+23)
	if _, err := io.Copy(io.Discard, bounded); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("hostile stream ended with %v, want the deadline", err)
	}
	if bounded.maxGrown > 1<<20 {
		t.Errorf("discarding the stream grew the live heap by %d bytes", bounded.maxGrown)
	}

	want := []byte("\x0a\x02ok")
	conn := newCollectorConn(validGRPCResponse(want), nil, 0)
	got, err := h2call(conn, "http", "collector:4317", grpcServicePath, []byte("req"), "gomon-fuzz")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("h2call = %q, %v; want %q", got, err, want)
	}
	if data := checkH2Client(t, conn, []byte("req")); len(data) != grpcHeaderLen+len(want) {
		t.Fatalf("reference DATA %q", data)
	}
}
