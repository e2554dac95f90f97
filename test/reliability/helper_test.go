package reliability

// The helper client: this test binary re-executed with
// GOMON_REL_ROLE=helper plays a second CRI-O process that a test can
// SIGKILL in the middle of a call, or let exit (a CRI-O restart).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/sirupsen/logrus"
)

const helperEnv = "GOMON_REL_HELPER"

// helperCfg tells the helper what to do.
type helperCfg struct {
	Mode        string // create, exec, attach, start-pod
	RunDir      string
	Gomon       string // start-pod only
	Runtime     string // start-pod only
	RuntimeRoot string // start-pod only
	Runc        string // start-pod: the real runc, to start the containers
	Create      []*client.CreateContainerConfig
	Exec        *client.ExecSyncConfig
	AttachID    string
	AttachSock  string
	Out         string // attach output, or start-pod's daemon PID
}

// startHelper starts a helper process; the test kills or waits for it.
func startHelper(t *testing.T, cfg helperCfg) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"="+roleHelper, helperEnv+"="+string(raw))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill() // our own helper
			_ = cmd.Wait()
		}
	})
	return cmd
}

// killHelper SIGKILLs a helper and reaps it.
func killHelper(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill helper: %v", err)
	}
	_ = cmd.Wait() // killed: the error is expected
}

// fileWriter appends attach output to a file.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }
func (w fileWriter) Close() error                { return nil }

// helperMain runs one helper role; see helperCfg.
func helperMain() int {
	var cfg helperCfg
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 2
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	cl, err := client.New(&client.ConmonServerConfig{
		ClientLogger:     logger,
		ConmonServerPath: cfg.Gomon,
		Runtime:          cfg.Runtime,
		RuntimeRoot:      cfg.RuntimeRoot,
		ServerRunDir:     cfg.RunDir,
		LogLevel:         client.LogLevelDebug,
		LogDriver:        client.LogDriverNone,
		CgroupManager:    client.CgroupManagerCgroupfs,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: client.New: %v\n", err)
		return 2
	}
	ctx := context.Background()
	switch cfg.Mode {
	case "create":
		_, err = cl.CreateContainer(ctx, cfg.Create[0])
	case "exec":
		_, err = cl.ExecSyncContainer(ctx, cfg.Exec)
	case "attach":
		f, ferr := os.OpenFile(cfg.Out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if ferr != nil {
			err = ferr
			break
		}
		err = cl.AttachContainer(ctx, &client.AttachConfig{
			ID: cfg.AttachID, SocketPath: cfg.AttachSock,
			Streams: client.AttachStreams{Stdout: &client.Out{WriteCloser: fileWriter{f}}},
		})
	case "start-pod":
		for _, c := range cfg.Create {
			if _, err = cl.CreateContainer(ctx, c); err != nil {
				break
			}
			if out, rerr := exec.Command(cfg.Runc, "--root", cfg.RuntimeRoot, "start", c.ID).CombinedOutput(); rerr != nil {
				err = fmt.Errorf("runc start: %w: %s", rerr, out)
				break
			}
		}
		if err == nil {
			err = os.WriteFile(cfg.Out, []byte(strconv.Itoa(int(cl.PID()))), 0o644)
		}
	default:
		err = fmt.Errorf("unknown mode %q", cfg.Mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper %s: %v\n", cfg.Mode, err)
		return 1
	}
	return 0
}
