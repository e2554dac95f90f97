package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"

	"github.com/gomon-dev/gomon/internal/contain"
	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor/internal/stream"
)

// Streaming attach: the session's Run. It joins the container's attach
// server (ioloop.AttachServer) as one more client, over a per-container
// attach socket in the run directory, so it gets exactly what attach
// socket clients get: live output that never blocks the container's read
// loop (a slow client has chunks dropped and counted), input to the
// container's stdin, and the end of output when the container exits.

// streamAttachPath is the container's streaming attach socket: in the run
// directory, named by a hash of the ID so any ID makes a valid name.
func (m *Monitor) streamAttachPath(id string) string {
	dir := m.runDir()
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(dir, "streaming-attach-"+hex.EncodeToString(sum[:8]))
}

// streamAttach pumps the container's I/O for one client until the
// container's output ends (it exited) or ctx ends (client gone,
// Shutdown).
func (m *Monitor) streamAttach(ctx context.Context, id string, sio stream.IO) (int, error) {
	c, err := m.running(id)
	if err != nil {
		return 0, err
	}
	ctx, done, err := m.beginOp(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	path := m.streamAttachPath(id)
	if err := c.attach.Listen(path, false); err != nil {
		if errors.Is(err, ioloop.ErrClosed) {
			return 0, fmt.Errorf("container %s has exited: %w", id, ErrNotFound)
		}
		return 0, fmt.Errorf("create attach endpoint: %w", err)
	}
	conn, err := dialAttachSocket(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() }) // ends the output loop
	defer stop()
	c.logger.Debug("streaming attach connected")

	var input sync.WaitGroup
	stopInput := make(chan struct{})
	defer func() {
		close(stopInput)
		if sio.Stdin != nil {
			_ = sio.Stdin.Close() // ends a pending read
		}
		_ = conn.Close() // ends a blocked write
		input.Wait()
	}()
	if sio.Stdin != nil {
		input.Go(func() {
			defer contain.Recover(c.logger, contain.Stream, func(*contain.PanicError) { _ = conn.Close() })
			copyAttachInput(conn, sio.Stdin)
		})
	}
	if sio.Resize != nil {
		input.Go(func() {
			defer contain.Recover(c.logger, contain.Stream, nil) // no more resizes for this session
			for {
				select {
				case sz := <-sio.Resize:
					if err := m.SetWindowSize(ctx, id, sz.Width, sz.Height); err != nil {
						c.logger.Debug("resize for streaming attach", "error", err)
					}
				case <-stopInput:
					return
				}
			}
		})
	}

	buf := make([]byte, 1+ioloop.AttachMaxPayload)
	out := map[byte]io.Writer{ioloop.AttachPipeStdout: sio.Stdout, ioloop.AttachPipeStderr: sio.Stderr}
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("streaming attach: %w", context.Cause(ctx))
			}
			return 0, nil // the attach server closed: the container exited
		}
		if buf[0] == ioloop.AttachPipeDone {
			return 0, nil
		}
		w := out[buf[0]]
		if w == nil {
			continue // a stream the client did not ask for
		}
		if _, err := w.Write(buf[1:n]); err != nil {
			// The client is gone; its context ends too. Keep reading so
			// the attach server does not count drops meanwhile.
			out[buf[0]] = nil
		}
	}
}

// copyAttachInput sends the client's stdin to the attach socket, one
// message per read (at most 32 KiB, what the attach server takes at once),
// and half-closes the socket at the client's stdin EOF.
func copyAttachInput(conn *net.UnixConn, in io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = conn.CloseWrite() // stdin EOF; output keeps flowing
			}
			return
		}
	}
}

// dialAttachSocket connects to the attach socket at path through
// /proc/self/fd/<dir>/<name>, so a run directory beyond sun_path works.
func dialAttachSocket(path string) (*net.UnixConn, error) {
	return ioloop.DialUnix("unixpacket", path)
}
