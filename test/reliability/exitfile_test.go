package reliability

// Exit files on a full filesystem.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitForLog polls the daemon's log file until it contains want.
func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon log lacks %q after %v; it has:\n%s", want, hangGuard, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExitFileFilesystemFull: the exit directory is a 1 MiB tmpfs that is
// full when the container exits.
//
// full-after-create: it fills up while the container runs. The space
// reserved at create holds the exit code, which appears at once.
//
// full-at-create: it is full before the create, so nothing can be
// reserved. The write at exit fails; once space returns, the retry writes
// the right code.
func TestExitFileFilesystemFull(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Run("full-after-create", func(t *testing.T) {
		mnt := mountTmpfs(t, 1<<20)
		s := startGomon(t, serverConfig(t, runcPath(t)))
		c := newCtr(t, nil, "sh", "-c", "exit 7")
		c.exitPath = filepath.Join(mnt, "exit")
		if err := createCtr(t, s, c, nil); err != nil {
			t.Fatal(err)
		}
		fill(t, filepath.Join(mnt, "filler"))
		c.runc(t, s, "start", c.id)
		if code := c.exitCode(t); code != 7 {
			t.Fatalf("exit code %d, want 7", code)
		}
		ents, err := os.ReadDir(mnt)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "exit filler" {
			t.Errorf("exit directory holds %v, want only the exit file and the filler", names)
		}
		s.alive(t)
	})
	t.Run("full-at-create", func(t *testing.T) {
		mnt := mountTmpfs(t, 1<<20)
		cfg := serverConfig(t, runcPath(t))
		daemonLog := withDaemonLog(t, cfg)
		s := startGomon(t, cfg)
		filler := filepath.Join(mnt, "filler")
		fill(t, filler)
		c := newCtr(t, nil, "sh", "-c", "exit 9")
		c.exitPath = filepath.Join(mnt, "exit")
		if err := createCtr(t, s, c, nil); err != nil {
			t.Fatal(err)
		}
		c.runc(t, s, "start", c.id)
		waitForLog(t, daemonLog, "write exit file") // the first write failed: the disk is full
		time.Sleep(300 * time.Millisecond)
		if _, err := os.Stat(c.exitPath); err == nil {
			t.Fatal("exit file written on a full filesystem: the test proved nothing")
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if code := c.exitCode(t); code != 9 {
			t.Fatalf("exit code %d, want 9", code)
		}
		waitForLog(t, daemonLog, "exit file written after retrying")
		s.alive(t)
	})
}
