package interop

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// TestShutdownKillsRunningContainers: SIGINT (client Shutdown, as CRI-O
// sends when the pod goes) to a daemon holding 5 running containers kills
// them all, writes 137 to every exit file and leaves no process behind.
func TestShutdownKillsRunningContainers(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	runc := runcPath(t)

	const n = 5
	var exitFiles []string
	var pids []int
	for i := range n {
		id := fmt.Sprintf("gomon-shutdown-%d-%d", os.Getpid(), i)
		bundle := makeBusyboxBundle(t, runc, t.TempDir(), "/bin/sleep", "1000")
		dir := t.TempDir()
		exitFile := filepath.Join(dir, "exit")
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		resp, err := s.client.CreateContainer(ctx, &client.CreateContainerConfig{
			ID:         id,
			BundlePath: bundle,
			ExitPaths:  []string{exitFile},
			LogDrivers: []client.ContainerLogDriver{{
				Type: client.LogDriverTypeContainerRuntimeInterface,
				Path: filepath.Join(dir, "ctr.log"),
			}},
		})
		cancel()
		t.Cleanup(func() { _ = exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", id).Run() })
		if err != nil {
			t.Fatalf("CreateContainer %d: %v", i, err)
		}
		if out, err := exec.Command(runc, "--root", s.runtimeRoot, "start", id).CombinedOutput(); err != nil {
			t.Fatalf("runc start %s: %v: %s", id, err, out)
		}
		exitFiles = append(exitFiles, exitFile)
		pids = append(pids, int(resp.PID))
	}

	start := time.Now()
	s.stop(t) // Shutdown, then checks the daemon exited 0 and its socket is gone
	t.Logf("shutdown with %d running containers took %v", n, time.Since(start))

	for i, f := range exitFiles {
		got, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("container %d: exit file: %v", i, err)
			continue
		}
		if code, _ := strconv.Atoi(strings.TrimSpace(string(got))); code != 137 {
			t.Errorf("container %d: exit file holds %q, want 137", i, got)
		}
	}
	for i, pid := range pids {
		if processExists(pid) {
			t.Errorf("container %d (pid %d) still exists after shutdown", i, pid)
		}
	}
}
