package monitor

import (
	"io"
	"os"
	"syscall"
)

// CgroupManager selects how the runtime manages cgroups. The zero value is
// Systemd, the Cap'n Proto wire default, as in conmon-rs.
type CgroupManager uint8

const (
	// Systemd passes --systemd-cgroup to the runtime.
	Systemd CgroupManager = iota
	// Cgroupfs lets the runtime write cgroupfs directly.
	Cgroupfs
)

// LogDriverType is the kind of a container log sink.
type LogDriverType uint8

const (
	// LogCRI is the Kubernetes CRI log format (kubelet's "crictl logs").
	LogCRI LogDriverType = iota
	// LogJSON is one JSON object per line.
	LogJSON
	// LogJournald sends each line to the systemd journal.
	LogJournald
)

// LogDriver is one sink for a container's output.
type LogDriver struct {
	Type    LogDriverType
	Path    string // required for LogCRI and LogJSON
	MaxSize uint64 // bytes; 0 means unlimited
}

// CreateRequest describes a container to create through the OCI runtime.
// The fields mirror conmon-rs's CreateContainerRequest.
type CreateRequest struct {
	ID           string
	BundlePath   string
	Terminal     bool
	Stdin        bool
	ExitPaths    []string // each gets the decimal exit code, no newline
	OOMExitPaths []string // each is created empty when the container was OOM killed
	LogDrivers   []LogDriver
	CleanupCmd   []string          // run after exit; not awaited
	GlobalArgs   []string          // runtime arguments before "create"
	CommandArgs  []string          // runtime arguments after "create"
	Env          map[string]string // added to the runtime's environment
	Cgroup       CgroupManager
	// AdditionalFDs are fd-store slots dup'ed into the runtime as fds 3, 4, ….
	AdditionalFDs []uint64
	// LeakFDs are fd-store slots held open until the container exits.
	LeakFDs []uint64

	// The fields below are for Go embedders (and "gomon run"); the RPC
	// server leaves them nil.

	// Stdout and Stderr, when set, receive a copy of everything the
	// container writes to that stream (a terminal's output goes to Stdout),
	// in addition to the log drivers. A slow writer slows the container's
	// read loop, so give a fast one (or a buffered pipe).
	Stdout, Stderr io.Writer
	// Input, when set and Stdin is true, is copied into the container's
	// stdin by a goroutine. The copy ends at Input's EOF (which closes a
	// non-terminal container's stdin) or error, or when the container
	// exits; at exit the monitor sets a read deadline if Input has
	// SetReadDeadline (an *os.File pipe, a net.Conn) so the goroutine ends.
	// For any other reader it ends at Input's next Read.
	Input io.Reader
}

// ExitStatus is how a container ended.
type ExitStatus struct {
	// Code is the exit code written to the exit files: the process's exit
	// status, 128+signal when a signal killed it, or ExitUnknown.
	Code int
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
	// OOMKilled reports the kernel's OOM killer killed the container; the
	// OOM files were created before the exit files.
	OOMKilled bool
}

// FDSource hands out file descriptors that a client stored in slots
// beforehand (conmon-rs's fd socket, docs/contract.md, "StartFdSocket"). Take removes the
// fd from its slot; the caller owns and closes it. Take must be safe for
// concurrent use.
type FDSource interface {
	Take(slot uint64) (*os.File, error)
}

// ExecSyncRequest runs a command in a running container and collects its output.
type ExecSyncRequest struct {
	ID         string
	Command    []string
	TimeoutSec uint64 // 0 means no timeout
	Terminal   bool
	Env        map[string]string // added to the runtime's environment
	Cgroup     CgroupManager
}

// ExecSyncResult is the outcome of an ExecSync. Runtime failures are reported
// here (ExitCode ExitRuntimeFailed), never as an error.
type ExecSyncResult struct {
	ExitCode int32
	Stdout   []byte
	Stderr   []byte
	TimedOut bool
}

// Exit codes that are not a process's own status. Signalled processes report
// 128+signal; these negative codes match conmon-rs so CRI-O reads them alike.
const (
	ExitUnknown       = -1 // the status could not be determined
	ExitRuntimeFailed = -2 // the runtime's exec failed before the command ran
	ExitTimedOut      = -3 // killed because the exec sync timeout passed
)

// AttachRequest opens an attach socket for a container.
type AttachRequest struct {
	ID                string
	SocketPath        string
	ExecSessionID     string // only logged, as in conmon-rs
	StopAfterStdinEOF bool
}

// ServeExecRequest asks for a streaming exec session URL.
type ServeExecRequest struct {
	ID                         string
	Command                    []string
	TTY, Stdin, Stdout, Stderr bool
	Cgroup                     CgroupManager
}

// ServeAttachRequest asks for a streaming attach session URL.
type ServeAttachRequest struct {
	ID                    string
	Stdin, Stdout, Stderr bool
}
