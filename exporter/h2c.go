package exporter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// A minimal HTTP/2 client for exactly one gRPC unary call per connection.
//
// It speaks just enough of RFC 9113 for a unary call: connection preface and
// SETTINGS, one request stream with HEADERS + DATA under the peer's flow
// control windows, and a response of HEADERS, DATA and trailing HEADERS.
// PING is answered, SETTINGS acknowledged, GOAWAY and RST_STREAM end the call.
// Everything the server sends is bounded: frames by the default 16 KiB
// SETTINGS_MAX_FRAME_SIZE (read into one reused buffer), the header list by
// SETTINGS_MAX_HEADER_LIST_SIZE, the response message by MaxResponseBody,
// the whole answer by MaxResponseBytes, and the frames that need a reply
// (SETTINGS, PING) by h2MaxControlFrames, so a hostile server costs one
// failed export.
// No goroutine is started: the exporter goroutine drives the connection and
// closes it when the call ends. One connection per export batch costs a TCP
// handshake every few seconds at most, and keeps the idle daemon free of a
// reader goroutine and keepalive timers.

const (
	h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20

	settingEnablePush    = 0x2
	settingInitialWindow = 0x4
	settingMaxFrameSize  = 0x5
	settingMaxHeaderList = 0x6
	h2DefaultWindow      = 65535
	h2DefaultMaxFrame    = 16384
	h2MaxWindow          = 1<<31 - 1
	// h2MaxReadFrame is the largest frame payload accepted: the default
	// SETTINGS_MAX_FRAME_SIZE, which gomon does not raise.
	h2MaxReadFrame = h2DefaultMaxFrame
	// h2MaxHeaderBlock bounds one response header block (HEADERS plus
	// CONTINUATION payloads) and, as SETTINGS_MAX_HEADER_LIST_SIZE, its
	// decoded size (names, values and 32 bytes per field, RFC 9113 6.5.2).
	h2MaxHeaderBlock = 64 << 10
	// h2MaxControlFrames bounds the SETTINGS and PING frames one call
	// answers; a server sending more is flooding.
	h2MaxControlFrames = 100
	// h2MaxDebugText bounds the GOAWAY debug data and grpc-message kept
	// for an error.
	h2MaxDebugText = 256

	grpcServicePath       = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	grpcHeaderLen         = 5
	h2RequestStream       = 1
	errGRPCStatusNotFound = -1
)

// grpcStatusError is a non-OK grpc-status from the collector.
type grpcStatusError struct {
	code int
	msg  string
}

func (e *grpcStatusError) Error() string {
	return fmt.Sprintf("grpc status %d: %s", e.code, e.msg)
}

// h2call runs one gRPC unary call over conn (already connected, TLS already
// negotiated if any) and returns the response message without its gRPC frame
// header. The caller owns conn and its deadline.
func h2call(conn io.ReadWriter, scheme, authority, path string, msg []byte, userAgent string) ([]byte, error) {
	hb, err := grpcRequestHeaders(scheme, authority, path, userAgent)
	if err != nil {
		return nil, err
	}
	return h2callWith(conn, hb, msg)
}

// grpcRequestHeaders returns the HPACK block of a call's request headers
// as a new connection's encoder writes it (empty dynamic table). It is the
// same for every call with the same arguments, so an exporter, which
// always calls the same method, encodes it once (otlpExporter.send).
func grpcRequestHeaders(scheme, authority, path, userAgent string) ([]byte, error) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: scheme},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: authority},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
		{Name: "user-agent", Value: userAgent},
	} {
		if err := enc.WriteField(f); err != nil {
			return nil, fmt.Errorf("encode headers: %w", err)
		}
	}
	if hb.Len() > h2DefaultMaxFrame {
		return nil, errors.New("request headers too large")
	}
	return hb.Bytes(), nil
}

// h2callWith is h2call with the request headers already encoded
// (grpcRequestHeaders). msg is sent as it is, behind its gRPC frame
// header, without being copied.
func h2callWith(conn io.ReadWriter, headerBlock, msg []byte) ([]byte, error) {
	c := &h2conn{
		rw: conn, sendWin: h2DefaultWindow, streamWin: h2DefaultWindow, maxFrame: h2DefaultMaxFrame, initWin: h2DefaultWindow,
		readLeft: MaxResponseBytes,
	}
	c.dec = hpack.NewDecoder(4096, c.onField)
	c.dec.SetMaxStringLength(h2MaxHeaderBlock)

	// Preface, our SETTINGS, then the request HEADERS, in one write.
	var out bytes.Buffer
	out.Grow(len(h2Preface) + 9 + 18 + 9 + len(headerBlock))
	out.WriteString(h2Preface)
	c.appendFrameHeader(&out, 18, frameSettings, 0, 0)
	appendSetting(&out, settingEnablePush, 0)
	appendSetting(&out, settingMaxFrameSize, h2MaxReadFrame)
	appendSetting(&out, settingMaxHeaderList, h2MaxHeaderBlock)
	c.appendFrameHeader(&out, len(headerBlock), frameHeaders, flagEndHeaders, h2RequestStream)
	out.Write(headerBlock)
	if _, err := conn.Write(out.Bytes()); err != nil {
		return nil, fmt.Errorf("write request headers: %w", err)
	}

	// gRPC length-prefixed message: 1 byte compressed flag, 4 bytes length.
	c.grpcHdr[0] = 0
	binary.BigEndian.PutUint32(c.grpcHdr[1:], uint32(len(msg))) //nolint:gosec // bounded by batch size
	if err := c.sendData(c.grpcHdr[:], msg); err != nil {
		return nil, err
	}
	return c.readResponse()
}

type h2conn struct {
	rw        io.ReadWriter
	dec       *hpack.Decoder
	sendWin   int64               // connection send window
	streamWin int64               // our stream's send window
	initWin   int64               // peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame  int                 // peer's SETTINGS_MAX_FRAME_SIZE
	hdr       [9]byte             // the frame header being read
	whdr      [9]byte             // the frame header being written
	wbufs     net.Buffers         // the frame being written: whdr and the payload's parts
	wbufsArr  [3][]byte           // wbufs' storage
	grpcHdr   [grpcHeaderLen]byte // the request message's gRPC frame header
	payload   []byte              // every frame's payload, reused; grown up to h2MaxReadFrame
	readLeft  int64               // bytes the server may still send
	control   int                 // SETTINGS and PING frames answered

	// response state
	headerBlock  []byte
	inHeaders    bool // a header block awaits CONTINUATION
	endAfterHdrs bool // that block's HEADERS had END_STREAM
	gotHeaders   bool
	firstBlock   bool // the block being decoded is the response headers
	listSize     int  // decoded size of the block being decoded
	fieldErr     error
	status       string
	grpcStatus   int
	grpcMessage  string
	respBody     []byte
	streamDone   bool
}

func (c *h2conn) appendFrameHeader(b *bytes.Buffer, length int, typ, flags byte, stream uint32) {
	var h [9]byte
	h[0], h[1], h[2] = byte(length>>16), byte(length>>8), byte(length)
	h[3], h[4] = typ, flags
	binary.BigEndian.PutUint32(h[5:], stream&0x7fffffff)
	b.Write(h[:])
}

func appendSetting(b *bytes.Buffer, id uint16, v uint32) {
	var s [6]byte
	binary.BigEndian.PutUint16(s[:], id)
	binary.BigEndian.PutUint32(s[2:], v)
	b.Write(s[:])
}

// writeFrame writes one frame whose payload is p1 followed by p2. The
// header and the payload go out together (writev on a TCP connection) and
// are not copied.
func (c *h2conn) writeFrame(typ, flags byte, stream uint32, p1, p2 []byte) error {
	length := len(p1) + len(p2)
	c.whdr[0], c.whdr[1], c.whdr[2] = byte(length>>16), byte(length>>8), byte(length)
	c.whdr[3], c.whdr[4] = typ, flags
	binary.BigEndian.PutUint32(c.whdr[5:], stream&0x7fffffff)
	c.wbufs = append(c.wbufsArr[:0], c.whdr[:])
	for _, p := range [2][]byte{p1, p2} {
		if len(p) > 0 {
			c.wbufs = append(c.wbufs, p)
		}
	}
	_, err := c.wbufs.WriteTo(c.rw) // consumes c.wbufs
	return err
}

// sendData writes head followed by body as DATA frames on the request
// stream, waiting for WINDOW_UPDATEs when the peer's flow-control windows
// are exhausted.
func (c *h2conn) sendData(head, body []byte) error {
	for {
		left := int64(len(head) + len(body))
		n := max(min(left, c.sendWin, c.streamWin, int64(c.maxFrame)), 0)
		if n > 0 || left == 0 {
			var flags byte
			if left == n {
				flags = flagEndStream
			}
			h := min(int64(len(head)), n)
			if err := c.writeFrame(frameData, flags, h2RequestStream, head[:h], body[:n-h]); err != nil {
				return fmt.Errorf("write request body: %w", err)
			}
			c.sendWin -= n
			c.streamWin -= n
			head, body = head[h:], body[n-h:]
			if flags != 0 {
				return nil
			}
			continue
		}
		// Window exhausted: process frames until the peer opens it.
		if err := c.readFrame(); err != nil {
			return err
		}
		if c.streamDone {
			return c.result()
		}
	}
}

func (c *h2conn) readResponse() ([]byte, error) {
	for !c.streamDone {
		if err := c.readFrame(); err != nil {
			return nil, err
		}
	}
	if err := c.result(); err != nil {
		return nil, err
	}
	b := c.respBody
	if len(b) < grpcHeaderLen {
		return nil, nil // an empty response message is valid
	}
	if b[0] != 0 {
		return nil, errors.New("compressed grpc response not supported")
	}
	n := binary.BigEndian.Uint32(b[1:grpcHeaderLen])
	if int64(n) > int64(len(b)-grpcHeaderLen) {
		return nil, errors.New("truncated grpc response")
	}
	return b[grpcHeaderLen : grpcHeaderLen+int(n)], nil
}

// result turns the finished stream's headers and trailers into an error.
func (c *h2conn) result() error {
	if c.status != "200" {
		return fmt.Errorf("http status %q from grpc endpoint", c.status)
	}
	switch c.grpcStatus {
	case 0:
		return nil
	case errGRPCStatusNotFound:
		return errors.New("grpc response without grpc-status")
	default:
		return &grpcStatusError{code: c.grpcStatus, msg: truncate(c.grpcMessage, h2MaxDebugText)}
	}
}

func (c *h2conn) readFrame() error {
	if _, err := io.ReadFull(c.rw, c.hdr[:]); err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	typ, flags := c.hdr[3], c.hdr[4]
	stream := binary.BigEndian.Uint32(c.hdr[5:]) & 0x7fffffff
	if length > h2MaxReadFrame {
		return fmt.Errorf("frame of %d bytes exceeds SETTINGS_MAX_FRAME_SIZE %d", length, h2MaxReadFrame)
	}
	c.readLeft -= int64(len(c.hdr) + length)
	if c.readLeft < 0 {
		return fmt.Errorf("server sent more than %d bytes: %w", MaxResponseBytes, errResponseTooLarge)
	}
	if cap(c.payload) < length {
		// Grown in steps (a server cannot make every frame reallocate)
		// up to the frame size bound; a collector's answer is tiny.
		c.payload = make([]byte, min(max(length, 2*cap(c.payload), 512), h2MaxReadFrame))
	}
	payload := c.payload[:length]
	if _, err := io.ReadFull(c.rw, payload); err != nil {
		return fmt.Errorf("read frame payload: %w", err)
	}
	// A header block is contiguous: only CONTINUATION of our stream may
	// follow a HEADERS without END_HEADERS (RFC 9113 6.10).
	if c.inHeaders != (typ == frameContinuation) || (typ == frameContinuation && stream != h2RequestStream) {
		return errors.New("protocol error: interleaved or stray CONTINUATION")
	}
	switch typ {
	case frameSettings:
		if stream != 0 {
			return errors.New("protocol error: SETTINGS on a stream")
		}
		if flags&flagAck != 0 {
			return nil
		}
		if length%6 != 0 {
			return errors.New("malformed SETTINGS frame")
		}
		if err := c.countControl(); err != nil {
			return err
		}
		for p := payload; len(p) >= 6; p = p[6:] {
			id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
			switch id {
			case settingInitialWindow:
				if v > h2MaxWindow {
					return fmt.Errorf("flow-control error: SETTINGS_INITIAL_WINDOW_SIZE %d", v)
				}
				c.streamWin += int64(v) - c.initWin
				c.initWin = int64(v)
				if c.streamWin > h2MaxWindow {
					return errors.New("flow-control error: stream window overflow")
				}
			case settingMaxFrameSize:
				c.maxFrame = int(min(max(v, h2DefaultMaxFrame), 1<<24-1))
			}
		}
		return c.writeFrame(frameSettings, flagAck, 0, nil, nil)
	case framePing:
		if flags&flagAck != 0 || length != 8 {
			return nil
		}
		if err := c.countControl(); err != nil {
			return err
		}
		return c.writeFrame(framePing, flagAck, 0, payload, nil)
	case frameWindowUpdate:
		if length != 4 {
			return errors.New("malformed WINDOW_UPDATE frame")
		}
		inc := int64(binary.BigEndian.Uint32(payload) & 0x7fffffff)
		switch stream {
		case 0:
			c.sendWin += inc
		case h2RequestStream:
			c.streamWin += inc
		}
		if c.sendWin > h2MaxWindow || c.streamWin > h2MaxWindow {
			return errors.New("flow-control error: window overflow")
		}
		return nil
	case frameGoAway:
		if length < 8 {
			return errors.New("malformed GOAWAY frame")
		}
		last := binary.BigEndian.Uint32(payload) & 0x7fffffff
		code := binary.BigEndian.Uint32(payload[4:])
		if last < h2RequestStream || code != 0 {
			return fmt.Errorf("server sent GOAWAY (code %d): %q", code, truncate(string(payload[8:]), h2MaxDebugText))
		}
		return nil // graceful: our stream is still served
	case frameRSTStream:
		if length != 4 {
			return errors.New("malformed RST_STREAM frame")
		}
		if stream == h2RequestStream {
			return fmt.Errorf("server reset the stream (code %d)", binary.BigEndian.Uint32(payload))
		}
		return nil
	case framePushPromise:
		return errors.New("unexpected PUSH_PROMISE")
	case frameHeaders, frameContinuation:
		// The server cannot open streams (push is off), and skipping a
		// block would desynchronise the HPACK state.
		if stream != h2RequestStream {
			return fmt.Errorf("protocol error: header block on stream %d", stream)
		}
		if typ == frameHeaders {
			var err error
			if payload, err = stripPadding(payload, flags); err != nil {
				return err
			}
			if flags&flagPriority != 0 {
				if len(payload) < 5 {
					return errors.New("malformed HEADERS priority")
				}
				payload = payload[5:]
			}
			c.endAfterHdrs = flags&flagEndStream != 0
		}
		if len(c.headerBlock)+len(payload) > h2MaxHeaderBlock {
			return fmt.Errorf("response header block: %w", errResponseTooLarge)
		}
		c.headerBlock = append(c.headerBlock, payload...)
		c.inHeaders = flags&flagEndHeaders == 0
		if c.inHeaders {
			return nil
		}
		c.streamDone = c.streamDone || c.endAfterHdrs
		return c.decodeHeaders()
	case frameData:
		if stream != h2RequestStream {
			return fmt.Errorf("protocol error: DATA on stream %d", stream)
		}
		data, err := stripPadding(payload, flags)
		if err != nil {
			return err
		}
		if len(c.respBody)+len(data) > MaxResponseBody {
			return fmt.Errorf("grpc response: %w", errResponseTooLarge)
		}
		c.respBody = append(c.respBody, data...)
		c.streamDone = c.streamDone || flags&flagEndStream != 0
		// The response is tiny and our initial windows (64 KiB) cover it,
		// so no WINDOW_UPDATE is ever needed from our side.
		return nil
	default:
		return nil // PRIORITY and unknown frame types are ignored
	}
}

// countControl counts a frame that needs a reply and fails past the bound.
func (c *h2conn) countControl() error {
	c.control++
	if c.control > h2MaxControlFrames {
		return fmt.Errorf("server sent more than %d SETTINGS and PING frames", h2MaxControlFrames)
	}
	return nil
}

func stripPadding(p []byte, flags byte) ([]byte, error) {
	if flags&flagPadded == 0 {
		return p, nil
	}
	if len(p) < 1 || int(p[0]) > len(p)-1 {
		return nil, errors.New("malformed padding")
	}
	return p[1 : len(p)-int(p[0])], nil
}

// decodeHeaders decodes the complete header block. Fields are handled as
// they are decoded (onField), so nothing but the few gomon reads is kept,
// and the decoded size is bounded even when the block references large
// dynamic-table entries many times.
func (c *h2conn) decodeHeaders() error {
	c.firstBlock = !c.gotHeaders
	c.gotHeaders = true
	if c.firstBlock {
		c.grpcStatus = errGRPCStatusNotFound
	}
	c.listSize, c.fieldErr = 0, nil
	_, err := c.dec.Write(c.headerBlock)
	if err == nil {
		err = c.dec.Close()
	}
	c.headerBlock = c.headerBlock[:0]
	if c.fieldErr != nil {
		return c.fieldErr
	}
	if err != nil {
		return fmt.Errorf("decode response headers: %w", err)
	}
	return nil
}

// onField is the HPACK decoder's emit function.
func (c *h2conn) onField(f hpack.HeaderField) {
	if c.fieldErr != nil {
		return
	}
	c.listSize += len(f.Name) + len(f.Value) + 32
	if c.listSize > h2MaxHeaderBlock {
		c.fieldErr = fmt.Errorf("decoded response headers: %w", errResponseTooLarge)
		return
	}
	switch f.Name {
	case ":status":
		if c.firstBlock {
			c.status = f.Value
		}
	case "grpc-status":
		code, err := strconv.Atoi(f.Value)
		if err != nil {
			c.fieldErr = fmt.Errorf("bad grpc-status %q", truncate(f.Value, 16))
			return
		}
		c.grpcStatus = code
	case "grpc-message":
		if m, err := url.PathUnescape(f.Value); err == nil {
			c.grpcMessage = m
		} else {
			c.grpcMessage = f.Value
		}
	}
}

// hostPort returns u's host:port, adding def when the URL has no port.
func hostPort(u *url.URL, def string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(strings.Trim(u.Hostname(), "[]"), def)
}
