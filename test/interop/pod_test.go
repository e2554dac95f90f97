package interop

// Pod-level services through the client: CreateNamespaces with a pause
// process, and fds passed through the fd socket into a container. Built against both
// client generations (go.mod and go.v073.mod).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

func TestCreateNamespaces(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	base := t.TempDir() // created first, so removed after the daemon stops
	s := startGomon(t, serverConfig(t, t.TempDir()))
	pod := fmt.Sprintf("gomon-pod-%d", os.Getpid())

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	resp, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{
		Namespaces: []client.Namespace{client.NamespaceIPC, client.NamespaceNet, client.NamespaceUTS, client.NamespacePID},
		BasePath:   base,
		PodID:      pod,
	})
	if err != nil {
		t.Fatalf("CreateNamespaces: %v", err)
	}
	wantOrder := []struct {
		typ client.Namespace
		dir string
	}{{client.NamespaceIPC, "ipcns"}, {client.NamespacePID, "pidns"}, {client.NamespaceNet, "netns"}, {client.NamespaceUser, "userns"}, {client.NamespaceUTS, "utsns"}}
	if len(resp.Namespaces) != len(wantOrder) {
		t.Fatalf("%d namespaces, want %d", len(resp.Namespaces), len(wantOrder))
	}
	var paths []string
	var netns string
	for i, want := range wantOrder {
		got := resp.Namespaces[i]
		if got.Type != want.typ || got.Path != filepath.Join(base, want.dir, pod) {
			t.Errorf("namespace %d: %v %s, want %v %s", i, got.Type, got.Path, want.typ, filepath.Join(base, want.dir, pod))
		}
		fi, err := os.Stat(got.Path)
		if err != nil {
			t.Fatalf("stat %s: %v", got.Path, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() != 0 || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v size %d, want a regular 0444 file of size 0", got.Path, fi.Mode(), fi.Size())
		}
		paths = append(paths, got.Path)
		if want.typ == client.NamespaceNet {
			netns = got.Path
		}
	}
	var host, held syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &host); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(netns, &held); err != nil {
		t.Fatal(err)
	}
	if host.Ino == held.Ino {
		t.Errorf("the pod's netns is the host's (inode %d)", host.Ino)
	}

	// A container told to join the netns file is in it.
	c, err := create(t, s, []string{"readlink", "/proc/self/ns/net"}, func(spec map[string]any) {
		linux := spec["linux"].(map[string]any)
		for _, ns := range linux["namespaces"].([]any) {
			if m := ns.(map[string]any); m["type"] == "network" {
				m["path"] = netns
			}
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	records, err := readCRILog(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("net:[%d]", held.Ino); len(records) != 1 || records[0].content != want {
		t.Errorf("container's netns %v, want %s", records, want)
	}

	// One pause process per daemon: a second call gets the same files.
	again, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{BasePath: base, PodID: pod})
	if err != nil || len(again.Namespaces) != 5 || again.Namespaces[2].Path != netns {
		t.Errorf("second CreateNamespaces: %v %v", again, err)
	}

	raw, err := os.ReadFile(filepath.Join(base, "conmonrs", pod+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pausePID, err := strconv.Atoi(string(raw))
	if err != nil || !processExists(pausePID) {
		t.Fatalf("pause pid %q: %v", raw, err)
	}

	s.stop(t)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), base) {
		t.Errorf("mounts under %s left after shutdown", base)
	}
	for _, p := range append(paths, filepath.Join(base, "conmonrs", pod+".pid")) {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after shutdown: %v", p, err)
		}
	}
	if processExists(pausePID) {
		t.Errorf("pause process %d left after shutdown", pausePID)
	}
}

func TestCreateNamespacesWithoutPodID(t *testing.T) {
	requireRoot(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	_, err := s.client.CreateNamespaces(ctx, &client.CreateNamespacesConfig{BasePath: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "no pod ID provided") {
		t.Fatalf("error %v, want \"no pod ID provided\"", err)
	}
}

// TestFDsThroughTheFdSocket passes a pipe's read end through RemoteFDs into
// a container (additionalFds + --preserve-fds) and checks that fds of a
// dropped fd connection are closed.
func TestFDsThroughTheFdSocket(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	remote, err := s.client.RemoteFDs(ctx)
	if err != nil {
		t.Fatalf("RemoteFDs: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := remote.Send(int(r.Fd()))
	if err != nil || len(slots) != 1 {
		t.Fatalf("Send: %v %v", slots, err)
	}
	_ = r.Close() // the daemon holds it now
	const msg = "through the fd socket"
	if _, err := w.WriteString(msg + "\n"); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	c, err := create(t, s, []string{"cat", "/proc/self/fd/3"}, nil, func(req *client.CreateContainerConfig) {
		req.AdditionalFDs = slots
		req.CommandArgs = []string{"--preserve-fds", "1"}
	})
	if err != nil {
		t.Fatalf("create with the passed fd: %v", err)
	}
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	records, err := readCRILog(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].content != msg {
		t.Errorf("container read %v, want %q", records, msg)
	}

	// A second pipe, never used: dropping the connection closes it.
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w2.Close() }()
	if _, err := remote.Send(int(r2.Fd())); err != nil {
		t.Fatal(err)
	}
	_ = r2.Close()
	if err := remote.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		_, err := w2.Write([]byte("x"))
		if errors.Is(err, syscall.EPIPE) {
			break // no reader left: the daemon closed its copy
		}
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon still holds the fd of a dropped connection")
		}
		time.Sleep(10 * time.Millisecond)
	}

	fdSock := filepath.Join(s.runDir, "conmon-fd.sock")
	if _, err := os.Stat(fdSock); err != nil {
		t.Fatalf("fd socket: %v", err)
	}
	s.stop(t)
	if _, err := os.Lstat(fdSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after shutdown: %v", fdSock, err)
	}
}

// TestLeakFDsHeldUntilExit: an fd passed as leakFds stays open in the
// daemon while the container runs and is closed when it exits.
func TestLeakFDsHeldUntilExit(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	remote, err := s.client.RemoteFDs(ctx)
	if err != nil {
		t.Fatalf("RemoteFDs: %v", err)
	}
	defer func() { _ = remote.Close() }()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	slots, err := remote.Send(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Close() // only the daemon holds the read end now

	c, err := create(t, s, []string{"sleep", "1000"}, nil, func(req *client.CreateContainerConfig) {
		req.LeakFDs = slots
	})
	if err != nil {
		t.Fatalf("create with leakFds: %v", err)
	}
	// The fd connection may go now: the slot was consumed by the create.
	_ = remote.Close()
	c.runc(t, s, "start", c.id)
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatalf("write while the container runs (the daemon should hold the read end): %v", err)
	}
	c.runc(t, s, "kill", c.id, "KILL")
	if code := c.exitCode(t); code != 137 {
		t.Fatalf("exit code %d", code)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		_, err := w.Write([]byte("x"))
		if errors.Is(err, syscall.EPIPE) {
			return // the daemon let go of it at exit
		}
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon still holds the leaked fd after the container exited")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
