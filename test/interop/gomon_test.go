package interop

// The client-bound part of the harness: CRI-O's server config and the
// daemon started through this build's conmon-rs client. The rest (the
// binary, the subreaper, stopping and reaping the daemon, the leftovers
// check, bundles) is github.com/gomon-dev/gomon/test/harness; the short
// names below keep the tests reading as before.

import (
	"os"
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

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &gomonPath)) }

func requireRoot(t *testing.T)                { t.Helper(); harness.RequireRoot(t) }
func runcPath(t *testing.T) string            { t.Helper(); return harness.Runc(t) }
func checkNoLeftovers(t *testing.T)           { t.Helper(); harness.CheckNoLeftovers(t) }
func gomonChildren(t *testing.T) []int        { t.Helper(); return harness.GomonChildren(t) }
func processExists(pid int) bool              { return harness.ProcessExists(pid) }
func exePath(pid int) (string, error)         { return harness.ExePath(pid) }
func waitForFile(path string) (string, error) { return harness.WaitForFile(path, hangGuard) }
func editSpec(t *testing.T, bundle string, edit func(spec map[string]any)) {
	t.Helper()
	harness.EditSpec(t, bundle, edit)
}

// makeBusyboxBundle builds an OCI bundle with its own busybox rootfs in
// dir, running args without a terminal on a writable root; it returns dir.
// The runc argument is unused: the spec template comes from runc in $PATH.
func makeBusyboxBundle(t *testing.T, _, dir string, args ...string) string {
	t.Helper()
	return harness.Bundle(t, dir, "", nil, args...)
}

// serverConfig is the ConmonServerConfig CRI-O builds for a pod (docs/contract.md,
// "How CRI-O starts gomon"), pointed at gomon and at a fresh runtime root.
func serverConfig(t *testing.T, runDir string) *client.ConmonServerConfig {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.InfoLevel)
	return &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: gomonPath,
		Runtime:          runcPath(t),
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     runDir,
		LogLevel:         client.LogLevelDebug,
		LogDriver:        serverLogDriver,
		CgroupManager:    client.CgroupManagerCgroupfs,
	}
}

// gomonServer is one gomon daemon started through client.New.
type gomonServer struct {
	*harness.Daemon
	client      *client.ConmonClient
	pid         int
	runDir      string
	runtimeRoot string
}

// startGomon runs client.New(cfg), fails the test on error and registers a
// cleanup that shuts the daemon down and checks it is gone.
func startGomon(t *testing.T, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New (conmon-rs %s client, run dir %s): %v", clientGeneration, cfg.ServerRunDir, err)
	}
	d := harness.Adopt(t, int(cl.PID()), cfg.ServerRunDir, cl.Shutdown)
	return &gomonServer{Daemon: d, client: cl, pid: d.PID, runDir: cfg.ServerRunDir, runtimeRoot: cfg.RuntimeRoot}
}

// stop shuts the daemon down now (idempotent; the cleanup does it too).
func (s *gomonServer) stop(t *testing.T) { t.Helper(); s.Stop(t) }

func withoutPIDNamespace(spec map[string]any) { harness.WithoutPIDNamespace(spec) }
