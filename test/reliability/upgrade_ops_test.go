package reliability

// The operational side of an upgrade in place (docs/upgrade.md): the
// upgrade span in the asker's trace, and the pod services (pause process,
// fd socket) carried across the exec.

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

// waitSpan waits for a span named name at recv, with trace ID trace, and
// returns it.
func waitSpan(t *testing.T, recv *otlpHTTPReceiver, name string, trace []byte) *otlpSpan {
	t.Helper()
	for deadline := time.Now().Add(hangGuard); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		recv.mu.Lock()
		for i := range recv.spans {
			if s := recv.spans[i]; s.name == name && bytes.Equal(s.trace, trace) {
				recv.mu.Unlock()
				return &s
			}
		}
		recv.mu.Unlock()
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	var got []string
	for _, s := range recv.spans {
		got = append(got, s.name+"/"+hex.EncodeToString(s.trace))
	}
	t.Fatalf("no %s span in trace %x at the collector; it has %v (error %v)", name, trace, got, recv.err)
	return nil
}

// The asker's trace context reaches the new process: `gomon upgrade`
// sends TRACEPARENT on the control socket, the old process carries it in
// the state record through the exec, and the new process's `upgrade` span
// is its child. With tracing on for the command itself, its own
// `gomon_upgrade` span sits in between.
func TestUpgradeSpanInAskersTrace(t *testing.T) {
	requireRoot(t)
	bins := upgradeBinaries(t)
	recv, endpoint := startOTLPHTTPReceiver(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = bins[0]
	cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: endpoint}
	s := startGomon(t, cfg)
	c := running(t, s, nil, "sleep", "1000000")

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	tid, _ := hex.DecodeString(traceID)
	pid, _ := hex.DecodeString(parentID)
	upgradeWith := func(bin string, args ...string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "upgrade", "--runtime-dir", s.runDir, "--binary", bin)...)
		cmd.Env = append(os.Environ(), "TRACEPARENT=00-"+traceID+"-"+parentID+"-01")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "upgraded") {
			t.Fatalf("gomon upgrade %v: %v: %s", args, err, out)
		}
		t.Log(strings.TrimSpace(string(out)))
	}

	// TRACEPARENT alone: the upgrade span is its child.
	upgradeWith(bins[1])
	up := waitSpan(t, recv, "upgrade", tid)
	if !bytes.Equal(up.parent, pid) {
		t.Errorf("upgrade span's parent %x, want the asker's %x", up.parent, pid)
	}
	if up.strs["to"] != "0.5.0 (upgrade-b)" || up.ints["containers"] != 1 {
		t.Errorf("upgrade span: %+v", *up)
	}

	// Tracing on for the command: gomon_upgrade (TRACEPARENT's child),
	// then the new process's upgrade span under it.
	recv.mu.Lock()
	recv.spans = nil
	recv.mu.Unlock()
	upgradeWith(bins[0], "--enable-tracing", "--tracing-endpoint", endpoint)
	cli := waitSpan(t, recv, "gomon_upgrade", tid)
	if !bytes.Equal(cli.parent, pid) {
		t.Errorf("gomon_upgrade span's parent %x, want the asker's %x", cli.parent, pid)
	}
	up = waitSpan(t, recv, "upgrade", tid)
	if !bytes.Equal(up.parent, cli.id) || up.strs["to"] != "0.5.0 (upgrade-a)" {
		t.Errorf("upgrade span (parent %x, to %q), want the child of gomon_upgrade %x, to upgrade-a",
			up.parent, up.strs["to"], cli.id)
	}

	if tag, _ := versionTag(t, s); tag != "upgrade-a" {
		t.Fatalf("Version tag %q after the second upgrade", tag)
	}
	c.runc(t, s, "kill", c.id, "KILL")
	if code := c.exitCode(t); code != 137 {
		t.Errorf("exit code %d after two upgrades", code)
	}
}
