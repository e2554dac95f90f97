package reliability

// The operational side of an upgrade in place (docs/upgrade.md): the
// upgrade span in the asker's trace, and the pod services (pause process,
// fd socket) carried across the exec.

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"golang.org/x/sys/unix"
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

	// `--all --list` finds this daemon (and upgrades nothing: other
	// daemons on a shared test machine are not this test's).
	list, err := exec.Command(bins[0], "upgrade", "--all", "--list").Output()
	if err != nil || !slices.Contains(strings.Fields(string(list)), s.runDir) {
		t.Fatalf("gomon upgrade --all --list: %v: %q, want %s among them", err, list, s.runDir)
	}
	if tag, _ := versionTag(t, s); tag != "upgrade-a" {
		t.Fatalf("--list upgraded: Version tag %q", tag)
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

// The pod services are carried: the pause process (CreateNamespaces) keeps
// its PID and namespace files across upgrades, the new process answers
// CreateNamespaces with them and tears them down at shutdown; the fd
// socket keeps its socket (same inode: not bound again) and a connection
// held open across the upgrades with the fds it stored: one goes into a
// container after the upgrade, the connection stores more, and when it
// ends the new process closes what nobody took.
func TestUpgradeCarriesPodServices(t *testing.T) {
	requireRoot(t)
	bins := upgradeBinaries(t)
	base := t.TempDir() // created first, so removed after the daemon stops
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = bins[0]
	s := startGomon(t, cfg)
	pod := fmt.Sprintf("gomon-upgrade-pod-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()

	resp, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{
		Namespaces: []client.Namespace{client.NamespaceNet, client.NamespaceUTS}, BasePath: base, PodID: pod,
	})
	if err != nil || len(resp.Namespaces) != 5 {
		t.Fatalf("CreateNamespaces: %v %v", resp, err)
	}
	netns := resp.Namespaces[2].Path
	var held unix.Stat_t
	if err := unix.Stat(netns, &held); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(base, "conmonrs", pod+".pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pausePID, _ := strconv.Atoi(string(raw))

	// The fd socket, with a connection held open across both upgrades
	// and fds stored on it: A is taken after the first upgrade, B and C
	// (sent after it) never are.
	remote, err := s.client.RemoteFDs(ctx) // starts the fd socket
	if err != nil {
		t.Fatalf("RemoteFDs: %v", err)
	}
	defer func() { _ = remote.Close() }()
	fdSock := filepath.Join(s.runDir, "conmon-fd.sock")
	var sockBefore unix.Stat_t
	if err := unix.Stat(fdSock, &sockBefore); err != nil {
		t.Fatal(err)
	}
	var writers [3]*os.File
	send := func(i int) client.RemoteFD {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		writers[i] = w
		t.Cleanup(func() { _ = w.Close() })
		slots, err := remote.Send(int(r.Fd()))
		_ = r.Close() // the daemon holds it now
		if err != nil || len(slots) != 1 {
			t.Fatalf("Send pipe %d: %v %v", i, slots, err)
		}
		return slots[0]
	}
	slotA, slotB := send(0), send(1)
	idle := running(t, s, nil, "sleep", "1000000")

	out, ok := gomonUpgrade(t, bins[1], s.runDir, bins[1])
	if !ok {
		t.Fatalf("upgrade with the pause process and an fd socket connection holding fds: %s", out)
	}
	t.Log(out)
	if tag, pid := versionTag(t, s); tag != "upgrade-b" || pid != s.pid {
		t.Fatalf("after the upgrade: Version tag %q pid %d", tag, pid)
	}

	// The pause process and its files are there, and the new process
	// knows them: CreateNamespaces answers with the same files.
	if !processExists(pausePID) {
		t.Fatalf("pause process %d gone after the upgrade", pausePID)
	}
	var now unix.Stat_t
	if err := unix.Stat(netns, &now); err != nil || now.Ino != held.Ino {
		t.Fatalf("netns file after the upgrade: inode %d (%v), want %d", now.Ino, err, held.Ino)
	}
	again, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{BasePath: base, PodID: pod})
	if err != nil || len(again.Namespaces) != 5 || again.Namespaces[2].Path != netns {
		t.Fatalf("CreateNamespaces after the upgrade: %v %v", again, err)
	}
	if b, _ := os.ReadFile(pidFile); string(b) != string(raw) {
		t.Fatalf("pause PID file after the upgrade: %q, want %q", b, raw)
	}

	// The fd socket is the same socket; the fd stored before the upgrade
	// goes into a container; the held connection stores more.
	var sockAfter unix.Stat_t
	if err := unix.Stat(fdSock, &sockAfter); err != nil || sockAfter.Ino != sockBefore.Ino {
		t.Fatalf("fd socket after the upgrade: inode %d (%v), want %d (the carried socket)", sockAfter.Ino, err, sockBefore.Ino)
	}
	const msg = "stored before the upgrade"
	if _, err := writers[0].WriteString(msg + "\n"); err != nil {
		t.Fatal(err)
	}
	_ = writers[0].Close()
	c := newCtr(t, nil, "cat", "/proc/self/fd/3")
	if err := createCtr(t, s, c, func(req *client.CreateContainerConfig) {
		req.AdditionalFDs = []client.RemoteFD{slotA}
		req.CommandArgs = []string{"--preserve-fds", "1"}
	}); err != nil {
		t.Fatalf("create with the fd stored before the upgrade: %v", err)
	}
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if recs, err := readCRILog(c.logPath); err != nil || len(recs) != 1 || recs[0].content != msg {
		t.Fatalf("container read %v (%v), want %q", recs, err, msg)
	}
	if slotC := send(2); slotC != slotB+1 {
		t.Errorf("slot on the carried connection: %d, want %d (the counter goes on)", slotC, slotB+1)
	}

	// Carried a second time, by a process that adopted both.
	out, ok = gomonUpgrade(t, bins[0], s.runDir, bins[0])
	if !ok {
		t.Fatalf("second upgrade: %s", out)
	}
	// The connection ends: the process that took it over twice closes
	// the fds it stored and nobody took.
	_ = remote.Close()
	for _, i := range []int{1, 2} {
		deadline := time.Now().Add(hangGuard)
		for {
			_, err := writers[i].Write([]byte("x"))
			if errors.Is(err, unix.EPIPE) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the fd of pipe %d, stored on a connection that ended, is still held (%v)", i, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if tag, _ := versionTag(t, s); tag != "upgrade-a" {
		t.Fatalf("after the second upgrade: Version tag %q", tag)
	}
	idle.runc(t, s, "kill", idle.id, "KILL")
	if code := idle.exitCode(t); code != 137 {
		t.Errorf("idle container exit code %d", code)
	}

	// The new process tears the pause process and the fd socket down at
	// shutdown, as the one that started them would.
	s.stop(t)
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mounts), base) {
		t.Errorf("mounts under %s left after shutdown (%v)", base, err)
	}
	for _, p := range []string{netns, pidFile, fdSock} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after shutdown: %v", p, err)
		}
	}
	if processExists(pausePID) {
		t.Errorf("pause process %d left after shutdown", pausePID)
	}
}

// A pause process that died before the upgrade (and was reaped) is
// carried as gone: the upgrade goes through, and the new process still
// removes its namespace files and PID file at shutdown.
func TestUpgradeCarriesADeadPauseProcess(t *testing.T) {
	requireRoot(t)
	bins := upgradeBinaries(t)
	base := t.TempDir()
	cfg := serverConfig(t, runcPath(t))
	cfg.ConmonServerPath = bins[0]
	s := startGomon(t, cfg)
	pod := fmt.Sprintf("gomon-upgrade-deadpod-%d", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	resp, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{
		Namespaces: []client.Namespace{client.NamespaceUTS}, BasePath: base, PodID: pod,
	})
	if err != nil || len(resp.Namespaces) != 5 {
		t.Fatalf("CreateNamespaces: %v %v", resp, err)
	}
	pidFile := filepath.Join(base, "conmonrs", pod+".pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pausePID, _ := strconv.Atoi(string(raw))
	if err := unix.Kill(pausePID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Reaped by the daemon: its /proc entry goes.
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pausePID)); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pause process %d not reaped", pausePID)
		}
	}
	out, ok := gomonUpgrade(t, bins[1], s.runDir, bins[1])
	if !ok {
		t.Fatalf("upgrade with a dead pause process: %s", out)
	}
	if tag, _ := versionTag(t, s); tag != "upgrade-b" {
		t.Fatalf("after the upgrade: Version tag %q", tag)
	}
	s.stop(t)
	for _, ns := range resp.Namespaces {
		if _, err := os.Lstat(ns.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after shutdown: %v", ns.Path, err)
		}
	}
	if _, err := os.Lstat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after shutdown: %v", pidFile, err)
	}
}
