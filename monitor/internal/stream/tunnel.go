package stream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// tunnelConn is a net.Conn whose bytes travel in WebSocket binary
// messages, as client-go's portforward.TunnelingConnection frames a SPDY
// connection: message boundaries carry no meaning, each Write is one
// message.
type tunnelConn struct {
	ws *websocket.Conn

	rmu sync.Mutex // one reader at a time
	cur io.Reader  // guarded by rmu; the message being read

	wmu       sync.Mutex // one writer at a time
	closeOnce sync.Once
}

var _ net.Conn = (*tunnelConn)(nil)

func newTunnelConn(ws *websocket.Conn) *tunnelConn { return &tunnelConn{ws: ws} }

// Read reads from the current message, moving to the next at its end. A
// normal close of the WebSocket is io.EOF.
func (c *tunnelConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.cur == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
					return 0, io.EOF
				}
				return 0, fmt.Errorf("read tunnel: %w", err)
			}
			if mt != websocket.BinaryMessage {
				return 0, errors.New("read tunnel: text message in a binary tunnel")
			}
			c.cur = r
		}
		n, err := c.cur.Read(p)
		if errors.Is(err, io.EOF) {
			c.cur = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (c *tunnelConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, fmt.Errorf("write tunnel: %w", err)
	}
	return len(p), nil
}

// Close sends a normal close (best effort) and closes the connection.
func (c *tunnelConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)) // the peer may be gone
		err = c.ws.Close()
	})
	return err
}

func (c *tunnelConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *tunnelConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *tunnelConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
