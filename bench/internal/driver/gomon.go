package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/sirupsen/logrus"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

// Gomon drives gomon through the conmon-rs v1.0.1 Go client, configured
// as CRI-O main configures it for a pod (cgroupfs, CRI log driver, two exit
// paths, an OOM exit path), with an already running daemon per pod.
type Gomon struct {
	Env *Env
	// Label overrides Name (e.g. "gomon+tracing").
	Label string
	// TracingEndpoint, when set, starts the daemon with --enable-tracing
	// --tracing-endpoint <it>.
	TracingEndpoint string
	// ExtraEnv ("K=V") is added to the daemon's environment, as variables
	// set on CRI-O's service reach it (the client starts the daemon with
	// this process's environment).
	ExtraEnv []string
}

// envMu serialises the environment changes of NewPod with ExtraEnv.
var envMu sync.Mutex

var _ Driver = (*Gomon)(nil)

// Name implements Driver.
func (g *Gomon) Name() string {
	if g.Label != "" {
		return g.Label
	}
	return "gomon"
}

// NewPod starts one gomon daemon through client.New.
func (g *Gomon) NewPod(ctx context.Context, name string) (Pod, error) {
	dir := filepath.Join(g.Env.WorkDir, "gomon", name)
	p := &gomonPod{env: g.Env, runDir: filepath.Join(dir, "run"), root: filepath.Join(dir, "root"), exitDir: filepath.Join(dir, "exits")}
	for _, d := range []string{p.runDir, p.root, p.exitDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create pod dir: %w", err)
		}
	}
	out, err := os.OpenFile(filepath.Join(dir, "gomon.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open gomon log: %w", err)
	}
	logger := logrus.New()
	logger.SetOutput(out)
	logger.SetLevel(logrus.WarnLevel)
	cfg := &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: g.Env.Gomon,
		Runtime:          g.Env.Runc.Path,
		RuntimeRoot:      p.root,
		ServerRunDir:     p.runDir,
		LogLevel:         client.LogLevelError,
		// CRI-O passes systemd; there is no journald here, so the daemon's
		// own (error-level) log goes to a file instead.
		LogDriver:     client.LogDriverStdout,
		Stdout:        out,
		Stderr:        out,
		CgroupManager: client.CgroupManagerCgroupfs,
	}
	if g.TracingEndpoint != "" {
		cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: g.TracingEndpoint}
	}
	if len(g.ExtraEnv) > 0 {
		envMu.Lock()
		defer envMu.Unlock()
		for _, kv := range g.ExtraEnv {
			k, v, _ := strings.Cut(kv, "=")
			old, had := os.LookupEnv(k)
			_ = os.Setenv(k, v) // fails only for an invalid name
			defer func() {
				if had {
					_ = os.Setenv(k, old)
				} else {
					_ = os.Unsetenv(k)
				}
			}()
		}
	}
	start := time.Now()
	cl, err := client.New(cfg)
	// The daemon inherited the file; ours is no longer needed.
	_ = out.Close()
	if err != nil {
		return nil, fmt.Errorf("start gomon pod %s: %w", name, err)
	}
	p.startup = time.Since(start)
	p.cl = cl
	p.daemon = adopt(int(cl.PID()))
	return p, nil
}

// gomonPod is one gomon daemon.
type gomonPod struct {
	env                   *Env
	cl                    *client.ConmonClient
	daemon                *child
	runDir, root, exitDir string
	closed                bool
	startup               time.Duration // how long client.New took
}

var _ Pod = (*gomonPod)(nil)

// RunDir is the daemon's run directory (its sockets: `gomon upgrade
// --runtime-dir` takes it).
func (p *gomonPod) RunDir() string { return p.runDir }

// Startup is how long starting the daemon through client.New took.
func (p *gomonPod) Startup() time.Duration { return p.startup }

// Create implements Pod.
func (p *gomonPod) Create(ctx context.Context, c *Container) error {
	c.Root = p.root
	c.LogPath = filepath.Join(c.Dir, "ctr.log")
	c.ExitFile = filepath.Join(p.exitDir, c.ID)
	resp, err := p.cl.CreateContainer(ctx, &client.CreateContainerConfig{
		ID:           c.ID,
		BundlePath:   c.Bundle,
		ExitPaths:    gomonExitPaths(c),
		OOMExitPaths: []string{filepath.Join(c.Bundle, "oom")},
		LogDrivers: []client.ContainerLogDriver{{
			Type: client.LogDriverTypeContainerRuntimeInterface,
			Path: c.LogPath,
		}},
	})
	if err != nil {
		return fmt.Errorf("gomon CreateContainer %s: %w", c.ID, err)
	}
	c.PID = int(resp.PID)
	return nil
}

// WaitExit implements Pod.
func (p *gomonPod) WaitExit(ctx context.Context, c *Container) error {
	return waitFile(ctx, c.ExitFile)
}

// ExecSync implements Pod. A "not implemented" answer becomes
// ErrUnsupported.
func (p *gomonPod) ExecSync(ctx context.Context, c *Container, cmd []string) (ExecResult, error) {
	res, err := p.cl.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.ID, Command: cmd, Timeout: 10})
	if err != nil {
		msg := strings.ToLower(err.Error())
		if strings.Contains(msg, "not implemented") || strings.Contains(msg, "unimplemented") {
			return ExecResult{}, fmt.Errorf("gomon ExecSyncContainer: %w (%w)", ErrUnsupported, err)
		}
		return ExecResult{}, fmt.Errorf("gomon ExecSyncContainer: %w", err)
	}
	return ExecResult{ExitCode: int(res.ExitCode), Stdout: res.Stdout, Stderr: res.Stderr}, nil
}

// gomonExitPaths are the exit files gomon writes for c (two, as CRI-O
// asks for).
func gomonExitPaths(c *Container) []string {
	return []string{c.ExitFile, filepath.Join(c.Dir, "exit")}
}

// Remove implements Pod. After `runc delete --force` the daemon handles
// the exit on its own (drain, exit files); Remove waits for both exit files
// so that work is not timed in the next contender's turn, as conmon's and
// runc's Remove wait for their processes.
func (p *gomonPod) Remove(ctx context.Context, c *Container) error {
	if err := p.env.Runc.Delete(ctx, c.Root, c.ID); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, f := range gomonExitPaths(c) {
		if err := waitFile(ctx, f); err != nil {
			return fmt.Errorf("gomon did not write the exit files of %s: %w", c.ID, err)
		}
	}
	return nil
}

// MonitorPIDs implements Pod.
func (p *gomonPod) MonitorPIDs() []int {
	if p.daemon.exited() {
		return nil
	}
	return []int{p.daemon.pid}
}

// MonitorCPU implements Pod.
func (p *gomonPod) MonitorCPU() (procfs.CPU, error) { return p.daemon.cpuNow() }

// Close shuts the daemon down (SIGINT, as CRI-O does), which kills its
// containers, then deletes what runc still lists under the pod's root.
func (p *gomonPod) Close(ctx context.Context) error {
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	if err := p.cl.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("shutdown gomon %d: %w", p.daemon.pid, err))
	}
	p.daemon.kill(10 * time.Second)
	if ids, err := p.env.Runc.List(ctx, p.root); err == nil {
		for _, id := range ids {
			if err := p.env.Runc.Delete(ctx, p.root, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
