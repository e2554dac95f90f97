package interop

// Container lifecycle through the client: what CRI-O sees of exit codes,
// OOM kills, log reopening, cleanup commands, runtime errors and terminals.
// Built against both client
// generations (go.mod and go.v073.mod).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
)

var ctrSeq atomic.Int64

// ctr is one container created through the client.
type ctr struct {
	id, bundle, dir string
	logPath         string
	exitPath        string
	oomPath         string
	pid             uint32
}

// create makes a container running args; edit (optional) changes its spec
// and cfg (optional) its request.
func create(t *testing.T, s *gomonServer, args []string, edit func(map[string]any), cfg func(*client.CreateContainerConfig)) (*ctr, error) {
	t.Helper()
	runc := runcPath(t)
	c := &ctr{id: fmt.Sprintf("gomon-lc-%d-%d", os.Getpid(), ctrSeq.Add(1)), dir: t.TempDir()}
	c.bundle = makeBusyboxBundle(t, runc, t.TempDir(), args...)
	if edit != nil {
		editSpec(t, c.bundle, edit)
	}
	c.logPath = filepath.Join(c.dir, "ctr.log")
	c.exitPath = filepath.Join(c.dir, "exit")
	c.oomPath = filepath.Join(c.bundle, "oom")
	req := &client.CreateContainerConfig{
		ID:           c.id,
		BundlePath:   c.bundle,
		ExitPaths:    []string{c.exitPath},
		OOMExitPaths: []string{c.oomPath},
		LogDrivers: []client.ContainerLogDriver{{
			Type: client.LogDriverTypeContainerRuntimeInterface,
			Path: c.logPath,
		}},
	}
	if cfg != nil {
		cfg(req)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	t.Cleanup(func() { _ = exec.Command(runc, "--root", s.runtimeRoot, "delete", "--force", c.id).Run() })
	resp, err := s.client.CreateContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	c.pid = resp.PID
	return c, nil
}

func (c *ctr) runc(t *testing.T, s *gomonServer, args ...string) {
	t.Helper()
	harness.RuncIn(t, s.runtimeRoot, args...)
}

func (c *ctr) exitCode(t *testing.T) int {
	t.Helper()
	got, err := waitForFile(c.exitPath)
	if err != nil {
		t.Fatal(err)
	}
	code, err := strconv.Atoi(got)
	if err != nil {
		t.Fatalf("exit file holds %q, want a bare decimal: %v", got, err)
	}
	return code
}

func TestExitCodes(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	tests := []struct {
		name string
		args []string
		kill string // runc kill signal after start; "" = none
		want int
	}{
		{"exit 3", []string{"sh", "-c", "exit 3"}, "", 3},
		{"SIGKILL", []string{"sleep", "1000"}, "KILL", 137},
		{"SIGTERM", []string{"sleep", "1000"}, "TERM", 143},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := create(t, s, tt.args, withoutPIDNamespace, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.runc(t, s, "start", c.id)
			if tt.kill != "" {
				c.runc(t, s, "kill", c.id, tt.kill)
			}
			if got := c.exitCode(t); got != tt.want {
				t.Errorf("exit code %d, want %d", got, tt.want)
			}
		})
	}
}

// TestOOMFileBeforeExitFile: CRI-O stats the exit file, then looks for the
// oom file; so the oom file must exist by the time the exit file does.
func TestOOMFileBeforeExitFile(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	const limit = 8 << 20
	c, err := create(t, s, []string{"tail", "/dev/zero"}, func(spec map[string]any) {
		linux := spec["linux"].(map[string]any)
		res, _ := linux["resources"].(map[string]any)
		if res == nil {
			res = map[string]any{}
			linux["resources"] = res
		}
		res["memory"] = map[string]any{"limit": limit, "swap": limit}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	deadline := time.Now().Add(hangGuard)
	for {
		if _, err := os.Stat(c.exitPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no exit file")
		}
		time.Sleep(time.Millisecond)
	}
	// The exit file exists: the oom file must already be there.
	fi, err := os.Stat(c.oomPath)
	if err != nil {
		t.Fatalf("exit file written but no oom file: %v", err)
	}
	if fi.Size() != 0 {
		t.Errorf("oom file has %d bytes, want it empty", fi.Size())
	}
	if got := c.exitCode(t); got != 137 {
		t.Errorf("exit code %d, want 137", got)
	}
}

// TestReopenLogDuringStream renames the log and calls ReopenLogContainer
// again and again while the container writes, as kubelet's rotation does,
// until the container exits; the rotated files, in order, hold exactly
// what the container wrote. The rotations run for as long as the stream
// does, however slow either side is on a loaded machine.
func TestReopenLogDuringStream(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	const parts = 40
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do seq $((i*5000)) $((i*5000+4999)); printf "part-$i"; usleep 30000; i=$((i+1)); done; printf end`, parts)
	var want bytes.Buffer
	for i := range parts {
		for n := i * 5000; n <= i*5000+4999; n++ {
			fmt.Fprintf(&want, "%d\n", n)
		}
		fmt.Fprintf(&want, "part-%d", i)
	}
	want.WriteString("end")

	c, err := create(t, s, []string{"sh", "-c", script}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	var (
		files       []string
		lastRenamed bool // the container exited between a rename and its reopen
	)
	for i := 0; ; i++ {
		if _, err := os.Stat(c.exitPath); err == nil || i == 500 {
			break
		}
		time.Sleep(40 * time.Millisecond)
		rotated := fmt.Sprintf("%s.%03d", c.logPath, i)
		if err := os.Rename(c.logPath, rotated); err != nil {
			t.Fatal(err)
		}
		files = append(files, rotated)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		err := s.client.ReopenLogContainer(ctx, &client.ReopenLogContainerConfig{ID: c.id})
		cancel()
		if err != nil {
			// The container may have exited since the check above: the
			// call is then refused, and the renamed file holds the end.
			if _, werr := waitForFile(c.exitPath); werr != nil {
				t.Fatalf("ReopenLogContainer %d: %v", i, err)
			}
			t.Logf("ReopenLogContainer %d after the exit: %v", i, err)
			lastRenamed = true
			break
		}
	}
	if got := c.exitCode(t); got != 0 {
		t.Fatalf("exit code %d", got)
	}
	if !lastRenamed {
		files = append(files, c.logPath)
	}
	var got bytes.Buffer
	nonEmpty := 0
	for _, f := range files {
		records, err := readCRILog(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(records) > 0 {
			nonEmpty++
		}
		for _, r := range records {
			got.WriteString(r.content)
			if r.tag == "F" {
				got.WriteByte('\n')
			}
		}
	}
	t.Logf("%d of %d log files got output", nonEmpty, len(files))
	// The reopens must have happened while the container wrote.
	if nonEmpty < 5 {
		t.Errorf("only %d of %d log files got output: the stream ended before the reopens", nonEmpty, len(files))
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		i := 0
		for i < got.Len() && i < want.Len() && got.Bytes()[i] == want.Bytes()[i] {
			i++
		}
		t.Fatalf("logs hold %d bytes, container wrote %d; first difference at byte %d", got.Len(), want.Len(), i)
	}
}

func TestCleanupCommandRunsAfterExit(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	marker := filepath.Join(t.TempDir(), "cleaned")
	var exitPath string
	c, err := create(t, s, []string{"true"}, nil, func(r *client.CreateContainerConfig) {
		exitPath = r.ExitPaths[0]
		// The command records whether the exit file existed when it ran.
		r.CleanupCmd = []string{"/bin/sh", "-c", fmt.Sprintf("cat %s > %s.tmp && mv %s.tmp %s", exitPath, marker, marker, marker)}
	})
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	got, err := waitForFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	if got != "0" {
		t.Errorf("cleanup command saw exit file %q, want 0", got)
	}
}

func TestRuntimeErrorsReachTheClient(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	_, err := create(t, s, []string{"no-such-command"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not found in $PATH") {
		t.Fatalf("create with a missing entrypoint: %v, want the runtime's \"not found in $PATH\"", err)
	}
	// The daemon keeps serving.
	c, err := create(t, s, []string{"true"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.runc(t, s, "start", c.id)
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func TestTerminalOutputIsLoggedWithCRLF(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s := startGomon(t, serverConfig(t, t.TempDir()))
	c, err := create(t, s, []string{"sh", "-c", "echo one; echo two >&2"}, func(spec map[string]any) {
		spec["process"].(map[string]any)["terminal"] = true
	}, func(r *client.CreateContainerConfig) { r.Terminal = true })
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
	var got strings.Builder
	for _, r := range records {
		if r.stream != "stdout" {
			t.Errorf("terminal output logged as %s", r.stream)
		}
		got.WriteString(r.content)
		if r.tag == "F" {
			got.WriteByte('\n')
		}
	}
	if want := "one\r\ntwo\r\n"; got.String() != want {
		t.Errorf("terminal log %q, want %q", got.String(), want)
	}
}
