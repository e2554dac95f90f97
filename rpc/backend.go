package rpc

import (
	"context"

	"github.com/gomon-dev/gomon/monitor"
)

// Backend is what the RPC adapter needs from the monitor. *monitor.Monitor
// implements it; unit tests use a recorder at this seam.
//
// Methods may be called concurrently and may block for as long as the
// operation takes (a create waits for the runtime); the adapter releases the
// RPC connection before calling any of them.
type Backend interface {
	CreateContainer(ctx context.Context, req monitor.CreateRequest) (uint32, error)
	ExecSync(ctx context.Context, req monitor.ExecSyncRequest) (monitor.ExecSyncResult, error)
	Attach(ctx context.Context, req monitor.AttachRequest) error
	ReopenLog(ctx context.Context, id string) error
	SetWindowSize(ctx context.Context, id string, width, height uint16) error
	CreateNamespaces(ctx context.Context, req monitor.NamespacesRequest) ([]monitor.NamespacePath, error)
	StartFdSocket(ctx context.Context) (string, error)
	ServeExec(ctx context.Context, req monitor.ServeExecRequest) (string, error)
	ServeAttach(ctx context.Context, req monitor.ServeAttachRequest) (string, error)
	ServePortForward(ctx context.Context, netNsPath string) (string, error)
}

var _ Backend = (*monitor.Monitor)(nil)

// VersionInfo is what the version method reports. conmon-rs fills the last
// three fields with rustc, cargo and `cargo tree` output; gomon puts the Go
// equivalents there, never empty strings.
type VersionInfo struct {
	Version      string // semantic version without a "v" prefix, e.g. "0.5.0"
	Tag          string // git describe output, or "none"
	Commit       string
	BuildDate    string
	Target       string // GOOS/GOARCH
	RustVersion  string // the Go toolchain, e.g. "go1.26.8"
	CargoVersion string // the main module and its version
	CargoTree    string // the module list; sent only for verbose requests
}
