package interop

// The daemon's resident memory through a series of calls, as conmon-rs's
// own client suite checks its server after every spec (its default bound
// is 5.6 MB, its CI's 5.5 MB for a static build).

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	"github.com/gomon-dev/gomon/test/harness"
)

// vmRSSBound is the bound on the daemon's VmRSS after every call of the
// series. Most of it is the pages of the binary the calls run (file-backed
// and shared with every other gomon on the node, but counted in VmRSS all
// the same): a call maps 3 to 4 MiB of code. The series peaks at about
// 10.5 MiB (11.6 to 12 MiB before the daemon released its code pages), so
// conmon-rs's 5.6 MB, or issue 21's 8 MiB, is out of reach while calls go
// on (docs/reliability.md, "Code pages").
const vmRSSBound = 13 << 20

// quietBound is the bound on the daemon's VmRSS once the series is over
// and it has been quiet for reclaimQuiet: the heap's garbage is returned
// and the code pages are released after a whole reclaim period without
// calls, leaving the code an idle daemon runs, the anonymous memory of an
// idle daemon with one container and the runtime metadata the series
// left (4.9 to 5.7 MiB measured; it stayed at 11.1 to 11.7 MiB before
// the release).
const (
	quietBound   = 7 << 20
	reclaimQuiet = 15 * time.Second
)

// TestVmRSSAfterCalls: create/start/exit cycles and exec syncs in one
// daemon, VmRSS read after every call: never above vmRSSBound, and at
// most quietBound after a quiet time (GOMON_MEMORY_QUIET, a duration,
// overrides reclaimQuiet).
func TestVmRSSAfterCalls(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	quiet := reclaimQuiet
	if v := os.Getenv("GOMON_MEMORY_QUIET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("GOMON_MEMORY_QUIET=%q: %v", v, err)
		}
		quiet = d
	}
	s := startGomon(t, serverConfig(t, t.TempDir()))
	time.Sleep(time.Second) // let the start-up settle
	idle := vmRSS(t, s.pid)
	idleAnon := harness.ProcStatus(t, s.pid, "RssAnon")
	peak := idle
	after := func(what string) {
		t.Helper()
		rss := vmRSS(t, s.pid)
		peak = max(peak, rss)
		if rss > vmRSSBound {
			t.Errorf("VmRSS %d KiB after %s, over the %d KiB bound", rss>>10, what, vmRSSBound>>10)
		}
	}
	const cycles, execs = 60, 60
	for i := range cycles {
		c, err := create(t, s, []string{"true"}, nil, nil)
		if err != nil {
			t.Fatalf("cycle %d: CreateContainer: %v", i, err)
		}
		after(fmt.Sprintf("create %d", i))
		c.runc(t, s, "start", c.id)
		if code := c.exitCode(t); code != 0 {
			t.Fatalf("cycle %d: exit code %d", i, code)
		}
		c.runc(t, s, "delete", "--force", c.id)
		after(fmt.Sprintf("cycle %d", i))
	}
	c := runningContainer(t, s, []string{"sleep", "1000"}, nil, nil)
	for i := range execs {
		want := "x" + strconv.Itoa(i)
		res := execSync(t, s, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", want}, Timeout: uint64(execGuard / time.Second)})
		if res.ExitCode != 0 || string(res.Stdout) != want+"\n" {
			t.Fatalf("exec %d: exit %d stdout %q stderr %q", i, res.ExitCode, res.Stdout, res.Stderr)
		}
		after(fmt.Sprintf("exec %d", i))
	}
	busy := vmRSS(t, s.pid)
	time.Sleep(quiet)
	settled := vmRSS(t, s.pid)
	t.Logf("RssAnon idle %d KiB, after the quiet time %d KiB; threads %d",
		idleAnon>>10, harness.ProcStatus(t, s.pid, "RssAnon")>>10, harness.ProcStatus(t, s.pid, "Threads"))
	if os.Getenv("GOMON_MEMORY_SMAPS") != "" {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", s.pid))
		t.Logf("smaps:\n%s", b)
	}
	t.Logf("gomon VmRSS: idle %d KiB, largest after a call %d KiB, after the series %d KiB, after %s quiet %d KiB (bounds %d KiB, %d KiB)",
		idle>>10, peak>>10, busy>>10, quiet, settled>>10, vmRSSBound>>10, quietBound>>10)
	if settled > quietBound {
		t.Errorf("VmRSS %d KiB after %s quiet, over the %d KiB bound (idle %d KiB)", settled>>10, quiet, quietBound>>10, idle>>10)
	}
}
