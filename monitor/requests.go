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
	// OOMKilled reports the kernel's OOM killer killed the container's
	// init (OOMKills.Init is 1); the OOM files were created before the exit
	// files. A kill of any other process of the container does not count
	// (see OOMKills).
	OOMKilled bool
	// OOMKills counts the OOM killer's kills in the container's memory
	// cgroup while it ran.
	OOMKills OOMKills
}

// OOMKills counts the kernel OOM killer's kills in the memory cgroup of a
// container (or of the container an exec session ran in), split by victim.
//
// The kernel counts kills per cgroup, not per process. A kill is the
// process's own (Init) when the process died of SIGKILL and the cgroup's
// count grew while it ran: an OOM victim dies of SIGKILL, and a process
// that exited otherwise, or survived, was not the victim. Every other kill
// counted there (a child, an exec session's process, for an exec session
// also the container's processes) is Other. A process SIGKILLed by someone
// else while another process was OOM killed still counts as Init: the
// counter cannot tell those apart.
type OOMKills struct {
	Init  uint64 // 0 or 1: the container's init, or the exec's process
	Other uint64 // any other process of the cgroup
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
	// OOMKilled reports the OOM killer killed the exec's process
	// (OOMKills.Init is 1). OOMKills counts the kills in the container's
	// memory cgroup while the process ran, taken only when it exited by
	// itself (not timed out or cancelled) and the container's cgroup is
	// watched.
	OOMKilled bool
	OOMKills  OOMKills
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
