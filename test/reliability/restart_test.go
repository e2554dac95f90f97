package reliability

// A CRI-O-style restart: the client process that started the daemon and
// its containers goes away; a new client.New on the same run dir finds
// the same daemon, and the containers, their logs and exit files are
// intact.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

func TestClientRestart(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	runc := runcPath(t)
	cfg := serverConfig(t, runc)
	ticker := newCtr(t, nil, numberedLines("tick", 1000000, 20000)...)
	short := newCtr(t, nil, "sh", "-c", "echo before-restart; sleep 2; echo after-restart; exit 7")
	out := filepath.Join(t.TempDir(), "pid")
	h := startHelper(t, helperCfg{
		Mode: "start-pod", RunDir: cfg.ServerRunDir, Gomon: gomonPath, Runtime: runc, RuntimeRoot: cfg.RuntimeRoot, Runc: runc,
		Create: []*client.CreateContainerConfig{ticker.request(), short.request()}, Out: out,
	})
	if err := h.Wait(); err != nil {
		t.Fatalf("helper (the first CRI-O) failed: %v", err)
	}
	raw, err := waitForFile(out, hangGuard)
	if err != nil {
		t.Fatal(err)
	}
	firstPID, _ := strconv.Atoi(raw)
	time.Sleep(500 * time.Millisecond) // the daemon runs without any client

	cl, err := client.New(cfg) // the restarted CRI-O
	if err != nil {
		t.Fatalf("client.New after the restart: %v", err)
	}
	s := adoptGomon(t, cl, cfg)
	if s.pid != firstPID {
		t.Fatalf("client.New started a new daemon (pid %d), want the running one (%d)", s.pid, firstPID)
	}
	if code := short.exitCode(t); code != 7 {
		t.Errorf("exit code of the container that exited after the restart: %d, want 7", code)
	}
	if lines := logLines(t, short.logPath); len(lines) != 2 || lines[0] != "before-restart" || lines[1] != "after-restart" {
		t.Errorf("log across the restart: %q", lines)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: ticker.id, Command: []string{"echo", "still-here"}})
	if err != nil || string(res.Stdout) != "still-here\n" {
		t.Errorf("exec in a container of the first client: %+v %v", res, err)
	}
	if err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: ticker.id}); err != nil {
		t.Errorf("ReopenLog of a container of the first client: %v", err)
	}
	if _, err := os.Stat(ticker.logPath); err != nil {
		t.Errorf("log after reopen: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	ticker.runc(t, s, "kill", ticker.id, "KILL")
	if code := ticker.exitCode(t); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
	if lines := logLines(t, ticker.logPath); len(lines) == 0 {
		t.Errorf("no output logged after the restart's reopen")
	}
}
