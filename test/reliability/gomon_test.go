package reliability

// The client-bound part of the harness: CRI-O's server config and the
// daemon started through the conmon-rs v1.0.1 client. The rest (the
// binary, the subreaper, stopping and reaping the daemon, the leftovers
// check, the fd/thread/RSS probes, bundles) is
// github.com/gomon-dev/gomon/test/harness; the short names below keep the
// tests reading as before.

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
	"github.com/sirupsen/logrus"
)

// hangGuard bounds every wait in these tests; see harness.HangGuard.
const hangGuard = harness.HangGuard

// gomonPath is the absolute, symlink-free path of the gomon binary under
// test; set by TestMain.
var gomonPath string

func TestMain(m *testing.M) {
	// The test binary doubles as the fault-injecting runtime wrapper, the
	// cleanup-command recorder and the helper client that a test kills.
	switch os.Getenv(roleEnv) {
	case roleRuntime:
		os.Exit(runtimeWrapperMain())
	case roleRecorder:
		os.Exit(recorderMain())
	case roleHelper:
		os.Exit(helperMain())
	}
	os.Exit(harness.Main(m, &gomonPath))
}

func skipOrFail(t *testing.T, reason string) { t.Helper(); harness.SkipOrFail(t, reason) }
func requireRoot(t *testing.T)               { t.Helper(); harness.RequireRoot(t) }
func runcPath(t *testing.T) string           { t.Helper(); return harness.Runc(t) }
func checkNoLeftovers(t *testing.T)          { t.Helper(); harness.CheckNoLeftovers(t) }
func processExists(pid int) bool             { return harness.ProcessExists(pid) }
func fdCount(t *testing.T, pid int) int      { t.Helper(); return harness.FDCount(t, pid) }

// procStatus returns the named numeric field (VmRSS in bytes, Threads as
// a count) of /proc/<pid>/status.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	return harness.ProcStatus(t, pid, field)
}

// procInfo is the part of /proc/<pid>/stat the tests look at.
type procInfo struct {
	pid, ppid int
	state     byte
	comm      string
}

func toProcInfo(p harness.Proc) procInfo {
	return procInfo{pid: p.PID, ppid: p.PPID, state: p.State, comm: p.Comm}
}

func toProcInfos(ps []harness.Proc) []procInfo {
	out := make([]procInfo, len(ps))
	for i, p := range ps {
		out[i] = toProcInfo(p)
	}
	return out
}

// readStat parses /proc/<pid>/stat.
func readStat(pid int) (procInfo, error) {
	p, err := harness.ReadStat(pid)
	return toProcInfo(p), err
}

// zombiesOf lists the zombie children of pid.
func zombiesOf(t *testing.T, pid int) []procInfo {
	t.Helper()
	return toProcInfos(harness.ZombiesOf(t, pid))
}

// serverConfig is the ConmonServerConfig CRI-O builds for a pod, pointed
// at gomon, at runtime (the real runc or a fault wrapper) and at a fresh
// runtime root.
func serverConfig(t *testing.T, runtime string) *client.ConmonServerConfig {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.WarnLevel)
	return &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: gomonPath,
		Runtime:          runtime,
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     t.TempDir(),
		LogLevel:         client.LogLevelDebug,
		LogDriver:        client.LogDriverNone,
		CgroupManager:    client.CgroupManagerCgroupfs,
	}
}

// withDaemonLog makes the daemon log to a file (--log-driver stdout with
// the client's Stdout/Stderr set) and returns its path.
func withDaemonLog(t *testing.T, cfg *client.ConmonServerConfig) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gomon.log")
	f, err := os.Create(p) //nolint:forbidigo // the daemon's log, read after it is written, not a pid or exit file
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	cfg.LogDriver = client.LogDriverStdout
	cfg.Stdout, cfg.Stderr = f, f
	return p
}

// gomonServer is one gomon daemon started (or adopted) through the
// client; the harness stops and reaps it at the end of the test.
type gomonServer struct {
	*harness.Daemon
	client      *client.ConmonClient
	pid         int
	runDir      string
	runtimeRoot string
	exited      chan struct{} // closed once the daemon has been reaped
}

// startGomon runs client.New(cfg), fails the test on error and registers a
// cleanup that shuts the daemon down and checks it is gone.
func startGomon(t *testing.T, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New (run dir %s): %v", cfg.ServerRunDir, err)
	}
	return adoptGomon(t, cl, cfg)
}

// adoptGomon takes over the daemon cl talks to: reaps it and stops it at
// the end of the test.
func adoptGomon(t *testing.T, cl *client.ConmonClient, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	return adoptGomonWith(t, cl, cfg, cl.Shutdown)
}

// adoptGomonWith is adoptGomon with another way to ask for the shutdown
// than the client's (SIGINT).
func adoptGomonWith(t *testing.T, cl *client.ConmonClient, cfg *client.ConmonServerConfig, shutdown func() error) *gomonServer {
	t.Helper()
	d := harness.Adopt(t, int(cl.PID()), cfg.ServerRunDir, shutdown)
	s := &gomonServer{
		Daemon: d, client: cl, pid: d.PID, runDir: cfg.ServerRunDir,
		runtimeRoot: cfg.RuntimeRoot, exited: make(chan struct{}),
	}
	go s.follow(d.Process)
	return s
}

// reap reaps a daemon that a test set up by hand (not adopted, so not
// stopped by the harness) and then closes s.exited.
func (s *gomonServer) reap() { s.follow(harness.Watch(s.pid)) }

// follow closes s.exited once p has been reaped.
func (s *gomonServer) follow(p *harness.Process) {
	<-p.Exited()
	close(s.exited)
}

// stop shuts the daemon down now (idempotent; the cleanup does it too).
func (s *gomonServer) stop(t *testing.T) { t.Helper(); s.Stop(t) }

// alive checks that the daemon still answers Version.
func (s *gomonServer) alive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	v, err := s.client.Version(ctx, &client.VersionConfig{})
	if err != nil {
		t.Fatalf("gomon stopped serving: Version: %v", err)
	}
	if int(v.ProcessID) != s.pid {
		t.Fatalf("Version answered by pid %d, want %d", v.ProcessID, s.pid)
	}
}
