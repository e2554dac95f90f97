package reliability

// The soak (`make soak`; not in CI): one pod of several containers that
// log continuously while faults are injected at random, then checks the
// pod's invariants. See TestSoak.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
)

const (
	// soakEnv turns the soak on: GOMON_SOAK=<duration> (e.g. 5m).
	soakEnv = "GOMON_SOAK"
	// Hostile collector answers (slow, garbage, a huge chunk size, an
	// endless header line) are among the collector faults unless
	// soakHostileEnv=0.
	soakHostileEnv = "GOMON_SOAK_HOSTILE_COLLECTOR"

	soakSlots     = 4        // containers of the pod logging at any time
	soakTmpfsSize = 32 << 20 // the pod's log and exit directory
	soakFloodSize = 200      // connections per flood of conmon.sock
	// soakSummaryWait bounds the wait for a container's read-loop summary
	// in the daemon's log after its exit file appeared (journald stalls
	// are shorter than gomon's 2 s journald send deadline).
	soakSummaryWait = 20 * time.Second

	// Bounds on the daemon's growth between the end of the warm-up and
	// the end of the soak, both measured with no container running,
	// no fault active and only the soak's own clients connected (idle). Threads: Go keeps an OS
	// thread it created for a blocking syscall, so a new peak of blocked
	// syscalls (e.g. more log writes stuck on a full disk at once than
	// during the warm-up) may add a few for good.
	soakFDSlack     = 2
	soakThreadSlack = 6
	soakRSSSlack    = 8 << 20
)

// soakCtr is one container of the soak: it writes lines
// "<prefix>-<i> <pad>\n" for i < lines, then exits with code.
type soakCtr struct {
	slot, gen int
	id        string
	dir       string
	logPath   string
	exitPath  string
	pid       uint32
	prefix    string
	pad       string
	lines     int
	code      int
	fast      bool // written in one burst by awk
	args      []string
}

// written is the exact stdout the container writes.
func (c *soakCtr) written() []byte {
	var b bytes.Buffer
	for i := range c.lines {
		fmt.Fprintf(&b, "%s-%d %s\n", c.prefix, i, c.pad)
	}
	return b.Bytes()
}

// soakStats is one read loop's summary as the daemon logged it
// (ioloop.Stats): bytes read from the stream, bytes a destination did
// not take, bytes left unread when the drain stopped the loop, and bytes
// a log rate limit kept from the log (none unless GOMON_LOG_RATE_LIMIT is
// set). bad says why the summary could not be read (a counter missing).
type soakStats struct {
	bytes, dropped, unread, rateLimited int64
	bad                                 string
}

// soakTotals are the byte counts of the containers verified so far.
type soakTotals struct {
	containers  int
	written     int64
	logged      int64
	dropped     int64
	unread      int64
	lost        int64 // neither in the log nor counted
	overcounted int64 // counted as dropped although in the log (a chunk partly written before the write failed)
	unverified  int   // containers without a read-loop summary (each one fails the soak)
}

type soak struct {
	t       *testing.T
	s       *gomonServer
	fr      *faultRuntime
	j       *fakeJournal
	col     *fakeCollector
	mnt     string
	work    string
	runc    string
	hostile bool
	// clients[slot] serves that slot, clients[soakSlots] the exec target
	// and its exec syncs.
	clients []*client.ConmonClient

	rtEpoch atomic.Int64 // odd while a runtime fault is set
	seq     atomic.Int64

	mu      sync.Mutex
	counts  map[string]int
	events  []string         // timed fault injections and errors, for keepJournal
	current map[int]*soakCtr // running slot containers
	pending []*soakCtr       // exited, summary not seen yet
	totals  soakTotals
	reasons map[string]int
	target  *soakCtr // the exec target of the current phase
}

func (k *soak) count(kind string, n int) {
	k.mu.Lock()
	k.counts[kind] += n
	k.mu.Unlock()
	if kind != "containers" && kind != "exec syncs" {
		k.event("SOAK: %s", kind)
	}
}

// event notes what the soak did, for keepJournal.
func (k *soak) event(format string, args ...any) {
	line := time.Now().UTC().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
	k.mu.Lock()
	k.events = append(k.events, line)
	k.mu.Unlock()
}

// errorf fails the test and notes the failure for keepJournal.
func (k *soak) errorf(format string, args ...any) {
	k.t.Helper()
	k.event("SOAK FAILURE: "+format, args...)
	k.t.Errorf(format, args...)
}

// TestSoak runs only with GOMON_SOAK=<duration>: a pod of soakSlots
// containers, each writing numbered lines at a random pace and exiting
// with a random code, replaced by a new one when it exits, plus one exec
// target that takes exec syncs all along. Meanwhile, each on a goroutine
// of its own and at random: the pod's log and exit directory (a tmpfs)
// is filled and freed; the OTLP/HTTP collector goes down and comes back
// (or turns hostile, unless GOMON_SOAK_HOSTILE_COLLECTOR=0); the daemon's
// journald stops reading for a while; the runtime fails creates and
// execs; a client is SIGKILLed in the middle of an exec sync or an
// attach; conmon.sock is flooded with soakFloodSize connections.
//
// The first fifth is the warm-up (every fault kind comes at least once).
// After the warm-up and at the end, faults stop, the containers finish
// and the daemon's fds, threads and VmRSS are measured. Checked: every
// exit file holds the right code; for every container, every byte it
// wrote is read by gomon or counted unread, and every byte read is in
// the CRI log (in order, unaltered) or counted as dropped, by the
// read-loop summary the daemon logs; growth after the warm-up stays
// within soakFDSlack, soakThreadSlack and soakRSSSlack; no zombies, no
// leftovers.
func TestSoak(t *testing.T) {
	v := os.Getenv(soakEnv)
	if v == "" {
		t.Skipf("the soak runs only with %s=<duration> (make soak)", soakEnv)
	}
	total, err := time.ParseDuration(v)
	if err != nil || total < 20*time.Second {
		t.Fatalf("%s=%q: want a duration of at least 20s", soakEnv, v)
	}
	requireRoot(t)
	checkNoLeftovers(t)
	k := &soak{
		t: t, runc: runcPath(t), work: t.TempDir(), hostile: os.Getenv(soakHostileEnv) != "0",
		counts: map[string]int{}, current: map[int]*soakCtr{}, reasons: map[string]int{},
	}
	makeBundle(t, nil, "true") // builds the shared rootfs and reads the base spec
	k.mnt = mountTmpfs(t, soakTmpfsSize)
	k.fr = newFaultRuntime(t)

	if k.j, err = startFakeJournal(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.j.close)
	if k.col, err = startFakeCollector(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.col.close)
	t.Setenv(journalSocketEnv, k.j.path)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")

	cfg := serverConfig(t, k.fr.path)
	cfg.LogDriver = client.LogDriverSystemd
	cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: "http://" + k.col.addr}
	k.s = startGomon(t, cfg)
	k.s.alive(t)
	// The conmon-rs client shares one connection among its callers and
	// closes it when any call returns an error (resetConn), which fails
	// every other call in flight on it with "rpc: connection closed". The
	// injected create failures would then fail unrelated exec syncs: each
	// slot and the exec loop get a client (a connection) of their own.
	k.clients = make([]*client.ConmonClient, soakSlots+1)
	for i := range k.clients {
		cl, err := client.New(cfg) // finds the running daemon
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		if int(cl.PID()) != k.s.pid {
			t.Fatalf("client %d talks to pid %d, want %d", i, cl.PID(), k.s.pid)
		}
		k.clients[i] = cl
	}
	t.Cleanup(k.keepJournal)

	warm := total / 5
	start := time.Now()
	k.phase(warm)
	warmUsage := measure(t, k.s)
	t.Logf("after the warm-up (%v): %v", time.Since(start).Round(time.Second), warmUsage)
	k.phase(total - warm)
	endUsage := measure(t, k.s)
	k.s.alive(t)
	if z := zombiesOf(t, k.s.pid); len(z) != 0 {
		t.Errorf("gomon has zombie children at the end: %+v", z)
	}
	k.report(time.Since(start), warmUsage, endUsage)
	if k.totals.containers == 0 {
		t.Error("no container was verified: a soak that checked nothing does not pass")
	}
	if endUsage.fds > warmUsage.fds+soakFDSlack {
		t.Errorf("fds grew from %d after the warm-up to %d at the end (bound +%d)", warmUsage.fds, endUsage.fds, soakFDSlack)
	}
	if endUsage.threads > warmUsage.threads+soakThreadSlack {
		t.Errorf("threads grew from %d after the warm-up to %d at the end (bound +%d)", warmUsage.threads, endUsage.threads, soakThreadSlack)
	}
	if endUsage.rss > warmUsage.rss+soakRSSSlack {
		t.Errorf("VmRSS grew from %d KiB after the warm-up to %d KiB at the end (bound +%d KiB)",
			warmUsage.rss>>10, endUsage.rss>>10, soakRSSSlack>>10)
	}
	if left, _ := filepath.Glob(filepath.Join(k.s.runDir, "exec_sync*")); len(left) != 0 {
		t.Errorf("exec pidfiles left in the run dir: %v", left)
	}
}

// phase runs the pod and the fault injectors for d, then stops the
// faults, lets every container finish and verifies them all.
func (k *soak) phase(d time.Duration) {
	t := k.t
	stopFile := filepath.Join(rootfsDir, "tmp", fmt.Sprintf("soak-stop-%d-%d", os.Getpid(), k.seq.Add(1)))
	target := k.newCtr(-1, 0)
	target.args = []string{"sh", "-c", fmt.Sprintf("while [ ! -e %s ]; do usleep 100000; done; exit 42", strings.TrimPrefix(stopFile, rootfsDir))}
	target.code, target.lines = 42, 0
	if err := k.start(target, k.clients[soakSlots]); err != nil {
		t.Fatalf("exec target: %v", err)
	}
	k.mu.Lock()
	k.target = target
	k.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var faults, pod sync.WaitGroup
	for _, inj := range []func(context.Context){k.diskFaults, k.collectorFaults, k.journalFaults, k.runtimeFaults, k.clientKills, k.floods} {
		faults.Go(func() { inj(ctx) })
	}
	for slot := range soakSlots {
		pod.Go(func() { k.slot(ctx, slot) })
	}
	pod.Go(func() { k.execSyncs(ctx, target) })
	<-ctx.Done()
	faults.Wait()
	pod.Wait()

	if err := os.WriteFile(stopFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.Remove(stopFile) }()
	k.finish(target)
	k.mu.Lock()
	k.target = nil
	k.mu.Unlock()

	// The summaries of the last containers may still be on their way.
	deadline := time.Now().Add(soakSummaryWait)
	for {
		k.verifyPending(false)
		k.mu.Lock()
		n := len(k.pending)
		k.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.verifyPending(true)
}

// newCtr plans container gen of slot: a random pace, line length and
// exit code; one in ten writes 5000–20000 lines in one burst.
func (k *soak) newCtr(slot, gen int) *soakCtr {
	n := k.seq.Add(1)
	c := &soakCtr{slot: slot, gen: gen, id: fmt.Sprintf("soak-%d-%d", os.Getpid(), n)}
	c.prefix = fmt.Sprintf("s%dg%d", slot, gen)
	c.code = rand.IntN(126)
	if rand.IntN(10) == 0 {
		c.fast = true
		c.lines = 5000 + rand.IntN(15000)
		c.pad = strings.Repeat("f", 50+rand.IntN(100))
		c.args = []string{"sh", "-c", fmt.Sprintf(`awk 'BEGIN { for (i = 0; i < %d; i++) printf "%s-%%d %s\n", i }'; exit %d`,
			c.lines, c.prefix, c.pad, c.code)}
		return c
	}
	c.lines = 20 + rand.IntN(400)
	c.pad = strings.Repeat(string(rune('a'+rand.IntN(26))), 10+rand.IntN(400))
	burst, pause := 1+rand.IntN(10), 20000+rand.IntN(130000)
	c.args = []string{"sh", "-c", fmt.Sprintf(
		`i=0; while [ $i -lt %d ]; do j=0; while [ $j -lt %d ] && [ $i -lt %d ]; do echo "%s-$i %s"; i=$((i+1)); j=$((j+1)); done; usleep %d; done; exit %d`,
		c.lines, burst, c.lines, c.prefix, c.pad, pause, c.code)}
	return c
}

// writeBundle writes a bundle for args over the shared rootfs into dir.
func writeBundle(dir string, args []string) error {
	var spec map[string]any
	if err := json.Unmarshal(specRaw, &spec); err != nil {
		return fmt.Errorf("parse base spec: %w", err)
	}
	process := spec["process"].(map[string]any)
	process["terminal"] = false
	process["args"] = args
	root := spec["root"].(map[string]any)
	root["path"] = rootfsDir
	root["readonly"] = false
	raw, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bundle dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

// start creates (through the fault wrapper) and starts (with the real
// runc) c. A create that fails while a runtime fault is set is counted and
// retried under a new ID; any other failure is returned.
func (k *soak) start(c *soakCtr, cl *client.ConmonClient) error {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.id = fmt.Sprintf("soak-%d-%d", os.Getpid(), k.seq.Add(1))
		}
		c.dir = filepath.Join(k.work, c.id)
		c.logPath = filepath.Join(k.mnt, c.id+".log")
		c.exitPath = filepath.Join(k.mnt, c.id+".exit")
		bundle := filepath.Join(c.dir, "bundle")
		if err := writeBundle(bundle, c.args); err != nil {
			return err
		}
		req := &client.CreateContainerConfig{
			ID: c.id, BundlePath: bundle, ExitPaths: []string{c.exitPath},
			LogDrivers: []client.ContainerLogDriver{{Type: client.LogDriverTypeContainerRuntimeInterface, Path: c.logPath}},
		}
		e0 := k.rtEpoch.Load()
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		resp, err := cl.CreateContainer(ctx, req)
		cancel()
		e1 := k.rtEpoch.Load()
		if err == nil {
			c.pid = resp.PID
			break
		}
		_ = exec.Command(k.runc, "--root", k.s.runtimeRoot, "delete", "--force", c.id).Run() // nothing to delete, normally
		if (e0%2 == 1 || e1 != e0) && attempt < 100 {
			k.count("creates failed by an injected runtime fault (retried)", 1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return fmt.Errorf("create %s (attempt %d): %w", c.id, attempt, err)
	}
	if out, err := exec.Command(k.runc, "--root", k.s.runtimeRoot, "start", c.id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc start %s: %w: %s", c.id, err, out)
	}
	return nil
}

// finish waits for c's exit file, checks the code, deletes c from the
// runtime and queues it for the byte check.
func (k *soak) finish(c *soakCtr) {
	// Bounded: a fast container needs seconds, and an exit file refused by
	// a full disk is retried until the disk injector frees it.
	got, err := waitForFile(c.exitPath, 3*time.Minute)
	switch {
	case err != nil:
		k.errorf("container %s (exit code %d due): %v", c.id, c.code, err)
	case got != strconv.Itoa(c.code):
		k.errorf("container %s: exit file holds %q, want %d", c.id, got, c.code)
	}
	if out, err := exec.Command(k.runc, "--root", k.s.runtimeRoot, "delete", "--force", c.id).CombinedOutput(); err != nil {
		k.errorf("runc delete %s: %v: %s", c.id, err, out)
	}
	k.mu.Lock()
	k.pending = append(k.pending, c)
	k.mu.Unlock()
	k.verifyPending(false)
}

// slot runs containers one after the other until ctx ends.
func (k *soak) slot(ctx context.Context, slot int) {
	for gen := 0; ctx.Err() == nil; gen++ {
		c := k.newCtr(slot, gen)
		if err := k.start(c, k.clients[slot]); err != nil {
			k.errorf("slot %d: %v", slot, err)
			return
		}
		k.mu.Lock()
		k.current[slot] = c
		k.mu.Unlock()
		k.count("containers", 1)
		k.finish(c)
		k.mu.Lock()
		delete(k.current, slot)
		k.mu.Unlock()
	}
}

// execSyncs runs exec syncs in target until ctx ends.
func (k *soak) execSyncs(ctx context.Context, target *soakCtr) {
	for i := 0; sleepCtx(ctx, randDur(100*time.Millisecond, 400*time.Millisecond)); i++ {
		want, code := strconv.Itoa(i), rand.IntN(3)
		cctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		res, err := k.clients[soakSlots].ExecSyncContainer(cctx, &client.ExecSyncConfig{
			ID: target.id, Command: []string{"sh", "-c", "echo " + want + "; exit " + strconv.Itoa(code)}, Timeout: 20,
		})
		cancel()
		switch {
		case err != nil:
			k.errorf("exec sync %d: %v", i, err)
		case res.ExitCode == -2 && strings.Contains(string(res.Stderr), "runc-fault: injected exec failure"):
			k.count("exec syncs failed by an injected runtime fault", 1)
		case res.ExitCode != int32(code) || string(res.Stdout) != want+"\n":
			k.errorf("exec sync %d: exit %d stdout %q stderr %q, want %d and %q", i, res.ExitCode, res.Stdout, res.Stderr, code, want+"\n")
		default:
			k.count("exec syncs", 1)
		}
	}
}

// diskFaults fills the pod's log and exit tmpfs and frees it again.
func (k *soak) diskFaults(ctx context.Context) {
	filler := filepath.Join(k.mnt, "filler")
	for sleepCtx(ctx, randDur(time.Second, 8*time.Second)) {
		if err := fillFS(filler); err != nil {
			k.errorf("disk fault: %v", err)
		}
		k.count("disk full (log and exit tmpfs filled, freed after 0.5–4 s)", 1)
		sleepCtx(ctx, randDur(500*time.Millisecond, 4*time.Second))
		if err := os.Remove(filler); err != nil {
			k.errorf("disk fault: free: %v", err)
		}
	}
}

// collectorFaults takes the collector down (or makes it hostile) and
// back up.
func (k *soak) collectorFaults(ctx context.Context) {
	modes := []int{collectorDown}
	if k.hostile {
		modes = append(modes, collectorSlow, collectorGarbage, collectorHugeChunk, collectorEndlessHead)
	}
	for sleepCtx(ctx, randDur(2*time.Second, 10*time.Second)) {
		mode := modes[rand.IntN(len(modes))]
		if err := k.col.setMode(mode); err != nil {
			k.errorf("collector fault: %v", err)
			continue
		}
		k.count("collector "+collectorModeNames[mode]+" (1–6 s)", 1)
		sleepCtx(ctx, randDur(time.Second, 6*time.Second))
		// The port may be taken while down; try a few times.
		for try := 0; ; try++ {
			err := k.col.setMode(collectorUp)
			if err == nil {
				break
			}
			if try == 20 {
				k.errorf("collector back up: %v", err)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// journalFaults stops the daemon's journald from reading for 0.2–1.5 s:
// shorter than gomon's 2 s journald send deadline, so every record still
// arrives and the byte accounting can be checked for every container.
// (Longer stalls, where records are dropped and reported, are
// TestStalledJournald's.)
func (k *soak) journalFaults(ctx context.Context) {
	for sleepCtx(ctx, randDur(time.Second, 8*time.Second)) {
		k.j.stalled.Store(true)
		k.count("journald stalled (0.2–1.5 s)", 1)
		sleepCtx(ctx, randDur(200*time.Millisecond, 1500*time.Millisecond))
		k.j.stalled.Store(false)
	}
}

// runtimeFaults makes the runtime fail creates or execs for 0.3–1.5 s.
func (k *soak) runtimeFaults(ctx context.Context) {
	kinds := []struct{ name, control string }{
		{"runtime create fails (0.3–1.5 s)", "create fail\n"},
		{"runtime create writes a garbage pidfile (0.3–1.5 s)", "create garbagepid\n"},
		{"runtime exec fails (0.3–1.5 s)", "exec fail\n"},
	}
	for sleepCtx(ctx, randDur(2*time.Second, 10*time.Second)) {
		f := kinds[rand.IntN(len(kinds))]
		k.rtEpoch.Add(1)
		if err := setRuntimeFaults(k.fr, f.control); err != nil {
			k.errorf("runtime fault: %v", err)
		}
		k.count(f.name, 1)
		sleepCtx(ctx, randDur(300*time.Millisecond, 1500*time.Millisecond))
		if err := setRuntimeFaults(k.fr, ""); err != nil {
			k.errorf("runtime fault: clear: %v", err)
		}
		k.rtEpoch.Add(1)
	}
}

// clientKills SIGKILLs a second client in the middle of an exec sync (the
// exec'd command must then be killed by gomon) or of an attach.
func (k *soak) clientKills(ctx context.Context) {
	for i := 0; sleepCtx(ctx, randDur(2*time.Second, 10*time.Second)); i++ {
		k.mu.Lock()
		target := k.target
		var attachTo *soakCtr
		for _, c := range k.current {
			attachTo = c
			break
		}
		k.mu.Unlock()
		if i%2 == 1 && attachTo != nil {
			sock := filepath.Join(attachTo.dir, fmt.Sprintf("attach-%d", i))
			h, err := spawnHelper(helperCfg{Mode: "attach", RunDir: k.s.runDir, AttachID: attachTo.id, AttachSock: sock,
				Out: filepath.Join(attachTo.dir, fmt.Sprintf("attach-%d.out", i))})
			if err != nil {
				k.errorf("client kill: %v", err)
				continue
			}
			time.Sleep(randDur(200*time.Millisecond, time.Second))
			_ = h.Process.Kill() // our own helper
			_ = h.Wait()         // killed, or ended with its container
			k.count("client SIGKILLed during an attach", 1)
			continue
		}
		argv := []string{"sleep", strconv.Itoa(600 + i)}
		h, err := spawnHelper(helperCfg{Mode: "exec", RunDir: k.s.runDir, Exec: &client.ExecSyncConfig{ID: target.id, Command: argv}})
		if err != nil {
			k.errorf("client kill: %v", err)
			continue
		}
		exited := make(chan struct{})
		go func() { _ = h.Wait(); close(exited) }() // reaps the helper
		started := false
		for deadline := time.Now().Add(hangGuard); !started && time.Now().Before(deadline); {
			select {
			case <-exited: // its exec failed (a runtime fault): nothing to kill
				deadline = time.Time{}
				continue
			case <-time.After(20 * time.Millisecond):
			}
			pids, err := nsProcs(target.pid, argv...)
			if err != nil {
				k.errorf("client kill: %v", err)
				break
			}
			started = len(pids) > 0
		}
		_ = h.Process.Kill() // our own helper
		<-exited
		if !started {
			k.count("client exec not started (runtime fault), helper killed anyway", 1)
			continue
		}
		k.count("client SIGKILLed during an exec sync", 1)
		deadline := time.Now().Add(15 * time.Second)
		for {
			pids, err := nsProcs(target.pid, argv...)
			if err != nil || len(pids) == 0 {
				break
			}
			if time.Now().After(deadline) {
				k.errorf("the exec %v of a killed client still runs in the container: pids %v", argv, pids)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// floods dials conmon.sock soakFloodSize times at once and holds the
// connections for 0.5–2 s.
func (k *soak) floods(ctx context.Context) {
	sock := filepath.Join(k.s.runDir, "conmon.sock")
	for sleepCtx(ctx, randDur(3*time.Second, 12*time.Second)) {
		n, err := soakFlood(sock, soakFloodSize, randDur(500*time.Millisecond, 2*time.Second))
		if err != nil {
			k.errorf("connection flood: %v", err)
		}
		k.count(fmt.Sprintf("conmon.sock flood (%d connections, half sending junk, held 0.5–2 s)", soakFloodSize), 1)
		k.count("flood connections accepted", n)
	}
}

// readLoopEnded matches the daemon's debug record at the end of a read
// loop (monitor/container.go): "read loop ended container_id=… stream=…
// stats.bytes=… stats.chunks=… … error=…".
var readLoopEnded = regexp.MustCompile(`^read loop ended container_id=(\S+) .*?\bstream=(stdout|stderr) `)

// statField matches one counter of that record: ioloop.Stats is logged
// by name (Stats.LogValue), so that a counter added later changes
// nothing here, and one renamed or missing fails the soak (soakCounters).
var statField = regexp.MustCompile(` stats\.([a-z_]+)=(\S+)`)

// soakCounters are the counters the soak needs from a summary, by name
// (ioloop.Stats.LogValue): Bytes, DroppedBytes, UnreadBytes and
// RateLimitedBytes.
var soakCounters = []string{"bytes", "dropped_bytes", "unread_bytes", "rate_limited_bytes"}

// parseStats reads the counters of one read-loop summary by name.
func parseStats(m string) soakStats {
	got := map[string]string{}
	for _, f := range statField.FindAllStringSubmatch(m, -1) {
		if _, dup := got[f[1]]; !dup {
			got[f[1]] = f[2]
		}
	}
	var n [4]int64
	for i, name := range soakCounters {
		v, ok := got[name]
		if !ok {
			return soakStats{bad: fmt.Sprintf("no stats.%s in %q", name, m)}
		}
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return soakStats{bad: fmt.Sprintf("stats.%s=%q in %q: %v", name, v, m, err)}
		}
		n[i] = x
	}
	return soakStats{bytes: n[0], dropped: n[1], unread: n[2], rateLimited: n[3]}
}

// dropReason matches the daemon's warning when a destination starts
// failing, and the one for output left unread.
var dropReason = regexp.MustCompile(`^output destination failing, dropping output until it recovers .*error=.*: ([^:]+)$`)

// failingFor matches the warning that starts a burst of failed writes,
// which names the container and carries the error (the drop's reason).
var failingFor = regexp.MustCompile(`^output destination failing, dropping output until it recovers container_id=(\S+) .*error=\S`)

// summaries parses the read-loop summaries in the daemon's log so far,
// and notes the containers for which a failing destination was reported.
func (k *soak) summaries() (map[string]map[string]soakStats, map[string]bool, int) {
	msgs, dropped, _, _ := k.j.snapshot()
	out := map[string]map[string]soakStats{}
	reasoned := map[string]bool{}
	for _, m := range msgs {
		if g := failingFor.FindStringSubmatch(m); g != nil {
			reasoned[g[1]] = true
			continue
		}
		g := readLoopEnded.FindStringSubmatch(m)
		if g == nil {
			continue
		}
		if out[g[1]] == nil {
			out[g[1]] = map[string]soakStats{}
		}
		out[g[1]][g[2]] = parseStats(m)
	}
	return out, reasoned, dropped
}

// TestSoakReadsSummaryByName: the soak's parser of the read-loop summary
// (no root, no daemon) takes counters by name, ignores counters it does
// not know, and says so when one it needs is missing.
func TestSoakReadsSummaryByName(t *testing.T) {
	rec := "read loop ended container_id=c1 stream=stdout stats.bytes=100 stats.chunks=2 stats.lines=3 stats.partials=0 " +
		"stats.write_errors=1 stats.dropped_bytes=5 stats.unread_bytes=7 stats.rate_limited_bytes=9 stats.rate_limit_gaps=1 " +
		"stats.rate_limit_wait=0s stats.some_future_counter=4 error=<nil>"
	g := readLoopEnded.FindStringSubmatch(rec)
	if g == nil || g[1] != "c1" || g[2] != "stdout" {
		t.Fatalf("readLoopEnded on %q: %q", rec, g)
	}
	if got, want := parseStats(rec), (soakStats{bytes: 100, dropped: 5, unread: 7, rateLimited: 9}); got != want {
		t.Errorf("parseStats: %+v, want %+v", got, want)
	}
	if got := parseStats(strings.Replace(rec, "stats.unread_bytes=7 ", "", 1)); !strings.Contains(got.bad, "no stats.unread_bytes") {
		t.Errorf("without unread_bytes: %+v, want it named as missing", got)
	}
	if got := parseStats("read loop ended container_id=c1 stream=stdout stats={100 2 3 0 1 5 7} error=<nil>"); got.bad == "" {
		t.Errorf("positional stats accepted: %+v", got)
	}
}

// verifyPending checks every exited container whose read-loop summaries
// arrived; with final, those without fail the soak (a container not
// verified is never a pass, even when gomon reported dropping daemon log
// records, which the message then says) and are forgotten.
func (k *soak) verifyPending(final bool) {
	sums, reasoned, droppedRecords := k.summaries()
	k.mu.Lock()
	pending := k.pending
	k.pending = nil
	k.mu.Unlock()
	var keep []*soakCtr
	for _, c := range pending {
		st, ok := sums[c.id]
		if !ok || len(st) < 2 {
			if !final {
				keep = append(keep, c)
				continue
			}
			k.mu.Lock()
			k.totals.unverified++
			k.mu.Unlock()
			k.errorf("container %s: no read-loop summary for both streams in the daemon's log (got %v; gomon reported %d of its log records dropped): not verified",
				c.id, slices.Sorted(maps.Keys(st)), droppedRecords)
			continue
		}
		if bad := cmp.Or(st["stdout"].bad, st["stderr"].bad); bad != "" {
			k.mu.Lock()
			k.totals.unverified++
			k.mu.Unlock()
			k.errorf("container %s: read-loop summary unreadable: %s: not verified", c.id, bad)
			continue
		}
		k.verify(c, st["stdout"], st["stderr"], reasoned[c.id])
	}
	k.mu.Lock()
	k.pending = append(k.pending, keep...)
	k.mu.Unlock()
}

// verify checks one container's log against what it wrote and the
// summaries (reasoned: gomon warned of a failing destination for it),
// then removes its files.
func (k *soak) verify(c *soakCtr, out, errStream soakStats, reasoned bool) {
	want := c.written()
	w := int64(len(want))
	recs, err := readCRILog(c.logPath)
	if err != nil {
		k.errorf("container %s: %v", c.id, err)
	}
	var logged int64
	cursor := 0
	for i, r := range recs {
		if r.stream != "stdout" {
			k.errorf("container %s: record %d on %s, which it never wrote to", c.id, i, r.stream)
			continue
		}
		b := r.content
		if r.tag == "F" {
			b += "\n"
		}
		at := bytes.Index(want[cursor:], []byte(b))
		if at < 0 {
			k.errorf("container %s: log record %d (%.60q…) is not the container's output after byte %d: altered, duplicated or out of order",
				c.id, i, b, cursor)
			break
		}
		cursor += at + len(b)
		logged += int64(len(b))
	}
	if errStream.bytes != 0 || errStream.dropped != 0 || errStream.unread != 0 || errStream.rateLimited != 0 {
		k.errorf("container %s: stderr summary %+v, but it wrote nothing there", c.id, errStream)
	}
	if out.bytes+out.unread != w {
		k.errorf("container %s: wrote %d bytes; gomon read %d and counted %d unread (%d unaccounted)",
			c.id, w, out.bytes, out.unread, w-out.bytes-out.unread)
	}
	missing := w - logged - out.dropped - out.unread - out.rateLimited
	if missing > 0 {
		k.errorf("container %s: wrote %d bytes, %d in the log, %d counted dropped, %d unread, %d rate-limited: %d bytes lost silently",
			c.id, w, logged, out.dropped, out.unread, out.rateLimited, missing)
	}
	if out.dropped > 0 && !reasoned {
		k.errorf("container %s: %d bytes counted dropped, but no warning gave the reason", c.id, out.dropped)
	}
	if logged > out.bytes {
		k.errorf("container %s: log holds %d bytes, more than the %d gomon read", c.id, logged, out.bytes)
	}
	k.mu.Lock()
	k.totals.containers++
	k.totals.written += w
	k.totals.logged += logged
	k.totals.dropped += out.dropped + out.rateLimited
	if out.rateLimited > 0 {
		k.reasons["log rate limit (GOMON_LOG_RATE_LIMIT), containers"]++
	}
	k.totals.unread += out.unread
	if missing < 0 {
		k.totals.overcounted += -missing
	} else {
		k.totals.lost += missing
	}
	k.mu.Unlock()
	_ = os.Remove(c.logPath)
	_ = os.Remove(c.exitPath)
	_ = os.RemoveAll(c.dir)
}

// keepJournal saves the daemon's log for a failed soak in
// $GOMON_SOAK_JOURNAL, default <os.TempDir()>/gomon-soak-<pid>.journal.
func (k *soak) keepJournal() {
	if !k.t.Failed() {
		return
	}
	p := cmp.Or(os.Getenv("GOMON_SOAK_JOURNAL"), filepath.Join(os.TempDir(), fmt.Sprintf("gomon-soak-%d.journal", os.Getpid())))
	msgs := k.j.timed()
	k.mu.Lock()
	msgs = append(msgs, k.events...)
	k.mu.Unlock()
	slices.Sort(msgs)
	if err := os.WriteFile(p, []byte(strings.Join(msgs, "\n")+"\n"), 0o644); err != nil {
		k.errorf("keep the daemon's log: %v", err)
		return
	}
	k.t.Logf("the daemon's log (%d records) is in %s", len(msgs), p)
}

// report prints the soak's table.
func (k *soak) report(elapsed time.Duration, warm, end usage) {
	msgs, droppedRecords, reports, bad := k.j.snapshot()
	for _, m := range msgs {
		if g := dropReason.FindStringSubmatch(m); g != nil {
			k.reasons["log write failed: "+g[1]]++
		}
		if strings.HasPrefix(m, "output stream stopped with output left unread") {
			k.reasons["output left unread at the drain limit"]++
		}
		if strings.HasPrefix(m, "tracing error") {
			k.reasons["span export failed (\"tracing error\", rate-limited)"]++
		}
	}
	if len(bad) != 0 {
		k.errorf("%d journal datagrams did not parse, e.g. %q", len(bad), bad[0])
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "soak of %v (%d slots, hostile collector %v)\n\n", elapsed.Round(time.Second), soakSlots, k.hostile)
	b.WriteString("| fault injected / work done | count |\n|---|---|\n")
	kinds := make([]string, 0, len(k.counts))
	for kind := range k.counts {
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		fmt.Fprintf(&b, "| %s | %d |\n", kind, k.counts[kind])
	}
	fmt.Fprintf(&b, "| spans batches taken by the collector (bytes) | %d (%d) |\n", k.col.posts.Load(), k.col.bytes.Load())
	fmt.Fprintf(&b, "| daemon log records received / dropped and reported by gomon (reports) | %d / %d (%d) |\n", len(msgs), droppedRecords, reports)
	tot := k.totals
	b.WriteString("\n| containers verified | bytes written | in the CRI log | counted dropped | counted unread | silently lost | counted dropped but in the log | unverifiable (summary dropped) |\n|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %d | %d | %d | %d | %d | %d | %d |\n", tot.containers, tot.written, tot.logged, tot.dropped, tot.unread,
		tot.lost, tot.overcounted, tot.unverified)
	b.WriteString("\n| drop reason reported by gomon | times |\n|---|---|\n")
	for _, r := range slices.Sorted(maps.Keys(k.reasons)) {
		fmt.Fprintf(&b, "| %s | %d |\n", r, k.reasons[r])
	}
	b.WriteString("\n| daemon | fds | threads | VmRSS KiB |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| after warm-up | %d | %d | %d |\n| at the end | %d | %d | %d |\n| bound on growth | +%d | +%d | +%d |\n",
		warm.fds, warm.threads, warm.rss>>10, end.fds, end.threads, end.rss>>10, soakFDSlack, soakThreadSlack, soakRSSSlack>>10)
	k.t.Logf("\n%s", b.String())
}
