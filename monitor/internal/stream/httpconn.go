package stream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gomon-dev/gomon/internal/netguard"
)

// maxHeaderBytes bounds a request's head; upgrade requests are small.
const maxHeaderBytes = 16 << 10

// serveConn reads one HTTP/1.1 request from conn and hands it to the mux.
// A handler either upgrades (hijacks) the connection and runs the session
// on it, or answers; the connection is closed afterwards either way (no
// keep-alive: every client here makes one request). Once the request head
// has been read, an admitted connection is marked active: from then on it
// is no longer one that a newcomer may replace at the connection limit.
func (s *Server) serveConn(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(handshakeTimeout)) // fails only on a closed conn
	lc := &limitedConn{Conn: conn, left: maxHeaderBytes}
	br := bufio.NewReaderSize(lc, 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		s.log.Debug("bad streaming request", "remote", conn.RemoteAddr().String(), "error", err)
		_ = conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		_, _ = conn.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")) // closing anyway
		return
	}
	if lc, ok := conn.(*netguard.Conn); ok {
		lc.Active()
	}
	req = req.WithContext(s.ctx)
	req.RemoteAddr = conn.RemoteAddr().String()
	w := &connResponse{srv: s, conn: conn, lc: lc, br: br, header: http.Header{}}
	s.mux.ServeHTTP(w, req)
	if !w.hijacked {
		w.finish()
	}
}

// limitedConn stops reading after left bytes until unlimited, so a
// client cannot send an endless request head; the limit is lifted when
// the connection is hijacked.
type limitedConn struct {
	net.Conn
	left int // < 0: unlimited
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, errors.New("request head too large")
	}
	if c.left > 0 && len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	if c.left > 0 {
		c.left -= n
	}
	return n, err
}

// connResponse is the http.ResponseWriter (and http.Hijacker) of one
// request on a raw connection: it buffers an answer and writes it with a
// Content-Length on finish, or gives the connection to the upgrader.
type connResponse struct {
	srv      *Server // told on Hijack: the session owns the connection
	conn     net.Conn
	lc       *limitedConn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

var (
	_ http.ResponseWriter = (*connResponse)(nil)
	_ http.Hijacker       = (*connResponse)(nil)
)

func (w *connResponse) Header() http.Header { return w.header }

func (w *connResponse) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *connResponse) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	if w.body.Len()+len(p) > maxHeaderBytes {
		return 0, errors.New("response too large")
	}
	return w.body.Write(p)
}

// Hijack hands the connection over; bytes the client sent after its
// request head are in the returned reader.
func (w *connResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	w.lc.left = -1      // from now on the reader carries the session
	w.srv.owned(w.conn) // the session closes it from now on
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriter(w.conn)), nil
}

// finish writes the buffered answer.
func (w *connResponse) finish() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	_ = w.header.Write(&b) // a bytes.Buffer never fails
	b.WriteString("\r\n")
	b.Write(w.body.Bytes())
	_ = w.conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	_, _ = w.conn.Write(b.Bytes()) // the connection is closed next; nothing to do on error
}
