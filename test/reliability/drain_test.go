package reliability

// The drain at exit while the log's filesystem is frozen.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// mountFreezable mounts a loop-backed ext4 of size bytes on a new temp
// dir (fsfreeze can stop writes to it), unmounted at the end of the test.
func mountFreezable(t *testing.T, size int64) string {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "fsfreeze", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, fmt.Sprintf("%s not found: %v", tool, err))
		}
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot loop-mount an ext4 image: %v: %s", err, out))
	}
	t.Cleanup(func() {
		_ = exec.Command("fsfreeze", "-u", dir).Run() // in case the test stopped while frozen
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func fsfreeze(t *testing.T, flag, dir string) {
	t.Helper()
	if out, err := exec.Command("fsfreeze", flag, dir).CombinedOutput(); err != nil {
		t.Fatalf("fsfreeze %s %s: %v: %s", flag, dir, err, out)
	}
}

// logStream rebuilds the bytes a container wrote from its CRI log.
func logStream(t *testing.T, path string) []byte {
	t.Helper()
	recs, err := readCRILog(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var b bytes.Buffer
	for _, r := range recs {
		b.WriteString(r.content)
		if r.tag == "F" {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// TestDrainThroughStalledLogWrite: the container writes 9000 lines
// (900 KB, which the 1 MiB pipe holds) and exits while its log's
// filesystem is frozen, so the read loop is stuck in its first log write.
// The stall lasts 10 s after the exit, longer than the 5 s bound for a
// stream held open by a leftover process. Nothing is dropped: the exit
// file appears only after the log write resumed and the pipe was drained,
// the log is byte-exact, and gomon reports nothing unread.
func TestDrainThroughStalledLogWrite(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	mnt := mountFreezable(t, 64<<20)
	cfg := serverConfig(t, runcPath(t))
	daemonLog := withDaemonLog(t, cfg)
	s := startGomon(t, cfg)

	const n = 9000
	pad := strings.Repeat("x", 90)
	var want bytes.Buffer
	for i := range n {
		fmt.Fprintf(&want, "line-%d %s\n", i, pad)
	}
	c := newCtr(t, nil, "awk", fmt.Sprintf(`BEGIN { for (i = 0; i < %d; i++) printf "line-%%d %s\n", i }`, n, pad))
	c.logPath = filepath.Join(mnt, "ctr.log")
	if err := createCtr(t, s, c, nil); err != nil {
		t.Fatal(err)
	}
	fsfreeze(t, "-f", mnt)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			fsfreeze(t, "-u", mnt)
		}
	}
	defer thaw()
	c.runc(t, s, "start", c.id)

	deadline := time.Now().Add(hangGuard)
	for processExists(int(c.pid)) {
		if time.Now().After(deadline) {
			t.Fatalf("container init %d still running after %v: its output did not fit the pipe", c.pid, hangGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
	exited := time.Now()
	for time.Since(exited) < 10*time.Second {
		if _, err := os.Stat(c.exitPath); err == nil {
			t.Fatalf("exit file written %v after the exit, while the log write was still stalled",
				time.Since(exited).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	thaw()
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	got := logStream(t, c.logPath)
	if !bytes.Equal(got, want.Bytes()) {
		lines := strings.Count(string(got), "\n")
		t.Errorf("log holds %d bytes (%d lines), want %d bytes (%d lines) byte for byte",
			len(got), lines, want.Len(), n)
	}
	s.stop(t)
	raw, err := os.ReadFile(daemonLog)
	if err != nil {
		t.Fatal(err)
	}
	// The warnings of a drain cut short, and a read loop's summary with
	// unread bytes (its counters are logged by name: stats.unread_bytes=0
	// is the good case).
	for _, bad := range []string{"left unread", "counted as unread", "leftover process", "not drained"} {
		if strings.Contains(string(raw), bad) {
			t.Errorf("daemon log reports %q:\n%s", bad, raw)
		}
	}
	if regexp.MustCompile(`stats\.unread_bytes=[1-9]`).Match(raw) {
		t.Errorf("a read loop ended with unread bytes:\n%s", raw)
	}
	if !strings.Contains(string(raw), "stats.unread_bytes=0") {
		t.Errorf("daemon log has no read-loop summary to check:\n%s", raw)
	}
}
