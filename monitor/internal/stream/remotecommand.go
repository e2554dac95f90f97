package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gomon-dev/gomon/internal/contain"
)

// Channels of the remote command protocol: the first byte of every binary
// message.
const (
	chanStdin  byte = 0
	chanStdout byte = 1
	chanStderr byte = 2
	chanError  byte = 3
	chanResize byte = 4
	chanClose  byte = 255 // client → server: payload is the closed channel
)

const (
	// writeTimeout bounds one message write: a client that stops reading
	// for this long is treated as gone (client-go uses the same bound).
	writeTimeout = 60 * time.Second
	// closeTimeout bounds waiting for the client's answer to our close.
	closeTimeout = 5 * time.Second
	// maxMessage bounds one client message; client-go sends at most
	// 32 KiB of stdin per message.
	maxMessage = 1 << 20
	// maxResizeJSON bounds a resize message.
	maxResizeJSON = 1024
)

// TerminalSize is a terminal's size in character cells.
type TerminalSize struct {
	Width, Height uint16
}

// IO is a session's streams as Command.Run sees them. Only the streams
// the session asked for are set.
type IO struct {
	// Stdin is what the client sends; it returns io.EOF when the client
	// closes stdin (v5 channel close) or goes away. Run may Close it to
	// end a pending Read. Nil unless the session has stdin.
	Stdin io.ReadCloser
	// Stdout and Stderr send to the client, one message per Write. A
	// Write blocks while the client does not read (bounded by a minute)
	// and fails once the client is gone; Run should then keep draining
	// its source and discard. Stderr is nil for a TTY session.
	Stdout, Stderr io.Writer
	// Resize delivers terminal sizes, the latest one when Run is slow to
	// take them. Nil unless the session has a TTY.
	Resize <-chan TerminalSize
}

// Command is an exec or attach session.
type Command struct {
	Stdin, Stdout, Stderr, TTY bool
	// Run runs the session once its client has connected and returns when
	// the command (exec) or container (attach) has ended, with its exit
	// code. ctx ends when the client goes away or the server closes; Run
	// must then stop promptly. A non-nil error is reported to the client
	// as a failure status; a non-zero code as client-go's exit error.
	Run func(ctx context.Context, io IO) (exitCode int, err error)
}

// wsSession is one upgraded remote command connection.
type wsSession struct {
	conn *websocket.Conn
	log  *slog.Logger

	wmu sync.Mutex // serialises data messages (gorilla allows one writer)

	stdinR *io.PipeReader
	stdinW *io.PipeWriter
	resize chan TerminalSize // capacity 1, latest wins
}

// serveCommand runs cmd over conn: a reader goroutine demultiplexes the
// client's messages while cmd.Run runs; then the exit status goes out on
// the error channel and the connection is closed normally.
func serveCommand(ctx context.Context, conn *websocket.Conn, cmd Command, log *slog.Logger) {
	ws := &wsSession{conn: conn, log: log}
	var sio IO
	if cmd.Stdin {
		ws.stdinR, ws.stdinW = io.Pipe()
		sio.Stdin = ws.stdinR
	}
	if cmd.Stdout {
		sio.Stdout = channelWriter{ws, chanStdout}
	}
	if cmd.Stderr && !cmd.TTY {
		sio.Stderr = channelWriter{ws, chanStderr}
	}
	if cmd.TTY {
		ws.resize = make(chan TerminalSize, 1)
		sio.Resize = ws.resize
	}
	conn.SetReadLimit(maxMessage)

	server := ctx // ends when the server closes (Shutdown, an upgrade)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer cancel() // the client is gone: end Run
		defer contain.Recover(log, contain.Stream, nil)
		ws.readLoop()
	}()
	// Closing the connection ends the reader; done when ctx ends (client
	// gone, server closing) before Run returned. A closing server says so
	// first: the client sees a going-away close, not a dropped connection.
	end := func() {
		if server.Err() != nil {
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "the container monitor is stopping or being upgraded")
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)) // bounded: the peer may be gone or stalled
		}
		_ = conn.Close()
	}
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		end()
	})

	var code int
	var err error
	if cmd.Run == nil {
		err = errors.New("session has nothing to run")
	} else {
		code, err = run(ctx, cmd, sio, log)
	}
	if ws.stdinR != nil {
		_ = ws.stdinR.Close() // the reader must not block on stdin any more
	}
	switch {
	case !stop():
		<-closed // the going-away close is written before the connection closes
	case server.Err() != nil:
		// The server is closing, and Run saw ctx end before the
		// after-func was started (a context is done before its
		// children's cancels run): the client still gets going-away,
		// not a normal end.
		end()
	default: // the connection is still open: report and close it
		ws.finish(statusFor(code, err))
	}
	_ = conn.Close()
	<-readDone
	if err != nil {
		log.Debug("streaming command failed", "error", err)
	}
}

// run runs cmd; a panic in it fails the session with the panic as its
// error, which the client gets as the failure status.
func run(ctx context.Context, cmd Command, sio IO, log *slog.Logger) (code int, err error) {
	defer contain.Recover(log, contain.Stream, func(p *contain.PanicError) { code, err = 0, p })
	return cmd.Run(ctx, sio)
}

// finish sends the status on the error channel, then a normal close, and
// waits (bounded) for the client's close so it has read everything.
func (ws *wsSession) finish(st []byte) {
	if err := ws.write(chanError, st); err != nil {
		ws.log.Debug("send exit status", "error", err)
		return
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done")
	if err := ws.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeTimeout)); err != nil {
		return
	}
	_ = ws.conn.SetReadDeadline(time.Now().Add(closeTimeout)) // ends the reader if the client never answers
}

// write sends one message on channel ch.
func (ws *wsSession) write(ch byte, p []byte) error {
	ws.wmu.Lock()
	defer ws.wmu.Unlock()
	if err := ws.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	w, err := ws.conn.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return fmt.Errorf("start message: %w", err)
	}
	if _, err := w.Write([]byte{ch}); err != nil {
		_ = w.Close()
		return fmt.Errorf("write message: %w", err)
	}
	if _, err := w.Write(p); err != nil {
		_ = w.Close()
		return fmt.Errorf("write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	return nil
}

// readLoop demultiplexes client messages until the connection ends. Pings
// are answered inside NextReader (gorilla's default handler).
func (ws *wsSession) readLoop() {
	defer func() {
		if ws.stdinW != nil {
			_ = ws.stdinW.Close() // EOF for the command's stdin
		}
	}()
	var hdr [1]byte
	for {
		mt, r, err := ws.conn.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				ws.log.Debug("streaming connection ended", "error", err)
			}
			return
		}
		if mt != websocket.BinaryMessage {
			continue // text frames belong to the base64 protocols we do not offer
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			continue // an empty message: nothing to do
		}
		switch hdr[0] {
		case chanStdin:
			if ws.stdinW == nil {
				continue
			}
			if _, err := io.Copy(ws.stdinW, r); err != nil {
				ws.stdinW = nil // the command stopped reading stdin: discard from now on
			}
		case chanResize:
			ws.readResize(r)
		case chanClose:
			if _, err := io.ReadFull(r, hdr[:]); err == nil && hdr[0] == chanStdin && ws.stdinW != nil {
				_ = ws.stdinW.Close()
				ws.stdinW = nil
			}
		default:
			// Unknown channels are ignored, as the kubelet does.
		}
	}
}

// readResize decodes one resize message and offers it, replacing a size
// Run has not taken yet.
func (ws *wsSession) readResize(r io.Reader) {
	if ws.resize == nil {
		return
	}
	var sz TerminalSize
	if err := json.NewDecoder(io.LimitReader(r, maxResizeJSON)).Decode(&sz); err != nil {
		ws.log.Debug("bad resize message", "error", err)
		return
	}
	for {
		select {
		case ws.resize <- sz:
			return
		default:
		}
		select {
		case <-ws.resize: // drop the stale size
		default:
		}
	}
}

// channelWriter sends each Write as one message on a channel.
type channelWriter struct {
	ws *wsSession
	ch byte
}

func (w channelWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := w.ws.write(w.ch, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// status is the subset of a Kubernetes metav1.Status that the error
// channel carries; its JSON matches what the kubelet sends.
type status struct {
	Metadata struct{}       `json:"metadata"`
	Status   string         `json:"status"`
	Message  string         `json:"message,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Details  *statusDetails `json:"details,omitempty"`
	Code     int            `json:"code,omitempty"`
}

type statusDetails struct {
	Causes []statusCause `json:"causes,omitempty"`
}

type statusCause struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// statusFor renders the exit status: Success for 0, NonZeroExitCode with
// an ExitCode cause otherwise (client-go turns it into an exec.ExitError),
// InternalError for err.
func statusFor(code int, err error) []byte {
	var st status
	switch {
	case err != nil:
		st = status{
			Status:  "Failure",
			Message: "Internal error occurred: " + err.Error(),
			Reason:  "InternalError",
			Details: &statusDetails{Causes: []statusCause{{Message: err.Error()}}},
			Code:    500,
		}
	case code < 0 || code > 255:
		// client-go parses the ExitCode cause as a uint8; report codes
		// outside it (gomon's ExitUnknown) as a failure with the code.
		st = status{
			Status:  "Failure",
			Message: fmt.Sprintf("command terminated with exit code %d", code),
			Reason:  "InternalError",
			Code:    500,
		}
	case code != 0:
		st = status{
			Status:  "Failure",
			Message: fmt.Sprintf("command terminated with non-zero exit code: exit status %d", code),
			Reason:  "NonZeroExitCode",
			Details: &statusDetails{Causes: []statusCause{{Reason: "ExitCode", Message: strconv.Itoa(code)}}},
		}
	default:
		st = status{Status: "Success"}
	}
	b, mErr := json.Marshal(st)
	if mErr != nil { // cannot happen for this type
		return []byte(`{"metadata":{},"status":"Failure","message":"encode status"}`)
	}
	return b
}
