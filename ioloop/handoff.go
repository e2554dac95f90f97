package ioloop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// ErrHandedOff is the error of a read loop stopped by StopForHandoff.
var ErrHandedOff = errors.New("read loop stopped for a handoff")

// handedOff holds the readers whose loops are being stopped for a handoff
// (keys are the io.Reader given to ReadLoop). It holds at most the streams
// of the containers of one handoff, and StopForHandoff's caller empties it
// with EndHandoff.
var handedOff sync.Map

// StopForHandoff stops the read loop of r (an *os.File) at its next read
// without losing anything: unlike a plain read deadline, what the stream
// still holds stays in it, unread, for whoever reads it next (a new gomon
// process after an upgrade in place, or a new loop if the handoff is
// abandoned). A chunk already read is written out first. The loop returns
// an error wrapping ErrHandedOff. Call EndHandoff(r) once the loop ended.
func StopForHandoff(r io.Reader) error {
	d, ok := r.(interface{ SetReadDeadline(time.Time) error })
	if !ok {
		return fmt.Errorf("stop read loop: %T takes no read deadline", r)
	}
	handedOff.Store(r, struct{}{})
	if err := d.SetReadDeadline(time.Now()); err != nil {
		handedOff.Delete(r)
		return fmt.Errorf("stop read loop: %w", err)
	}
	return nil
}

// EndHandoff forgets r's handoff and clears its read deadline, so a new
// ReadLoop on r reads normally.
func EndHandoff(r io.Reader) {
	handedOff.Delete(r)
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = d.SetReadDeadline(time.Time{}) // a closed file: nothing to read anyway
	}
}

// isHandedOff reports whether r's loop is being stopped by StopForHandoff.
func isHandedOff(r io.Reader) bool {
	_, ok := handedOff.Load(r)
	return ok
}

// AttachSocket is one attach socket of an AttachServer, as a handoff
// carries it.
type AttachSocket struct {
	Path              string
	StopAfterStdinEOF bool
}

// HandoffState returns the server's attach sockets (a handoff carries
// them, not their clients: DisconnectClients).
func (s *AttachServer) HandoffState() []AttachSocket {
	s.mu.Lock()
	defer s.mu.Unlock()
	sockets := make([]AttachSocket, 0, len(s.listeners))
	for _, l := range s.listeners {
		sockets = append(sockets, AttachSocket{Path: l.path, StopAfterStdinEOF: l.stopAfterStdinEOF})
	}
	return sockets
}

// DisconnectClients ends the connected clients for a handoff and returns
// how many there were. Each is sent what is already queued for it (within
// the flush timeout), then its connection is closed without the done
// message, since the container's output goes on: the client sees its
// connection end and may connect again, to the process that took over.
// It waits for them within ctx. The listeners stay open: a client that
// connects meanwhile is served until the exec closes its connection.
func (s *AttachServer) DisconnectClients(ctx context.Context) (int, error) {
	s.mu.Lock()
	cs := s.clientsLocked()
	s.mu.Unlock()
	deadline := time.Now().Add(s.flush)
	for _, c := range cs {
		c.shutdown(deadline, false)
	}
	for _, c := range cs {
		select {
		case <-c.released:
		case <-ctx.Done():
			return len(cs), fmt.Errorf("disconnect attach clients: %w", ctx.Err())
		}
	}
	return len(cs), nil
}
