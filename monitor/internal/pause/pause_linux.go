package pause

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/internal/atomicfile"
	"github.com/gomon-dev/gomon/monitor/internal/undo"
)

const (
	// DefaultBasePath is where namespace files go when Options.BasePath is
	// empty, as in conmon-rs and its Go client.
	DefaultBasePath = "/var/run"

	// readyEnv tells `gomon pause` it was started by Create and names the
	// inherited descriptor on which to report readiness.
	readyEnv = "GOMON_PAUSE_READY_FD"
	// readyFD is that descriptor: the first of cmd.ExtraFiles.
	readyFD = 3

	// killWait bounds the wait for the reaper to report a SIGKILLed pause
	// process, so that no path blocks forever on a broken reaper.
	killWait = 10 * time.Second

	// exitUnknown is the status recorded when the reaper's channel closes
	// without delivering one.
	exitUnknown = -1
)

// Reaper starts the pause process on behalf of the daemon's single reaper,
// which alone waits for children (never call cmd.Wait next to it).
type Reaper interface {
	// Start starts cmd and returns a channel that delivers its exit status
	// once (128+N when killed by signal N); the channel may be closed
	// afterwards. When Start returns without error, cmd.Process is set and
	// the reaper will not miss the process's exit, however early. Start is
	// called from the goroutine running Create.
	Start(cmd *exec.Cmd) (exited <-chan int, err error)
}

// Options configures a pause instance. The fields mirror the arguments of
// `conmonrs pause` (docs/contract.md, "gomon pause").
type Options struct {
	// Binary is the gomon executable to start as `<Binary> pause …`.
	// Default: os.Executable().
	Binary string
	// BasePath is the directory under which the namespace files and the PID
	// file go. Default: DefaultBasePath.
	BasePath string
	// PodID names the files; required, and must be a single path element.
	PodID string
	// IPC, PID, Net, User and UTS select the namespaces to create. The
	// others are the daemon's own; all five are bind-mounted either way.
	IPC, PID, Net, User, UTS bool
	// UIDMappings and GIDMappings are "CONTAINER_ID HOST_ID SIZE" strings,
	// required (both) when User is set and ignored otherwise.
	UIDMappings, GIDMappings []string
	// Reaper starts the pause process. Required by Create; Main in its
	// stand-alone form supplies its own.
	Reaper Reaper
	// Logger receives debug and error records. Nil discards.
	Logger *slog.Logger
}

// Instance is a running pause process and its namespace files. Its methods
// are safe for concurrent use.
type Instance struct {
	logger  *slog.Logger
	proc    *os.Process
	pid     int // proc.Pid, which Release resets
	exited  <-chan int
	paths   []Path
	pidFile string

	// mu serializes Stop and guards the cleanup progress below, so that a
	// Stop cut short by its context can be retried.
	mu           sync.Mutex
	filesRemoved bool // guarded by mu
	reaped       bool // guarded by mu
	exitCode     int  // guarded by mu
}

// Create starts a pause process holding the selected namespaces and pins
// all five of its namespaces under opts.BasePath. It returns once the files
// exist and the PID file is written. On error nothing is left behind.
//
// ctx bounds the start-up only; the pause process outlives it and runs
// until Stop.
func Create(ctx context.Context, opts Options) (*Instance, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("create pause: %w", err)
	}
	attr, err := opts.sysProcAttr()
	if err != nil {
		return nil, err
	}
	if opts.Reaper == nil {
		return nil, fmt.Errorf("create pause: no reaper: %w", ErrInvalidArgument)
	}
	logger := opts.Logger

	if err := os.MkdirAll(opts.BasePath, 0o755); err != nil {
		return nil, fmt.Errorf("create base path: %w", err)
	}
	var undo undo.Stack
	defer undo.Run()

	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create pause ready pipe: %w", err)
	}
	defer func() { _ = r.Close() }()
	cmd := &exec.Cmd{
		Path:        opts.Binary,
		Args:        opts.args(),
		Env:         childEnv(),
		Dir:         "/", // pin no directory of the daemon's
		ExtraFiles:  []*os.File{w},
		SysProcAttr: attr,
	}
	exited, err := opts.Reaper.Start(cmd)
	_ = w.Close() // the child holds the only write end now
	if err != nil {
		return nil, fmt.Errorf("start pause process: %w", err)
	}
	inst := &Instance{
		logger:  logger.With("pod_id", opts.PodID, "pid", cmd.Process.Pid),
		proc:    cmd.Process,
		pid:     cmd.Process.Pid,
		exited:  exited,
		pidFile: filepath.Join(opts.BasePath, "conmonrs", opts.PodID+".pid"),
	}
	undo.Add(func() { _ = inst.kill() })

	if err := awaitReady(ctx, r); err != nil {
		if errors.Is(err, ErrPauseExited) {
			undo.Release()
			code := inst.waitExit(killWait)
			return nil, fmt.Errorf("start pause process: %w (exit status %d)", err, code)
		}
		return nil, fmt.Errorf("start pause process: %w", err)
	}

	for _, ns := range all {
		target := filepath.Join(opts.BasePath, ns.String()+"ns", opts.PodID)
		if err := prepareTarget(target); err != nil {
			return nil, err
		}
		undo.Add(func() { _ = removeNamespaceFile(target) })
		src := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/" + ns.String()
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind mount %s namespace to %s: %w", ns, target, err)
		}
		inst.paths = append(inst.paths, Path{Type: ns, Path: target})
	}
	// The mounts named the pause process by PID. It is still alive now
	// (checked through its pidfd, which cannot be reused), so it was alive
	// throughout and the PID named no other process.
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		return nil, fmt.Errorf("check pause process after mounting: %w: %w", ErrPauseExited, err)
	}

	if err := writePIDFile(inst.pidFile, cmd.Process.Pid); err != nil {
		return nil, err
	}
	undo.Release()
	inst.logger.Debug("pause process ready", "namespaces", opts.selected())
	return inst, nil
}

// Namespaces returns the five namespace files in the order ipc, pid, net,
// user, uts.
func (i *Instance) Namespaces() []Path {
	return append([]Path(nil), i.paths...)
}

// PID returns the pause process's PID in the daemon's PID namespace.
func (i *Instance) PID() int { return i.pid }

// Stop unmounts (lazily) and removes the namespace files, sends SIGTERM to
// the pause process, waits for the reaper to report its exit and removes
// the PID file. If ctx ends first, the process gets SIGKILL and a bounded
// further wait. Stop is idempotent; after an error a later call retries
// what is left.
func (i *Instance) Stop(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	var errs []error
	if !i.filesRemoved {
		var fileErrs []error
		for _, p := range i.paths {
			if err := removeNamespaceFile(p.Path); err != nil {
				fileErrs = append(fileErrs, err)
			}
		}
		i.filesRemoved = len(fileErrs) == 0
		errs = append(errs, fileErrs...)
	}
	if !i.reaped {
		if err := i.proc.Signal(unix.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signal pause process: %w", err))
		}
		select {
		case code, ok := <-i.exited:
			i.recordExit(code, ok)
		case <-ctx.Done():
			i.logger.Warn("pause process ignored SIGTERM; killing it", "error", ctx.Err())
			if err := i.killLocked(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if i.reaped && i.pidFile != "" {
		if err := os.Remove(i.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pause PID file: %w", err))
		} else {
			i.pidFile = ""
		}
	}
	return errors.Join(errs...)
}

// kill sends SIGKILL and waits (bounded) for the reaper's report.
func (i *Instance) kill() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.killLocked()
}

// killLocked kills the pause process; called with i.mu held.
func (i *Instance) killLocked() error {
	if i.reaped {
		return nil
	}
	if err := i.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pause process: %w", err)
	}
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case code, ok := <-i.exited:
		i.recordExit(code, ok)
		return nil
	case <-t.C:
		return fmt.Errorf("kill pause process: no exit reported after %v", killWait)
	}
}

// waitExit waits up to d for the exit of a process known to be exiting
// and returns its status.
func (i *Instance) waitExit(d time.Duration) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case code, ok := <-i.exited:
		i.recordExit(code, ok)
	case <-t.C:
		i.exitCode = exitUnknown
	}
	return i.exitCode
}

// recordExit records the pause process's exit; called with i.mu held.
func (i *Instance) recordExit(code int, ok bool) {
	if !ok {
		code = exitUnknown
	}
	i.reaped, i.exitCode = true, code
	_ = i.proc.Release() // closes the pidfd; the reaper has waited
	i.logger.Debug("pause process exited", "exit_code", code)
}

// cloneFlag returns the clone(2) flag that creates a namespace of kind n.
func (n Namespace) cloneFlag() uintptr {
	switch n {
	case IPC:
		return syscall.CLONE_NEWIPC
	case PID:
		return syscall.CLONE_NEWPID
	case Net:
		return syscall.CLONE_NEWNET
	case User:
		return syscall.CLONE_NEWUSER
	case UTS:
		return syscall.CLONE_NEWUTS
	}
	return 0
}

// defaults validates opts and fills in defaults.
func (o *Options) defaults() error {
	if o.PodID == "" {
		return ErrNoPodID
	}
	if o.PodID != filepath.Base(o.PodID) || o.PodID == "." || o.PodID == ".." ||
		strings.ContainsRune(o.PodID, 0) {
		return fmt.Errorf("pod ID %q is not a file name: %w", o.PodID, ErrInvalidArgument)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.BasePath == "" {
		o.BasePath = DefaultBasePath
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable for pause: %w", err)
		}
		o.Binary = exe
	}
	return nil
}

// selected returns the requested namespaces in response order.
func (o *Options) selected() []Namespace {
	on := [...]bool{IPC: o.IPC, PID: o.PID, Net: o.Net, User: o.User, UTS: o.UTS}
	var ns []Namespace
	for _, n := range all {
		if on[n] {
			ns = append(ns, n)
		}
	}
	return ns
}

// args returns the pause command line, in the form conmon-rs spawns itself
// with (docs/contract.md, "CreateNamespaces").
func (o *Options) args() []string {
	args := []string{o.Binary, "pause", "--base-path", o.BasePath, "--pod-id=" + o.PodID}
	for _, f := range []struct {
		on   bool
		flag string
	}{{o.IPC, "--ipc"}, {o.PID, "--pid"}, {o.Net, "--net"}, {o.UTS, "--uts"}} {
		if f.on {
			args = append(args, f.flag)
		}
	}
	if o.User {
		args = append(args, "--user")
		for _, m := range o.UIDMappings {
			args = append(args, "--uid-mappings="+m)
		}
		for _, m := range o.GIDMappings {
			args = append(args, "--gid-mappings="+m)
		}
	}
	return args
}

// sysProcAttr turns the selection into clone flags and, for a user
// namespace, ID mappings. As conmon-rs does, the pause process becomes
// root (0:0) inside a new user namespace.
func (o *Options) sysProcAttr() (*syscall.SysProcAttr, error) {
	attr := &syscall.SysProcAttr{
		// Its own session: no terminal signals from the daemon's group.
		Setsid: true,
	}
	for _, ns := range o.selected() {
		attr.Cloneflags |= ns.cloneFlag()
	}
	if !o.User {
		return attr, nil
	}
	if len(o.UIDMappings) == 0 {
		return nil, fmt.Errorf("user ID mappings are empty: %w", ErrInvalidArgument)
	}
	if len(o.GIDMappings) == 0 {
		return nil, fmt.Errorf("group ID mappings are empty: %w", ErrInvalidArgument)
	}
	var err error
	if attr.UidMappings, err = parseMappings(o.UIDMappings); err != nil {
		return nil, err
	}
	if attr.GidMappings, err = parseMappings(o.GIDMappings); err != nil {
		return nil, err
	}
	// setgroups stays allowed, as with conmon-rs (which never writes
	// "deny"); the daemon is privileged in the parent namespace.
	attr.GidMappingsEnableSetgroups = true
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	return attr, nil
}

// parseMappings parses "CONTAINER_ID HOST_ID SIZE" strings.
func parseMappings(ms []string) ([]syscall.SysProcIDMap, error) {
	out := make([]syscall.SysProcIDMap, 0, len(ms))
	for _, m := range ms {
		f := strings.Fields(m)
		if len(f) != 3 {
			return nil, fmt.Errorf("mapping %q has wrong format, expected 'CONTAINER_ID HOST_ID SIZE': %w",
				m, ErrInvalidArgument)
		}
		var v [3]int
		for k, s := range f {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("mapping %q has wrong format, expected all to be u32: %w",
					m, ErrInvalidArgument)
			}
			v[k] = int(n)
		}
		out = append(out, syscall.SysProcIDMap{ContainerID: v[0], HostID: v[1], Size: v[2]})
	}
	return out, nil
}

// childEnv is the daemon's environment plus the readiness marker; a stale
// marker inherited from elsewhere is dropped. GOMAXPROCS=1 keeps the idle
// pause process to few threads.
func childEnv() []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, readyEnv+"=") || strings.HasPrefix(kv, "GOMAXPROCS=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, readyEnv+"="+strconv.Itoa(readyFD), "GOMAXPROCS=1")
}

// awaitReady waits for the pause process's ready byte on r. EOF means the
// process exited first (its write end closed).
func awaitReady(ctx context.Context, r *os.File) error {
	stop := context.AfterFunc(ctx, func() {
		_ = r.SetReadDeadline(time.Unix(1, 0)) // wakes the Read below
	})
	defer stop()
	var b [1]byte
	_, err := io.ReadFull(r, b[:])
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		return ErrPauseExited
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("wait for pause process: %w", ctx.Err())
	default:
		return fmt.Errorf("wait for pause process: %w", err)
	}
}

// prepareTarget makes path an empty, read-only (0444) regular file to
// mount a namespace on, creating its directory. A leftover unmounted file
// from an earlier run is reused; a file with a namespace still mounted on
// it is refused with ErrInUse.
func prepareTarget(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create namespace directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o444)
	if err == nil {
		defer func() { _ = f.Close() }()
		if err := f.Chmod(0o444); err != nil { // the umask may have taken bits
			return fmt.Errorf("set namespace file mode: %w", err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create namespace file: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return fmt.Errorf("check namespace file %s: %w", path, err)
	}
	if sfs.Type == unix.NSFS_MAGIC {
		return fmt.Errorf("namespace file %s: %w", path, ErrInUse)
	}
	st, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("check namespace file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("namespace file %s is not a regular file: %w", path, fs.ErrExist)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		return fmt.Errorf("set namespace file mode: %w", err)
	}
	return nil
}

// removeNamespaceFile detaches the namespace mounted on path, if any, and
// removes the file. A missing file or mount is not an error.
func removeNamespaceFile(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount namespace file %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove namespace file: %w", err)
	}
	return nil
}

// writePIDFile writes pid in decimal without a newline, atomically.
func writePIDFile(path string, pid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create pause PID directory: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write pause PID file: %w", err)
	}
	return nil
}

// Handoff describes the instance for an upgrade in place
// (docs/upgrade.md): its PID (0 if it has exited), PID file and
// namespace files. The caller has frozen the reaper; dispatched says the
// reaper had already reaped the process before, so its exit is on its way
// to this instance and is awaited (within ctx). After the exec the new
// process takes the instance over with Adopt.
func (i *Instance) Handoff(ctx context.Context, dispatched bool) (pid int, pidFile string, paths []Path, err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.reaped && dispatched {
		select {
		case code, ok := <-i.exited:
			i.recordExit(code, ok)
		case <-ctx.Done():
			return 0, "", nil, fmt.Errorf("the pause process exited and its exit is not recorded yet: %w", ctx.Err())
		}
	}
	if !i.reaped {
		pid = i.pid
	}
	return pid, i.pidFile, append([]Path(nil), i.paths...), nil
}

// Adopt takes over a pause instance handed over by an upgrade: pid is the
// pause process (0 if it had exited), a child of this process, whose exit
// exited reports; pidFile and paths are its files. Stop then tears it
// down as it would one this process created.
func Adopt(pid int, pidFile string, paths []Path, exited <-chan int, logger *slog.Logger) *Instance {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &Instance{
		logger: logger.With("pid", pid), pid: pid, exited: exited,
		paths: append([]Path(nil), paths...), pidFile: pidFile,
	}
	if pid == 0 {
		i.reaped, i.exitCode = true, exitUnknown
		return i
	}
	i.proc, _ = os.FindProcess(pid) // never fails on Linux; a pidfd when the kernel has them
	return i
}
