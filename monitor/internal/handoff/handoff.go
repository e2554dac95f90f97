// Package handoff is the versioned record a gomon process hands to the
// binary it execs during an upgrade in place (docs/upgrade.md): what the
// new process needs to go on monitoring the pod's running containers. The
// file descriptors it names are inherited across execve (their
// close-on-exec flag is cleared just before), so the record holds their
// numbers, not their contents.
//
// A record carries Schema; a binary refuses a record whose schema it does
// not know (Decode), and the old process runs the new binary on the record
// before the point of no return to learn that (the dry run).
package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Schema is the newest version of the record this binary writes and
// reads, MinSchema the oldest it reads. Change Schema whenever a field's
// meaning changes or a field is added (a reader refuses fields it does not
// know); a reader refuses versions outside [MinSchema, Schema]. A writer
// stamps the oldest version whose fields hold the record (Encode), so an
// older binary still takes over a record that needs nothing newer.
//
// Schema 2 added terminals (terminal, console_fd), leaked fds
// (leak_fds), the exited containers' tombstones (exited), the asker's
// traceparent, the pause process (pause) and the fd socket (fd_socket).
// Schema 3 added the exited containers' metric counters and identity
// (exited[].metrics, exited[].identity).
const (
	Schema    = 3
	MinSchema = 2
)

// MaxContainers bounds the containers of one record (and, apart, its
// exited ones), MaxLeakFDs the leaked fds of one container, and MaxSize
// its encoded size, so a record read from disk cannot make the reader
// allocate without bound. A pod has a few dozen containers at most, and
// the monitor remembers 256 exited ones.
const (
	MaxContainers = 4096
	MaxLeakFDs    = 1024
	MaxSize       = 16 << 20
)

// ErrSchema is a record of a schema this binary does not know.
var ErrSchema = errors.New("unknown upgrade state schema")

// State is the whole record.
type State struct {
	Schema int `json:"schema"`
	// From is the version of the gomon that wrote the record.
	From string `json:"from"`
	// ListenerFD is the inherited conmon.sock listener.
	ListenerFD int `json:"listener_fd"`
	// ControlFD is the inherited connection of whoever asked for the
	// upgrade, -1 for a SIGHUP: the new process writes the result there.
	ControlFD int `json:"control_fd"`
	// StartPath is the path the daemon was first started from: the
	// default binary of its next upgrade, whatever binary this one ran.
	StartPath string `json:"start_path,omitempty"`
	// PausedAt is when the old process stopped taking calls (Unix
	// nanoseconds), for the pause length the new one reports.
	PausedAt int64 `json:"paused_at_unix_nano"`
	// TraceParent is the span of whoever asked for the upgrade (a W3C
	// traceparent, "" if none): the new process's `upgrade` span is its
	// child.
	TraceParent string `json:"traceparent,omitempty"`
	// Containers are the running containers handed over.
	Containers []Container `json:"containers"`
	// Exited are the tombstones of exited containers the monitor still
	// answers late calls for, oldest first.
	Exited []Tombstone `json:"exited,omitempty"`
	// Pause is the pod's pause process (CreateNamespaces), nil if none
	// was started: the new process stops it at shutdown.
	Pause *Pause `json:"pause,omitempty"`
	// FDSocket is the fd socket (StartFdSocket), nil if none was
	// started: its inherited listener.
	FDSocket *FDSocket `json:"fd_socket,omitempty"`
}

// Pause is the pause process and its namespace files.
type Pause struct {
	// PID is the pause process, a child of the daemon; 0 when it had
	// already exited (and was reaped): only its files are left to remove.
	PID     int    `json:"pid"`
	PIDFile string `json:"pid_file"`
	// Namespaces are the bind-mounted namespace files, in the order ipc,
	// pid, net, user, uts (type 0 to 4).
	Namespaces []Namespace `json:"namespaces"`
}

// Namespace is one namespace file of the pause process.
type Namespace struct {
	Type uint8  `json:"type"`
	Path string `json:"path"`
}

// FDSocket is the fd socket: its listener, its open connections with
// the fds they stored (a stored fd lives as long as the connection that
// sent it) and the slot counter.
type FDSocket struct {
	FD    int      `json:"fd"`
	Path  string   `json:"path"`
	Last  uint64   `json:"last_slot,omitempty"`
	Conns []FDConn `json:"conns,omitempty"`
}

// FDs returns every fd the record names (none for a nil record): the
// listener, the connections and the stored fds.
func (f *FDSocket) FDs() []int {
	if f == nil {
		return nil
	}
	fds := []int{f.FD}
	for _, c := range f.Conns {
		fds = append(fds, c.FD)
		for _, sl := range c.Slots {
			fds = append(fds, sl.FD)
		}
	}
	return fds
}

// FDConn is one open connection of the fd socket and the fds it stored
// that nobody took yet.
type FDConn struct {
	FD    int      `json:"fd"`
	Slots []FDSlot `json:"slots,omitempty"`
}

// FDSlot is one stored fd and its slot.
type FDSlot struct {
	Slot uint64 `json:"slot"`
	FD   int    `json:"fd"`
}

// Container is one running container.
type Container struct {
	ID         string `json:"id"`
	PID        int    `json:"pid"`
	BundlePath string `json:"bundle_path"`
	// StdoutFD and StderrFD are the pipes' read ends; -1 for a terminal.
	StdoutFD int `json:"stdout_fd"`
	StderrFD int `json:"stderr_fd"`
	// Terminal is the create's terminal flag; ConsoleFD is then the pty
	// master, the container's output (logged as stdout) and, with Stdin,
	// its input.
	Terminal  bool `json:"terminal,omitempty"`
	ConsoleFD int  `json:"console_fd,omitempty"`
	// Stdin is the create's stdin flag; StdinFD the write end of the
	// container's stdin pipe, -1 once it was closed (stdin EOF) and for a
	// terminal.
	Stdin   bool `json:"stdin,omitempty"`
	StdinFD int  `json:"stdin_fd,omitempty"`
	// LeakFDs are the fds the create was asked to hold until the
	// container exits (LeakFDs), with the identity of the file each had,
	// checked before the new process takes it.
	LeakFDs    []FD     `json:"leak_fds,omitempty"`
	ExitFiles  []Exit   `json:"exit_files,omitempty"`
	OOMPaths   []string `json:"oom_exit_paths,omitempty"`
	LogDrivers []Log    `json:"log_drivers,omitempty"`
	CleanupCmd []string `json:"cleanup_cmd,omitempty"`
	GlobalArgs []string `json:"global_args,omitempty"`
	// CommandArgs and Env are the create's runtime arguments and
	// environment, kept for what later calls derive from them.
	CommandArgs []string          `json:"command_args,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Cgroup      uint8             `json:"cgroup_manager"`
	// Attach are the container's attach sockets; the new process binds
	// them again (their clients are not carried: the old process refuses
	// an upgrade while any is connected).
	Attach []Attach `json:"attach,omitempty"`
	// TraceParent is the create's span (a W3C traceparent, "" if none):
	// the new process's read_loop and wait_for_exit_code spans of the
	// container join the trace of the create that started it.
	TraceParent string `json:"traceparent,omitempty"`
	// Metrics are the container's metric counters (nil with metrics
	// off), carried so that an upgrade does not reset them.
	Metrics *Metrics `json:"metrics,omitempty"`
}

// Metrics are a container's cumulative metric counters (monitor's
// containerMetrics), in the order the monitor defines; a record whose
// lengths do not match the new binary's is dropped and the counters start
// again (a counter reset).
type Metrics struct {
	Start   int64           `json:"start"` // the series' start, Unix ns
	Streams []StreamMetrics `json:"streams"`
	OOM     []uint64        `json:"oom"`
	Exec    []Hist          `json:"exec"`
}

// StreamMetrics are one stream's log counters; Present is false for a
// stream without a loop.
type StreamMetrics struct {
	Present        bool     `json:"present,omitempty"`
	WrittenBytes   uint64   `json:"written_bytes"`
	WrittenRecords uint64   `json:"written_records"`
	DroppedBytes   []uint64 `json:"dropped_bytes"`
	DroppedRecords []uint64 `json:"dropped_records"`
	Partials       uint64   `json:"partials"`
}

// Hist is a histogram's state: its bucket counts, count and sum.
type Hist struct {
	Counts []uint64 `json:"counts"`
	Count  uint64   `json:"count"`
	Sum    float64  `json:"sum"`
}

// FD is an inherited fd that may be of any kind, and the device and
// inode of its file (fstat), so the new process takes it only if it is
// that file.
type FD struct {
	FD  int    `json:"fd"`
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// Tombstone is what the monitor remembers of an exited container to
// answer late calls (monitor's tombstone): its exit status, and its
// cgroup manager and runtime global arguments for the runtime calls
// made on its behalf.
type Tombstone struct {
	ID         string   `json:"id"`
	ExitCode   int      `json:"exit_code"`
	Signal     int      `json:"signal,omitempty"`
	OOMKilled  bool     `json:"oom_killed,omitempty"`
	OOMInit    uint64   `json:"oom_kills_init,omitempty"`
	OOMOther   uint64   `json:"oom_kills_other,omitempty"`
	Cgroup     uint8    `json:"cgroup_manager"`
	GlobalArgs []string `json:"global_args,omitempty"`
	// Metrics are the container's metric counters and Identity the
	// labels of its series, so that they go on until the tombstone goes
	// (nil with metrics off; schema 3).
	Metrics  *Metrics  `json:"metrics,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
}

// Identity is a container's pod and name as its bundle named them.
type Identity struct {
	PodName       string `json:"pod_name,omitempty"`
	PodNamespace  string `json:"pod_namespace,omitempty"`
	PodUID        string `json:"pod_uid,omitempty"`
	ContainerName string `json:"container_name,omitempty"`
}

// Exit is one exit path and the temporary file reserved for it ("" if
// none).
type Exit struct {
	Path string `json:"path"`
	Tmp  string `json:"tmp,omitempty"`
}

// Log is one log driver: type is 0 CRI, 1 JSON, 2 journald (as
// monitor.LogDriverType).
type Log struct {
	Type    uint8  `json:"type"`
	Path    string `json:"path,omitempty"`
	MaxSize uint64 `json:"max_size,omitempty"`
}

// Attach is one attach socket.
type Attach struct {
	Path              string `json:"path"`
	StopAfterStdinEOF bool   `json:"stop_after_stdin_eof,omitempty"`
}

// Encode returns the record as JSON, stamped with the oldest schema that
// holds it (schemaOf).
func Encode(s *State) ([]byte, error) {
	s.Schema = schemaOf(s)
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode upgrade state: %w", err)
	}
	return b, nil
}

// schemaOf is the oldest schema whose fields hold s.
func schemaOf(s *State) int {
	for _, t := range s.Exited {
		if t.Metrics != nil || t.Identity != nil {
			return 3
		}
	}
	return 2
}

// Decode parses and validates a record: its schema must be one this
// binary reads and hold the record's fields, every field a reader relies
// on must be there, and no fd may be named twice. It touches no fd.
func Decode(b []byte) (*State, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("upgrade state of %d bytes is over the %d-byte limit", len(b), MaxSize)
	}
	var probe struct {
		Schema *int `json:"schema"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("decode upgrade state: %w", err)
	}
	if probe.Schema == nil || *probe.Schema < MinSchema || *probe.Schema > Schema {
		got := "none"
		if probe.Schema != nil {
			got = fmt.Sprint(*probe.Schema)
		}
		return nil, fmt.Errorf("%w: schema %s, this binary reads schemas %d to %d", ErrSchema, got, MinSchema, Schema)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields() // a field this binary would ignore is a field it does not carry
	var s State
	if err := d.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode upgrade state: %w", err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("invalid upgrade state: %w", err)
	}
	if need := schemaOf(&s); s.Schema < need {
		return nil, fmt.Errorf("invalid upgrade state: schema %d with fields of schema %d", s.Schema, need)
	}
	return &s, nil
}

func (s *State) validate() error {
	if len(s.Containers) > MaxContainers {
		return fmt.Errorf("%d containers, over the limit of %d", len(s.Containers), MaxContainers)
	}
	fds := map[int]string{}
	use := func(fd int, what string) error {
		if fd < 3 {
			return fmt.Errorf("%s: fd %d is not an inherited descriptor", what, fd)
		}
		if other, dup := fds[fd]; dup {
			return fmt.Errorf("%s: fd %d is also %s", what, fd, other)
		}
		fds[fd] = what
		return nil
	}
	if err := use(s.ListenerFD, "listener"); err != nil {
		return err
	}
	if s.ControlFD != -1 {
		if err := use(s.ControlFD, "control connection"); err != nil {
			return err
		}
	}
	if p := s.Pause; p != nil {
		if p.PID < 0 || len(p.Namespaces) > 5 {
			return fmt.Errorf("pause process: pid %d, %d namespace files", p.PID, len(p.Namespaces))
		}
		for _, n := range p.Namespaces {
			if n.Type > 4 || n.Path == "" {
				return fmt.Errorf("pause process: namespace file %d %q", n.Type, n.Path)
			}
		}
	}
	if f := s.FDSocket; f != nil {
		if err := use(f.FD, "fd socket"); err != nil {
			return err
		}
		if f.Path == "" {
			return errors.New("fd socket without a path")
		}
		slots := map[uint64]bool{}
		for i, c := range f.Conns {
			if err := use(c.FD, fmt.Sprintf("fd socket connection %d", i)); err != nil {
				return err
			}
			for _, sl := range c.Slots {
				if slots[sl.Slot] {
					return fmt.Errorf("fd socket slot %d stored twice", sl.Slot)
				}
				slots[sl.Slot] = true
				if err := use(sl.FD, fmt.Sprintf("fd socket slot %d", sl.Slot)); err != nil {
					return err
				}
			}
		}
	}
	ids := map[string]bool{}
	for _, c := range s.Containers {
		if c.ID == "" || ids[c.ID] {
			return fmt.Errorf("container ID %q empty or repeated", c.ID)
		}
		ids[c.ID] = true
		if c.PID <= 0 {
			return fmt.Errorf("container %s: pid %d", c.ID, c.PID)
		}
		if err := c.validateFDs(use); err != nil {
			return err
		}
		for _, l := range c.LogDrivers {
			if l.Type > 2 || (l.Type < 2 && l.Path == "") {
				return fmt.Errorf("container %s: log driver %d with path %q", c.ID, l.Type, l.Path)
			}
		}
	}
	if len(s.Exited) > MaxContainers {
		return fmt.Errorf("%d exited containers, over the limit of %d", len(s.Exited), MaxContainers)
	}
	for _, t := range s.Exited {
		if t.ID == "" {
			return errors.New("exited container with an empty ID")
		}
	}
	return nil
}

// validateFDs checks c's fds with use: a terminal has its console and no
// pipes, any other container its two pipes and no console.
func (c *Container) validateFDs(use func(int, string) error) error {
	if c.Terminal {
		if c.StdoutFD != -1 || c.StderrFD != -1 || (c.Stdin && c.StdinFD != -1) {
			return fmt.Errorf("container %s: a terminal with pipes", c.ID)
		}
		if err := use(c.ConsoleFD, "console of "+c.ID); err != nil {
			return err
		}
	} else {
		if c.ConsoleFD != 0 {
			return fmt.Errorf("container %s: a console without a terminal", c.ID)
		}
		if err := use(c.StdoutFD, "stdout of "+c.ID); err != nil {
			return err
		}
		if err := use(c.StderrFD, "stderr of "+c.ID); err != nil {
			return err
		}
		if c.Stdin && c.StdinFD != -1 {
			if err := use(c.StdinFD, "stdin of "+c.ID); err != nil {
				return err
			}
		}
	}
	if len(c.LeakFDs) > MaxLeakFDs {
		return fmt.Errorf("container %s: %d leaked fds, over the limit of %d", c.ID, len(c.LeakFDs), MaxLeakFDs)
	}
	for _, l := range c.LeakFDs {
		if err := use(l.FD, "leaked fd of "+c.ID); err != nil {
			return err
		}
	}
	return nil
}
