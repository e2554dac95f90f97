// Package monitor is gomon's embeddable engine: one Monitor per pod runs
// containers through an OCI runtime, holds their stdio, reaps them and writes
// their exit files. It knows nothing of Cap'n Proto; package rpc adapts it.
package monitor

import (
	"context"
	"log/slog"
)

// Config configures a Monitor.
type Config struct {
	Runtime     string       // path of the OCI runtime binary (runc, crun)
	RuntimeRoot string       // passed as --root=; empty for the runtime's default
	RunDir      string       // state directory: exec pidfiles and sockets
	LogLevel    slog.Level   // the server's log level; mapped to crun's --log-level
	Logger      *slog.Logger // nil discards
	Env         []string     // base environment of runtime processes; nil = os.Environ()
}

// Monitor monitors the containers of one pod.
type Monitor struct {
	cfg Config
	log *slog.Logger
}

// New returns a Monitor for cfg.
func New(cfg Config) (*Monitor, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Monitor{cfg: cfg, log: log}, nil
}

// CreateContainer creates a container with the runtime and monitors it. It
// returns the container's init PID once the runtime's create has finished.
func (m *Monitor) CreateContainer(ctx context.Context, req CreateRequest) (uint32, error) {
	return 0, ErrNotImplemented
}

// ExecSync runs a command in a container and returns its output.
func (m *Monitor) ExecSync(ctx context.Context, req ExecSyncRequest) (ExecSyncResult, error) {
	return ExecSyncResult{}, ErrNotImplemented
}

// Attach makes sure an attach socket listens at req.SocketPath.
func (m *Monitor) Attach(ctx context.Context, req AttachRequest) error {
	return ErrNotImplemented
}

// ReopenLog reopens the log files of a container.
func (m *Monitor) ReopenLog(ctx context.Context, id string) error {
	return ErrNotImplemented
}

// SetWindowSize resizes a container's terminal.
func (m *Monitor) SetWindowSize(ctx context.Context, id string, width, height uint16) error {
	return ErrNotImplemented
}

// Shutdown kills every monitored container, waits for their exit files and
// releases the monitor's resources. It is idempotent.
func (m *Monitor) Shutdown(ctx context.Context) error {
	return nil
}
