package interop

// The client-bound part of the harness: CRI-O's server config and the
// daemon started through the conmon-rs v1.0.1 client. The rest (the
// binary, the subreaper, stopping and reaping the daemon, the leftovers
// check, bundles) is github.com/gomon-dev/gomon/test/harness.

import (
	"os"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
	"github.com/sirupsen/logrus"
)

// hangGuard bounds every wait in these tests; see harness.HangGuard.
const hangGuard = harness.HangGuard

func TestMain(m *testing.M) { os.Exit(harness.Main(m, nil)) }

func requireRoot(t *testing.T)      { t.Helper(); harness.RequireRoot(t) }
func runcPath(t *testing.T) string  { t.Helper(); return harness.Runc(t) }
func checkNoLeftovers(t *testing.T) { t.Helper(); harness.CheckNoLeftovers(t) }

// serverConfig is the ConmonServerConfig CRI-O main builds for a pod
// (log driver "none"), pointed at gomon and at a fresh runtime root.
func serverConfig(t *testing.T, runDir string) *client.ConmonServerConfig {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	logger.SetLevel(logrus.InfoLevel)
	return &client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: harness.Gomon(),
		Runtime:          runcPath(t),
		RuntimeRoot:      t.TempDir(),
		ServerRunDir:     runDir,
		LogLevel:         client.LogLevelDebug,
		LogDriver:        client.LogDriverNone,
		CgroupManager:    client.CgroupManagerCgroupfs,
	}
}

// gomonServer is one gomon daemon started through client.New; the
// harness stops and reaps it at the end of the test.
type gomonServer struct {
	client      *client.ConmonClient
	pid         int
	runtimeRoot string
}

// startGomon runs client.New(cfg) and fails the test on error.
func startGomon(t *testing.T, cfg *client.ConmonServerConfig) *gomonServer {
	t.Helper()
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New (conmon-rs v1.0.1 client, run dir %s): %v", cfg.ServerRunDir, err)
	}
	d := harness.Adopt(t, int(cl.PID()), cfg.ServerRunDir, cl.Shutdown)
	return &gomonServer{client: cl, pid: d.PID, runtimeRoot: cfg.RuntimeRoot}
}
