package monitor

import (
	"errors"
	"fmt"
	"syscall"
)

// Error classes of the monitor. Callers test them with errors.Is; package rpc
// maps them to Cap'n Proto exceptions in one place. Every returned error wraps
// one of these or carries the runtime's own words (see RuntimeError).
var (
	// ErrNotFound: no container or exec session with that ID
	// (conmon-rs: "child not available").
	ErrNotFound = errors.New("child not available")
	// ErrInvalidArgument: the request itself is malformed.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrAlreadyExists: a container with that ID is already monitored.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition: the request is well formed but the object is in
	// the wrong state, e.g. a window size for a container without a terminal.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNotImplemented: the method exists in the protocol but gomon does not
	// serve it yet.
	ErrNotImplemented = errors.New("not implemented")
	// ErrShutdown: the monitor is shutting down and takes no new work.
	ErrShutdown = errors.New("monitor is shutting down")
	// ErrNoFD: a requested fd-store slot is empty (or there is no fd store).
	ErrNoFD = errors.New("no file descriptor in slot")
)

// RuntimeError is a failed OCI runtime command: it exited non-zero or was
// killed. Its text carries the runtime's own diagnostics, since callers
// (CRI-O's tests) match on them, e.g. "not found in $PATH".
type RuntimeError struct {
	Code   int            // exit status, or 128+signal
	Signal syscall.Signal // the signal that killed it, or 0
	Stderr string         // what the runtime wrote on stderr, trimmed
}

// Error renders conmon-rs's message: "child command exited with: <code>"
// plus ": <stderr>" when there was any.
func (e *RuntimeError) Error() string {
	msg := fmt.Sprintf("child command exited with: %d", e.Code)
	if e.Signal != 0 {
		msg = fmt.Sprintf("child command exited with signal: %d", int(e.Signal))
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}
