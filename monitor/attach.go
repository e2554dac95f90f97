package monitor

import (
	"context"
	"errors"
	"fmt"

	"github.com/gomon-dev/gomon/ioloop"
)

// Attach makes sure an attach socket listens at req.SocketPath for the
// container req.ID (docs/contract.md, "Attach socket"): clients that
// connect (unixpacket) receive the container's output live, framed by
// pipe id, and what they write goes to the container's stdin (discarded
// when it has none). With StopAfterStdinEOF a client's stdin EOF closes
// a non-terminal container's stdin. The socket is listening when Attach
// returns; it and its connections are closed when the container exits
// (after the done message) or the monitor shuts down.
//
// Exec sessions are never attach targets: conmon-rs registers exec
// children under the container's ID, so an attach during an exec could
// reach the exec's I/O; gomon always attaches to the container.
func (m *Monitor) Attach(ctx context.Context, req AttachRequest) error {
	if req.SocketPath == "" {
		return fmt.Errorf("attach socket path is required: %w", ErrInvalidArgument)
	}
	if err := absolute("attach socket path", req.SocketPath); err != nil {
		return err
	}
	c, err := m.running(req.ID)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	if err := c.attach.Listen(req.SocketPath, req.StopAfterStdinEOF); err != nil {
		if errors.Is(err, ioloop.ErrClosed) { // exited meanwhile
			return fmt.Errorf("container %s has exited: %w", req.ID, ErrNotFound)
		}
		return fmt.Errorf("create attach endpoint: %w", err)
	}
	c.logger.Debug("attach endpoint ready", "path", req.SocketPath,
		"exec_session_id", req.ExecSessionID, "stop_after_stdin_eof", req.StopAfterStdinEOF)
	return nil
}
