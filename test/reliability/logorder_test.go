package reliability

// The order of a container's stdout and stderr in its CRI log, with ten
// such containers in one daemon, on a slow log disk and through a stalled
// one.

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/test/harness"
)

// orderPairs is how many "out N" / "err N" pairs pairScript writes.
const orderPairs = 200

// pairScript writes "out N" to stdout and then "err N" to stderr, one
// write(2) each (busybox sh's echo is a builtin).
var pairScript = []string{"sh", "-c", fmt.Sprintf(
	`i=1; while [ $i -le %d ]; do echo out $i; echo err $i >&2; i=$((i+1)); done`, orderPairs)}

// checkPairOrder checks that the log at path holds every pair, "out N"
// before "err N", on the right streams, with timestamps that never go
// back.
func checkPairOrder(t *testing.T, name, path string) {
	t.Helper()
	recs, err := readCRILog(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	pos := map[string]int{}
	for i, r := range recs {
		if r.tag != "F" {
			t.Errorf("%s: partial record %q", name, r.content)
		}
		pos[r.stream+" "+r.content] = i
	}
	if len(pos) != 2*orderPairs || len(recs) != 2*orderPairs {
		t.Fatalf("%s: %d records (%d distinct), want %d", name, len(recs), len(pos), 2*orderPairs)
	}
	inverted := 0
	for i := 1; i <= orderPairs; i++ {
		o, ok1 := pos[fmt.Sprintf("stdout out %d", i)]
		e, ok2 := pos[fmt.Sprintf("stderr err %d", i)]
		if !ok1 || !ok2 {
			t.Fatalf("%s: pair %d missing or on the wrong stream", name, i)
		}
		if e < o {
			inverted++
		}
	}
	if inverted > 0 {
		t.Errorf("%s: %d of %d pairs inverted (err N before out N)", name, inverted, orderPairs)
	}
	if err := timestampsMonotonic(path); err != nil {
		t.Errorf("%s: %v", name, err)
	}
}

// timestampsMonotonic reports the first record whose timestamp is older
// than the one before.
func timestampsMonotonic(path string) error {
	recs, err := harness.ReadCRILog(path)
	if err != nil {
		return err
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			return fmt.Errorf("record %d is stamped %v, before record %d (%v)", i, recs[i].Time, i-1, recs[i-1].Time)
		}
	}
	return nil
}

// mountSlow mounts a loop-backed ext4 with -o sync on a new temp dir: every
// log write waits for the (loop) device, a slow log disk. fsfreeze can
// stall it completely.
func mountSlow(t *testing.T) string {
	t.Helper()
	dir := mountFreezable(t, 64<<20)
	if out, err := exec.Command("mount", "-o", "remount,sync", dir).CombinedOutput(); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot remount %s with -o sync: %v: %s", dir, err, out))
	}
	return dir
}

// TestLogOrderTenContainersSlowDisk: ten containers writing out/err
// pairs at once in one daemon, their CRI logs on a synchronously mounted
// disk, get every pair in order.
func TestLogOrderTenContainersSlowDisk(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	mnt := mountSlow(t)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	ctrs := make([]*ctr, 10)
	for i := range ctrs {
		c := newCtr(t, nil, pairScript...)
		c.logPath = filepath.Join(mnt, fmt.Sprintf("ctr%d.log", i))
		if err := createCtr(t, s, c, nil); err != nil {
			t.Fatal(err)
		}
		ctrs[i] = c
	}
	var wg sync.WaitGroup
	for _, c := range ctrs {
		wg.Add(1)
		go func() { defer wg.Done(); c.runc(t, s, "start", c.id) }()
	}
	wg.Wait()
	for i, c := range ctrs {
		if code := c.exitCode(t); code != 0 {
			t.Fatalf("container %d exited %d", i, code)
		}
		checkPairOrder(t, fmt.Sprintf("container %d", i), c.logPath)
	}
	s.stop(t)
}

// TestLogOrderStalledDisk: the log's filesystem is frozen while the
// container writes all its pairs, so the first chunk's log write stalls
// and both pipes fill behind it; after the thaw the pairs are still in
// order.
func TestLogOrderStalledDisk(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	mnt := mountFreezable(t, 64<<20)
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := newCtr(t, nil, pairScript...)
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
	for processExists(int(c.pid)) { // its 2.6 KB fit the pipes
		if time.Now().After(deadline) {
			t.Fatalf("container init %d still running after %v", c.pid, hangGuard)
		}
		time.Sleep(10 * time.Millisecond)
	}
	thaw()
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	checkPairOrder(t, "container", c.logPath)
	s.stop(t)
}

// TestLogMaxLineFromEnv: GOMON_LOG_MAX_LINE in the environment gomon
// inherits from its client (CRI-O's) joins a 1 MiB line that the
// container writes in small pieces into 64 KiB records: 15 P and one F.
func TestLogMaxLineFromEnv(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Setenv("GOMON_LOG_MAX_LINE", "64KiB")
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := running(t, s, nil, "sh", "-c", `head -c 1048576 /dev/zero | tr '\0' a; echo`)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	recs, err := readCRILog(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	var tags string
	total := 0
	for _, r := range recs {
		tags += r.tag
		if len(r.content) != 64<<10 || strings.Trim(r.content, "a") != "" {
			t.Errorf("record of %d bytes, want 64 KiB of the line", len(r.content))
		}
		total += len(r.content)
	}
	if tags != strings.Repeat("P", 15)+"F" || total != 1<<20 {
		t.Errorf("records %s with %d bytes, want 15 P and one F with 1 MiB", tags, total)
	}
	s.stop(t)
}
