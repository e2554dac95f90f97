package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/loggen"
	"github.com/gomon-dev/gomon/bench/internal/oci"
	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// maxExecSyncSize is CRI-O's --log-global-size-max for exec sync (16 MiB).
const maxExecSyncSize = 16 << 20

// Conmon drives C conmon the way CRI-O's runtime_oci.go does: one conmon
// per container, started with the container's flags, _OCI_SYNCPIPE (fd 3)
// for the {"pid": N} reply and _OCI_STARTPIPE (fd 4) to let it proceed;
// exec sync is a `conmon -e --sync` per call whose output is read back from
// its k8s-file log. Every container gets its own runc --root.
type Conmon struct {
	Env *Env
	// NoSyncLog adds --no-sync-log (CRI-O's no_sync_log = true): conmon
	// then skips the fsync of the container's log it does by default
	// before writing the exit file. gomon, like conmon-rs, never fsyncs a
	// log at exit, so this is the like-for-like conmon for log throughput.
	NoSyncLog bool
}

var _ Driver = (*Conmon)(nil)

// Name implements Driver.
func (d *Conmon) Name() string {
	if d.NoSyncLog {
		return "conmon --no-sync-log"
	}
	return "conmon"
}

// NewPod implements Driver; a conmon pod has no process of its own.
func (d *Conmon) NewPod(_ context.Context, name string) (Pod, error) {
	dir := filepath.Join(d.Env.WorkDir, "conmon", name)
	p := &conmonPod{env: d.Env, noSyncLog: d.NoSyncLog, dir: dir, exitDir: filepath.Join(dir, "exits"), sockDir: filepath.Join(dir, "sock"), monitors: map[string]*conmonCtr{}}
	for _, x := range []string{p.exitDir, p.sockDir} {
		if err := os.MkdirAll(x, 0o755); err != nil {
			return nil, fmt.Errorf("create pod dir: %w", err)
		}
	}
	return p, nil
}

// conmonCtr is a container and its conmon.
type conmonCtr struct {
	c   *Container
	mon *child
}

// conmonPod is the set of conmon processes of one pod.
type conmonPod struct {
	env                   *Env
	noSyncLog             bool
	dir, exitDir, sockDir string
	monitors              map[string]*conmonCtr // live containers by ID
	gone                  []*child              // monitors of removed containers
	execSeq               atomic.Int64
}

var _ Pod = (*conmonPod)(nil)

// socketpair returns a connected SOCK_STREAM pair (parent end, child end),
// as CRI-O's newPipe does.
func socketpair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_LOCAL, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[1]), "parent"), os.NewFile(uintptr(fds[0]), "child"), nil
}

// monitorEnv is the environment CRI-O gives conmon (its default
// monitor_env) plus the two pipe variables.
var monitorEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"_OCI_SYNCPIPE=3",
	"_OCI_STARTPIPE=4",
}

// Create implements Pod.
func (p *conmonPod) Create(ctx context.Context, c *Container) (retErr error) {
	c.Root = filepath.Join(c.Dir, "root")
	c.LogPath = filepath.Join(c.Dir, "ctr.log")
	c.ExitFile = filepath.Join(p.exitDir, c.ID)
	conmonPidfile := filepath.Join(c.Dir, "conmon-pidfile")
	if err := os.MkdirAll(c.Root, 0o755); err != nil {
		return fmt.Errorf("create runc root: %w", err)
	}
	args := []string{
		"-b", c.Bundle,
		"-c", c.ID,
		"--exit-dir", p.exitDir,
		"-l", "k8s-file:" + c.LogPath,
		"--log-level", "error",
		"-n", c.Name,
		"-P", conmonPidfile,
		"-p", filepath.Join(c.Bundle, "pidfile"),
		"--persist-dir", c.Dir,
		"-r", p.env.Runc.Path,
		"--runtime-arg", "--root=" + c.Root,
		"--socket-dir-path", p.sockDir,
		"-u", c.ID,
	}
	if p.noSyncLog {
		args = append(args, "--no-sync-log")
	}
	syncParent, syncChild, err := socketpair()
	if err != nil {
		return err
	}
	defer func() { _ = syncParent.Close() }()
	startChild, startParent, err := socketpair()
	if err != nil {
		_ = syncChild.Close()
		return err
	}
	defer func() { _ = startParent.Close() }()

	stdio, err := os.OpenFile(filepath.Join(c.Dir, "conmon.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open conmon output: %w", err)
	}
	defer func() { _ = stdio.Close() }()
	cmd := exec.Command(p.env.Conmon, args...)
	cmd.Dir = c.Bundle
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = stdio, stdio
	cmd.ExtraFiles = []*os.File{syncChild, startChild}
	cmd.Env = monitorEnv
	err = cmd.Start()
	_ = syncChild.Close()
	_ = startChild.Close()
	if err != nil {
		return fmt.Errorf("start conmon: %w", err)
	}
	if _, err := startParent.Write([]byte{0}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("write conmon start pipe: %w", err)
	}
	// The first conmon writes the pidfile of its forked self and exits.
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("conmon for %s: %w", c.ID, err)
	}
	raw, err := os.ReadFile(conmonPidfile)
	if err != nil {
		return fmt.Errorf("read conmon pidfile: %w", err)
	}
	mpid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("parse conmon pidfile: %w", err)
	}
	mon := adopt(mpid)
	p.monitors[c.ID] = &conmonCtr{c: c, mon: mon}
	defer func() {
		if retErr != nil {
			mon.kill(5 * time.Second)
		}
	}()

	type syncInfo struct {
		Pid     int    `json:"pid"`
		Message string `json:"message,omitempty"`
	}
	got := make(chan error, 1)
	var si syncInfo
	go func() { got <- json.NewDecoder(syncParent).Decode(&si) }()
	select {
	case err := <-got:
		if err != nil {
			return fmt.Errorf("read conmon sync pipe for %s: %w", c.ID, err)
		}
	case <-ctx.Done():
		_ = syncParent.Close() // unblocks the decoder, which then fails
		return fmt.Errorf("wait for conmon to create %s: %w", c.ID, errors.Join(ctx.Err(), <-got))
	}
	if si.Pid <= 0 {
		return fmt.Errorf("conmon failed to create %s: %s", c.ID, si.Message)
	}
	c.PID = si.Pid
	return nil
}

// WaitExit implements Pod.
func (p *conmonPod) WaitExit(ctx context.Context, c *Container) error {
	return waitFile(ctx, c.ExitFile)
}

// ExecSync implements Pod, following CRI-O's runtimeOCI.ExecSyncContainer.
func (p *conmonPod) ExecSync(ctx context.Context, c *Container, command []string) (ExecResult, error) {
	n := p.execSeq.Add(1)
	dir := filepath.Join(c.Dir, fmt.Sprintf("exec%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ExecResult{}, fmt.Errorf("create exec dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	pidFile := filepath.Join(dir, "pidfile")
	logPath := filepath.Join(dir, "exec.log")
	processFile := filepath.Join(dir, "process.json")
	spec, err := oci.ProcessSpec(c.Bundle, command...)
	if err != nil {
		return ExecResult{}, err
	}
	if err := os.WriteFile(processFile, spec, 0o600); err != nil {
		return ExecResult{}, fmt.Errorf("write process spec: %w", err)
	}
	syncParent, syncChild, err := os.Pipe()
	if err != nil {
		return ExecResult{}, fmt.Errorf("sync pipe: %w", err)
	}
	defer func() { _ = syncParent.Close() }()
	startChild, startParent, err := socketpair()
	if err != nil {
		_ = syncChild.Close()
		return ExecResult{}, err
	}
	defer func() { _ = startParent.Close() }()
	args := []string{
		"-c", c.ID,
		"-n", c.Name,
		"-r", p.env.Runc.Path,
		"-p", pidFile,
		"-e",
		"-l", logPath,
		"--socket-dir-path", p.sockDir,
		"--log-level", "error",
		"--sync",
		"--log-global-size-max", strconv.Itoa(maxExecSyncSize),
		"-T", "10",
		"--exec-process-spec", processFile,
		"--runtime-arg", "--root=" + c.Root,
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(p.env.Conmon, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.ExtraFiles = []*os.File{syncChild, startChild}
	cmd.Env = monitorEnv
	err = cmd.Start()
	_ = syncChild.Close()
	_ = startChild.Close()
	if err != nil {
		return ExecResult{}, fmt.Errorf("start conmon exec: %w", err)
	}
	if _, err := startParent.Write([]byte{0}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return ExecResult{}, fmt.Errorf("write conmon start pipe: %w", err)
	}
	waitErr := cmd.Wait()
	var ec struct {
		ExitCode int    `json:"exit_code"`
		Message  string `json:"message,omitempty"`
	}
	if err := json.NewDecoder(syncParent).Decode(&ec); err != nil {
		return ExecResult{}, fmt.Errorf("conmon exec %v (stderr %q): read exit code: %w", command, stderr.String(), errors.Join(err, waitErr))
	}
	if ec.ExitCode == -1 {
		return ExecResult{}, fmt.Errorf("conmon exec %v: %s", command, ec.Message)
	}
	f, err := os.Open(logPath)
	if err != nil {
		return ExecResult{}, fmt.Errorf("open exec log: %w", err)
	}
	defer func() { _ = f.Close() }()
	var out, errOut bytes.Buffer
	if _, err := loggen.DecodeCRI(io.LimitReader(f, maxExecSyncSize), &out, &errOut); err != nil {
		return ExecResult{}, fmt.Errorf("parse exec log: %w", err)
	}
	return ExecResult{ExitCode: ec.ExitCode, Stdout: out.Bytes(), Stderr: errOut.Bytes()}, nil
}

// Remove implements Pod: runc delete --force, then wait for conmon to
// notice and exit.
func (p *conmonPod) Remove(ctx context.Context, c *Container) error {
	err := p.env.Runc.Delete(ctx, c.Root, c.ID)
	if cc := p.monitors[c.ID]; cc != nil {
		mon := cc.mon
		if werr := mon.waitCtx(ctx); werr != nil {
			mon.kill(5 * time.Second)
			err = errors.Join(err, werr)
		}
		delete(p.monitors, c.ID)
		p.gone = append(p.gone, mon)
	}
	return err
}

// MonitorPIDs implements Pod.
func (p *conmonPod) MonitorPIDs() []int {
	var pids []int
	for _, cc := range p.monitors {
		if !cc.mon.exited() {
			pids = append(pids, cc.mon.pid)
		}
	}
	return pids
}

// MonitorCPU implements Pod.
func (p *conmonPod) MonitorCPU() (procfs.CPU, error) {
	mons := append([]*child(nil), p.gone...)
	for _, cc := range p.monitors {
		mons = append(mons, cc.mon)
	}
	return sumCPU(mons)
}

// Close implements Pod: removes every container, which ends its conmon.
func (p *conmonPod) Close(ctx context.Context) error {
	var errs []error
	for _, cc := range p.monitors {
		if err := p.Remove(ctx, cc.c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
