package upgrade

import (
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// FindAll finds the processes whose command line names a run directory
// holding the control socket, and no other.
func TestFindAll(t *testing.T) {
	withSocket, without := t.TempDir(), t.TempDir()
	l, err := net.Listen("unix", filepath.Join(withSocket, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	for _, dir := range []string{withSocket, without} {
		// "; :" keeps the shell from exec'ing sleep, so its argv stays.
		cmd := exec.Command("/bin/sh", "-c", "sleep 60; :", "--runtime-dir", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	parse := func(args []string, _ map[string]string) string {
		if i := slices.Index(args, "--runtime-dir"); i >= 0 && i+1 < len(args) && args[0] == "-c" {
			return args[i+1]
		}
		return ""
	}
	var dirs []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if dirs, err = FindAll(parse); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(dirs, withSocket) {
			break
		}
	}
	if !slices.Contains(dirs, withSocket) || slices.Contains(dirs, without) {
		t.Fatalf("FindAll = %q, want %s and not %s", dirs, withSocket, without)
	}
}
