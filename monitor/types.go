package monitor

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
	CleanupCmd   []string // run after exit; not awaited
	GlobalArgs   []string // runtime arguments before "create"
	CommandArgs  []string // runtime arguments after "create"
	Env          map[string]string // added to the runtime's environment
	Cgroup       CgroupManager
	// AdditionalFDs are fd-store slots dup'ed into the runtime as fds 3, 4, ….
	AdditionalFDs []uint64
	// LeakFDs are fd-store slots held open until the container exits.
	LeakFDs []uint64
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
