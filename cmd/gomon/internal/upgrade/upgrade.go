package upgrade

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/atomicfile"
	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/monitor"
)

// Names and bounds of the upgrade (docs/upgrade.md; the bounds are in
// docs/reliability.md, "Limits").
const (
	// SocketName is the control socket in the run directory.
	SocketName = "gomon-upgrade.sock"
	// StateName is the state record in the run directory, while it is
	// handed over; the new process removes it once read.
	StateName = "gomon-upgrade-state.json"
	// StateEnv names the state record for the new process. It is removed
	// from the environment as soon as it is read.
	StateEnv = "GOMON_UPGRADE_STATE"
	// ProbeName is the empty record of the first dry run (preflight), in
	// the run directory while it runs.
	ProbeName = "gomon-upgrade-probe.json"

	// QuiesceTimeout bounds the wait for calls in flight, and then for the
	// monitor to come to rest; past it the upgrade is refused.
	QuiesceTimeout = 5 * time.Second
	// DryRunTimeout bounds the new binary's dry run.
	DryRunTimeout = 10 * time.Second
	// AnswerTimeout bounds how long `gomon upgrade` waits for the answer:
	// the quiesce, the dry run and the new process's start-up.
	AnswerTimeout = 60 * time.Second
	// requestTimeout and maxLine bound one control request: its arrival
	// and the size of a request or answer line.
	requestTimeout = 5 * time.Second
	maxLine        = 64 << 10
	// dryRunOutput bounds what of the dry run's output a refusal quotes.
	dryRunOutput = 512
)

// Request is what `gomon upgrade` sends on the control socket: one JSON
// line.
type Request struct {
	// Binary is the new gomon binary; empty means the path the daemon
	// was started from.
	Binary string `json:"binary,omitempty"`
	// TraceParent is the asker's span as a W3C traceparent ("" if none):
	// the new process's `upgrade` span is its child (docs/upgrade.md,
	// "Tracing").
	TraceParent string `json:"traceparent,omitempty"`
}

// Result is the one JSON line the daemon answers: written by the old
// process when it refused, by the new one when the upgrade happened.
type Result struct {
	OK  bool `json:"ok"`
	PID int  `json:"pid"`
	// From and To are the old and new versions.
	From string `json:"from"`
	To   string `json:"to,omitempty"`
	// PauseMicros is how long the daemon took no calls: from the moment it
	// stopped accepting to the new process serving.
	PauseMicros int64 `json:"pause_us,omitempty"`
	// Containers is how many running containers the new process took
	// over.
	Containers int `json:"containers"`
	// Error is why the upgrade was refused (OK false); the old daemon
	// serves on.
	Error string `json:"error,omitempty"`
	// Warning is what the new process could take over only in part.
	Warning string `json:"warning,omitempty"`
}

// String is the result as `gomon upgrade` prints it, one line.
func (r Result) String() string {
	if !r.OK {
		return fmt.Sprintf("pid %d: upgrade refused, still %s: %s", r.PID, r.From, r.Error)
	}
	s := fmt.Sprintf("pid %d: upgraded %s -> %s, paused %s, %d container(s) taken over",
		r.PID, r.From, r.To, time.Duration(r.PauseMicros)*time.Microsecond, r.Containers)
	if r.Warning != "" {
		s += ", with problems: " + r.Warning
	}
	return s
}

// Daemon is what an upgrade needs of the running daemon.
type Daemon struct {
	RunDir  string
	Version string
	// Binary is the default new binary: the path the daemon was first
	// started from (which a package update replaces), kept across
	// upgrades whatever --binary they used.
	Binary string
	// Argv is the daemon's command line, argv[0] included; the new binary
	// gets it unchanged.
	Argv     []string
	Listener *Listener
	Gate     *Gate
	Monitor  *monitor.Monitor
	Log      *slog.Logger
	// BeforeExec, if set, runs right before the exec (the daemon exports
	// the spans it still queues); it must be bounded.
	BeforeExec func()
}

// Upgrade hands the daemon over to the request's binary (Binary when
// empty), answering on ctrl (nil for a SIGHUP). It returns only when the
// upgrade did not happen, with the reason; everything is as it was, and
// the caller answers. On success the process is the new binary, which
// answers.
func (d *Daemon) Upgrade(req Request, ctrl *net.UnixConn) Result {
	binary := req.Binary
	if binary == "" {
		binary = d.Binary
	}
	res := Result{PID: os.Getpid(), From: d.Version}
	refuse := func(err error) Result {
		res.Error = err.Error()
		d.Log.Warn("upgrade refused", "binary", binary, "error", err)
		return res
	}
	if err := checkExecutable(binary); err != nil {
		return refuse(err)
	}
	if err := d.preflight(binary); err != nil {
		return refuse(err)
	}
	d.Log.Info("upgrade starting", "binary", binary)
	pausedAt := time.Now()
	d.Listener.Pause()
	defer d.Listener.Resume() // reached only when the upgrade did not happen
	ctx, cancel := context.WithTimeout(context.Background(), QuiesceTimeout)
	defer cancel()
	if err := d.Gate.Close(ctx); err != nil {
		return refuse(fmt.Errorf("calls did not finish within %s: %w", QuiesceTimeout, err))
	}
	defer d.Gate.Open()
	h, err := d.Monitor.PrepareHandoff(ctx)
	if err != nil {
		return refuse(err)
	}
	defer h.Abort() // likewise

	lf, err := d.Listener.File() // a dup, close-on-exec
	if err != nil {
		return refuse(fmt.Errorf("listener fd: %w", err))
	}
	defer func() { _ = lf.Close() }()
	st := &monitor.UpgradeState{
		From: d.Version, StartPath: d.Binary, ListenerFD: rawFD(lf), ControlFD: -1,
		PausedAt: pausedAt.UnixNano(), Containers: h.Containers(), Exited: h.Exited(),
		TraceParent: ValidTraceParent(req.TraceParent),
		Pause:       h.Pause(), FDSocket: h.FDSocket(),
	}
	var cf *os.File
	if ctrl != nil {
		if cf, err = ctrl.File(); err != nil {
			return refuse(fmt.Errorf("control connection fd: %w", err))
		}
		defer func() { _ = cf.Close() }()
		st.ControlFD = rawFD(cf)
	}
	b, err := monitor.EncodeUpgradeState(st)
	if err != nil {
		return refuse(err)
	}
	path := filepath.Join(d.RunDir, StateName)
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return refuse(fmt.Errorf("write upgrade state: %w", err))
	}
	defer func() { _ = os.Remove(path) }()
	// The point of no return is the exec: first make sure the new binary
	// reads this record.
	if err := dryRun(binary, path, runFrozen); err != nil {
		return refuse(err)
	}
	if err := h.Keep(); err != nil {
		return refuse(err)
	}
	kept := []int{st.ListenerFD}
	if cf != nil {
		kept = append(kept, st.ControlFD)
	}
	for _, fd := range kept {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return refuse(fmt.Errorf("keep fd across exec: %w", err))
		}
	}
	env := append(withoutEnv(os.Environ(), StateEnv), StateEnv+"="+path)
	d.Log.Info("upgrade: exec", "binary", binary, "containers", len(st.Containers))
	if d.BeforeExec != nil {
		d.BeforeExec()
	}
	err = syscall.Exec(binary, d.Argv, env)
	// Still here: the exec failed, and nothing changed.
	for _, fd := range kept {
		unix.CloseOnExec(fd)
	}
	return refuse(fmt.Errorf("exec %s: %w", binary, err))
}

// rawFD returns f's descriptor without Fd, which would switch the socket
// (shared with the live listener or connection) to blocking mode, and
// deadlines with it; -1 if f is closed.
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// checkExecutable refuses a binary that is missing, not a regular file or
// not executable, before the daemon pauses.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("new binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("new binary %s is not a regular file", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return fmt.Errorf("new binary %s is not executable: %w", p, err)
	}
	return nil
}

// preflight is the first dry run, made before the daemon pauses or ends
// a session: the new binary must read a record of this schema that holds
// nothing. A binary that is broken or reads another schema is refused
// here, with the pod untouched; the second dry run, on the real record,
// is made once the monitor is frozen.
func (d *Daemon) preflight(binary string) error {
	b, err := monitor.EncodeUpgradeState(&monitor.UpgradeState{
		From: d.Version, StartPath: d.Binary,
		ListenerFD: 3, ControlFD: -1, // never used: the dry run touches no descriptor
	})
	if err != nil {
		return err
	}
	path := filepath.Join(d.RunDir, ProbeName)
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write the dry run's record: %w", err)
	}
	defer func() { _ = os.Remove(path) }()
	return dryRun(binary, path, d.Monitor.RunChild)
}

// dryRun runs `binary upgrade --check-state path` with run: the new
// binary must read the record's schema and exit 0. run is the monitor's
// RunChild while the monitor runs (its reaper reaps every child), and
// runFrozen once it is frozen.
func dryRun(binary, path string, run func(context.Context, *exec.Cmd) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), DryRunTimeout)
	defer cancel()
	out, err := os.CreateTemp("", "gomon-dry-run-")
	if err != nil {
		return fmt.Errorf("dry run output: %w", err)
	}
	_ = os.Remove(out.Name()) // the open file stays usable
	defer func() { _ = out.Close() }()
	cmd := exec.Command(binary, "upgrade", "--check-state", path) // run kills it when ctx ends
	cmd.Env = withoutEnv(os.Environ(), StateEnv)
	cmd.Stdout, cmd.Stderr = out, out
	if err = run(ctx, cmd); err == nil {
		return nil
	}
	buf := make([]byte, dryRunOutput+1)
	n, _ := out.ReadAt(buf, 0)
	said := strings.TrimSpace(string(buf[:n]))
	if n > dryRunOutput {
		said = strings.TrimSpace(string(buf[:dryRunOutput])) + "…"
	}
	if said != "" {
		return fmt.Errorf("the new binary's dry run on the state failed (%w): %s", err, said)
	}
	return fmt.Errorf("the new binary's dry run on the state failed: %w", err)
}

// runFrozen runs cmd with exec.Cmd alone, killed when ctx ends: while
// the monitor is frozen its reaper waits for nothing, so Wait gets the
// child's status.
func runFrozen(ctx context.Context, cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	defer stop()
	return cmd.Wait()
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// Check is the dry run in the new binary: it reads the record at path
// and says whether this binary can take it over.
func Check(path string, w io.Writer) error {
	b, err := readState(path)
	if err != nil {
		return err
	}
	s, err := monitor.DecodeUpgradeState(b)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "upgrade state schema %d from %s: %d container(s), readable\n",
		s.Schema, s.From, len(s.Containers))
	return err
}

func readState(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read upgrade state: %w", err)
	}
	defer func() { _ = f.Close() }()
	return io.ReadAll(io.LimitReader(f, 16<<20+1)) // over the limit fails in Decode
}

// Inherited is what the new process gets from the old one.
type Inherited struct {
	State    *monitor.UpgradeState
	Listener *net.UnixListener
	// Control is the connection of whoever asked; nil for a SIGHUP.
	Control *os.File
}

// TakeOver reads the record named by StateEnv, if set: nil, nil when this
// process is not the result of an upgrade. It removes the variable and the
// file and adopts the listener and control connection fds.
func TakeOver() (*Inherited, error) {
	path, ok := os.LookupEnv(StateEnv)
	if !ok {
		return nil, nil
	}
	_ = os.Unsetenv(StateEnv)
	b, err := readState(path)
	_ = os.Remove(path)
	if err != nil {
		return nil, err
	}
	s, err := monitor.DecodeUpgradeState(b)
	if err != nil {
		return nil, err
	}
	in := &Inherited{State: s}
	if s.ControlFD >= 0 {
		unix.CloseOnExec(s.ControlFD)
		in.Control = os.NewFile(uintptr(s.ControlFD), "upgrade-control")
	}
	unix.CloseOnExec(s.ListenerFD)
	f := os.NewFile(uintptr(s.ListenerFD), "conmon.sock")
	l, err := net.FileListener(f) // a dup
	_ = f.Close()
	if err != nil {
		return in, fmt.Errorf("inherited listener: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		_ = l.Close()
		return in, fmt.Errorf("inherited listener is a %T", l)
	}
	in.Listener = ul
	return in, nil
}

// ValidTraceParent returns tp as a W3C traceparent if it is one with a
// valid trace and span ID, else "": a malformed one is dropped (the
// upgrade span is then a root span), never carried.
func ValidTraceParent(tp string) string {
	if tp == "" {
		return ""
	}
	return TraceParentOf(ParentContext(tp))
}

// ParentContext returns a context whose remote parent span is the
// traceparent tp; a plain context when tp is empty or malformed.
func ParentContext(tp string) context.Context {
	return propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
}

// TraceParentOf returns the span of ctx as a W3C traceparent, "" if none.
func TraceParentOf(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// Answer writes res on the control connection (if any) and closes it.
func Answer(ctrl io.WriteCloser, res Result) error {
	if ctrl == nil {
		return nil
	}
	defer func() { _ = ctrl.Close() }()
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode upgrade result: %w", err)
	}
	if d, ok := ctrl.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(requestTimeout)) // a plain file: the write blocks at worst on a full socket
	}
	if _, err := ctrl.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("answer upgrade: %w", err)
	}
	return nil
}

// Pending is one request taken from the control socket: the daemon runs
// it and answers on Conn.
type Pending struct {
	Request Request
	Conn    *net.UnixConn
}

// Control is the control socket's server.
type Control struct {
	l    *net.UnixListener
	path string
	reqs chan Pending
	done chan struct{}
	log  *slog.Logger
}

// Listen binds the control socket in runDir (mode 0600: only root, or
// whoever runs the daemon, may upgrade it), replacing a stale one.
func Listen(runDir string, log *slog.Logger) (*Control, error) {
	path := filepath.Join(runDir, SocketName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale upgrade socket: %w", err)
	}
	// Not unlinked on close: the new process binds it again after an exec.
	l, err := ioloop.ListenUnix("unix", path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("listen on upgrade socket: %w", err)
	}
	c := &Control{l: l, path: path, reqs: make(chan Pending), done: make(chan struct{}), log: log}
	go c.serve()
	return c, nil
}

// Requests delivers the requests, one at a time: the next connection is
// read only once the daemon took this one.
func (c *Control) Requests() <-chan Pending { return c.reqs }

// Close stops the server and removes the socket file.
func (c *Control) Close() error {
	close(c.done)
	err := c.l.Close()
	_ = os.Remove(c.path)
	return err
}

func (c *Control) serve() {
	for {
		conn, err := c.l.AcceptUnix()
		if err != nil {
			select {
			case <-c.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("upgrade socket accept", "error", err)
			time.Sleep(100 * time.Millisecond) // EMFILE and the like pass
			continue
		}
		req, err := readRequest(conn)
		if err != nil {
			c.log.Warn("bad upgrade request", "error", err)
			_ = conn.Close()
			continue
		}
		select {
		case c.reqs <- Pending{Request: req, Conn: conn}:
		case <-c.done:
			_ = conn.Close()
			return
		}
	}
}

func readRequest(conn *net.UnixConn) (Request, error) {
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxLine), 4096).ReadBytes('\n')
	if err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	var r Request
	if err := json.Unmarshal(line, &r); err != nil {
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

// Ask sends req to the daemon of runDir and returns its answer.
func Ask(runDir string, req Request) (Result, error) {
	path := filepath.Join(runDir, SocketName)
	// CRI-O's run directories are longer than sun_path allows.
	conn, err := ioloop.DialUnix("unix", path)
	if err != nil {
		return Result{}, fmt.Errorf("no upgradable gomon daemon at %s: %w", runDir, err)
	}
	defer func() { _ = conn.Close() }()
	b, err := json.Marshal(req)
	if err != nil {
		return Result{}, fmt.Errorf("encode request: %w", err)
	}
	_ = conn.SetDeadline(time.Now().Add(AnswerTimeout))
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Result{}, fmt.Errorf("send request: %w", err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxLine)).ReadBytes('\n')
	if err != nil {
		return Result{}, fmt.Errorf("the daemon at %s did not answer (it may have died in the upgrade: check its log): %w", runDir, err)
	}
	var r Result
	if err := json.Unmarshal(line, &r); err != nil {
		return Result{}, fmt.Errorf("decode answer: %w", err)
	}
	return r, nil
}

// FindAll returns the run directories of the gomon daemons on this node:
// every process whose command line is a server's with a --runtime-dir (or
// CONMON_RUNTIME_DIR) and whose run directory holds the control socket.
// parse turns a process's argv and environment into its run directory,
// "" for a process that is not a server.
func FindAll(parse func(args []string, env map[string]string) string) ([]string, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	seen := map[string]bool{}
	var dirs []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		args, err := nulFields(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(args) == 0 {
			continue
		}
		envList, _ := nulFields(fmt.Sprintf("/proc/%d/environ", pid)) // unreadable: argv may do
		env := map[string]string{}
		for _, kv := range envList {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		dir := parse(args[1:], env)
		if dir == "" || seen[dir] {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, SocketName)); err != nil || fi.Mode()&os.ModeSocket == 0 {
			continue
		}
		seen[dir] = true
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

func nulFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), nil
}
