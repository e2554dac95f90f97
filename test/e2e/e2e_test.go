package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The container of every lifecycle writes this on stdout and stderr, ends with a partial
// line, then waits; SIGTERM makes it exit 42.
const (
	writerScript = `trap 'exit 42' TERM
echo out-1
echo err-1 >&2
echo
printf 'out-2\twith tab and \303\274n\303\257code\n'
echo err-2 >&2
head -c 10000 /dev/zero | tr '\0' x; echo
printf 'err-partial' >&2
printf 'out-partial'
sleep 3600 &
wait $!`
	wantStdout = "out-1\n\nout-2\twith tab and \u00fcn\u00efcode\n" + "%s\nout-partial"
	wantStderr = "err-1\nerr-2\nerr-partial"

	tickerScript = `i=0; while [ $i -lt 20 ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done; exit 7`
)

// podKind is how a lifecycle's pod is networked.
type podKind struct {
	name    string
	network int // CRI NamespaceMode: 0 POD (own netns), 2 NODE (host network)
}

// TestCRIO drives gomon through CRI-O with crictl, compares each step's time with CRI-O's
// own conmon, and checks that crictl → crio → gomon spans reach Jaeger connected.
func TestCRIO(t *testing.T) {
	s := newSuite(t)
	rounds := 1
	if v := os.Getenv("GOMON_E2E_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("GOMON_E2E_ROUNDS=%q: want a positive integer", v)
		}
		rounds = n
	}
	kinds := []podKind{{name: "host", network: 2}, {name: "netns", network: 0}}
	for round := 1; round <= rounds; round++ {
		// Handlers alternate within each round so drift on a shared machine hits both.
		for _, k := range kinds {
			for _, handler := range []string{handlerGomon, handlerOCI} {
				name := fmt.Sprintf("%s/%s/round-%d", handler, k.name, round)
				t.Run(name, func(t *testing.T) { s.lifecycle(t, handler, k) })
			}
		}
	}
	t.Run("gomon/rate-limit", s.rateLimit)
	t.Run("traces", s.checkTraces)

	table := fmt.Sprintf("median of %d round(s) per cell, wall time of each crictl call\n%s", rounds, s.times.table())
	path := filepath.Join(s.dir, "timings.txt")
	if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
		t.Errorf("write timings: %v", err)
	}
	t.Logf("step wall times (crictl → CRI-O → monitor), written to %s:\n%s", path, table)
	fmt.Printf("\n== gomon e2e: step wall times (%s) ==\n%s\n", path, table)
}

// lifecycle runs every crictl step against one pod of the given handler and kind.
func (s *suite) lifecycle(t *testing.T, handler string, k podKind) {
	col := handler + "/" + k.name
	name := strings.ReplaceAll(col, "/", "-")
	podJSON := s.writeJSON(t, name+"-pod.json", map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "gomon-e2e", "uid": name + "-uid", "attempt": 0},
		"hostname": name, "log_directory": filepath.Join(s.dir, "podlogs", name),
		"linux": map[string]any{
			"cgroup_parent": s.cgroupParent,
			// pid CONTAINER (1), Kubernetes' default: CRI-O then drops the infra container.
			"security_context": map[string]any{"namespace_options": map[string]any{"network": k.network, "pid": 1}},
		},
	})
	ctrJSON := func(ctrName, script string) string {
		return s.writeJSON(t, name+"-"+ctrName+".json", map[string]any{
			"metadata": map[string]any{"name": ctrName},
			// The labels the kubelet gives every container, which CRI-O
			// copies into its bundle: gomon's metrics are labelled with them.
			"labels": map[string]string{
				"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "gomon-e2e",
				"io.kubernetes.pod.uid": name + "-uid", "io.kubernetes.container.name": ctrName,
			},
			"image":    map[string]any{"image": image},
			"command":  []string{"/bin/sh", "-c", script},
			"log_path": ctrName + ".log",
			"linux": map[string]any{"security_context": map[string]any{
				"namespace_options": map[string]any{"network": k.network, "pid": 1},
			}},
		})
	}
	writer, ticker := ctrJSON("writer", writerScript), ctrJSON("ticker", tickerScript)

	runp := []string{"runp"}
	if handler != handlerGomon {
		runp = append(runp, "--runtime", handler)
	}
	pod := s.crictl(t, col, "runp", append(runp, podJSON)...)
	monitor := s.checkMonitor(t, handler, pod)

	if handler == handlerGomon {
		s.gomonCreates += 2 // writer and ticker
		for _, c := range []string{"writer", "ticker"} {
			s.gomonContainers = append(s.gomonContainers, podIdentity{pod: name, namespace: "gomon-e2e", uid: name + "-uid", container: c})
		}
	}
	ctr := s.crictl(t, col, "create", "create", "--no-pull", pod, writer, podJSON)
	s.crictl(t, col, "start", "start", ctr)
	if ps := s.crictl(t, col, "ps", "ps", "-q", "--pod", pod, "--state", "running"); ps != ctr {
		t.Errorf("ps: want %s running, got %q", ctr, ps)
	}
	s.checkParent(t, handler, ctr, monitor)

	// Wait (untimed) until the partial lines arrived, then time one `crictl logs`.
	wantOut := fmt.Sprintf(wantStdout, strings.Repeat("x", 10000))
	var out, errOut string
	err := poll(20*time.Second, 100*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		out, errOut, err = s.crictlRaw(ctx, false, "logs", ctr)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(out, "out-partial") || !strings.HasSuffix(errOut, "err-partial") {
			return errors.New("partial lines not logged yet")
		}
		return nil
	})
	if err != nil {
		t.Errorf("logs: %v\nstdout: %q\nstderr: %q", err, out, errOut)
	}
	out, errOut, err = s.crictlStep(t, col, "logs", "logs", ctr)
	switch {
	case err != nil:
		t.Errorf("logs: %v", err)
	case out != wantOut || errOut != wantStderr:
		t.Errorf("logs differ from what the container wrote:\nstdout: got %q\n        want %q\nstderr: got %q\n        want %q",
			shorten(out), shorten(wantOut), errOut, wantStderr)
	}

	var upgradeTrace string
	if monitor > 0 {
		// Upgrade the pod's gomon in place (docs/upgrade.md); every step below then runs
		// against the new process: same PID, same containers.
		upgradeTrace = s.upgradeInPlace(t, col, monitor)
	}

	// crictl prints ExecSync's stdout, then its stderr, each with a newline, on its stdout.
	out, _, err = s.crictlStep(t, col, "exec -s", "exec", "-s", "--timeout", "20", ctr,
		"/bin/sh", "-c", "echo sync-out; echo sync-err >&2")
	switch {
	case err != nil:
		t.Errorf("exec -s: %v (ExecSyncContainer: the monitor's exec-sync support)", err)
	case out != "sync-out\n\nsync-err\n\n":
		t.Errorf("exec -s: stdout %q, want %q", out, "sync-out\n\nsync-err\n\n")
	}
	// A non-zero exit code makes crictl fail, naming the code.
	_, errOut, err = s.crictlStep(t, col, "exec -s (exit 3)", "exec", "-s", "--timeout", "20", ctr, "/bin/sh", "-c", "exit 3")
	if err == nil || !strings.Contains(errOut, "exited with 3") {
		t.Errorf("exec -s exit 3: want crictl to report \"exited with 3\", got %v", err)
	}

	out, _, err = s.crictlStep(t, col, "exec", "exec", ctr, "/bin/sh", "-c", "echo exec-out")
	if err != nil || out != "exec-out\n" {
		t.Errorf("exec: stdout %q, error %v", out, err)
	}
	if handler == handlerGomon {
		s.checkMetrics(t, name, ctr, len(wantOut), len(wantStderr))
	}

	// logs -f and attach while the ticker writes; both end when the ticker exits (code 7).
	tick := s.crictl(t, col, "create (ticker)", "create", "--no-pull", pod, ticker, podJSON)
	s.crictl(t, col, "start (ticker)", "start", tick)
	attached := s.attachTicks(t, col, tick)
	s.followLogs(t, col, tick)
	attached()
	s.waitExited(t, tick)
	s.checkExitCode(t, col, "inspect (exit 7)", tick, 7)

	s.crictl(t, col, "stop", "stop", "--timeout", "10", ctr)
	s.checkExitCode(t, col, "inspect (exit 42)", ctr, 42)
	s.crictl(t, col, "rm", "rm", ctr)
	s.crictl(t, col, "rm (ticker)", "rm", tick)
	s.crictl(t, col, "stopp", "stopp", pod)
	s.crictl(t, col, "rmp", "rmp", pod)

	if monitor > 0 {
		err := poll(15*time.Second, 50*time.Millisecond, func() error {
			if strings.Contains(cmdline(monitor), pod) {
				return fmt.Errorf("gomon %d still running", monitor)
			}
			return nil
		})
		if err != nil {
			t.Errorf("after rmp: %v (CRI-O sends SIGINT when the infra container is removed)", err)
		}
		s.checkTextfileGone(t, name)
		s.checkUpgradeSpan(t, upgradeTrace, monitor)
	}
}

// upgradeInPlace runs `gomon upgrade --all` and checks that the same PID now serves, as a
// new process; it returns the trace the upgrade joined. --all only when every gomon daemon it
// would upgrade (`--all --list`) is this suite's, as in CI; on a shared machine with other
// daemons it upgrades this pod's alone (--runtime-dir), so the test touches no one else's.
// The command runs with TRACEPARENT set and its own tracing on, into the suite's Jaeger:
// each daemon's `upgrade` span is a child of its `gomon_upgrade` span (checkUpgradeSpan).
func (s *suite) upgradeInPlace(t *testing.T, col string, monitor int) (traceID string) {
	t.Helper()
	var dir string
	args := strings.Fields(cmdline(monitor))
	for i, a := range args {
		if a == "--runtime-dir" && i+1 < len(args) {
			dir = args[i+1]
		}
	}
	if dir == "" {
		t.Fatalf("gomon %d: no --runtime-dir in %q", monitor, cmdline(monitor))
	}
	list, err := exec.Command(s.gomon, "upgrade", "--all", "--list").Output()
	if err != nil {
		t.Fatalf("gomon upgrade --all --list: %v", err)
	}
	upgrade := []string{"upgrade", "--all"}
	for _, d := range strings.Fields(string(list)) {
		if !strings.Contains(d, s.dir) {
			t.Logf("gomon upgrade --runtime-dir, not --all: the gomon daemon of %s is not this suite's", d)
			upgrade = []string{"upgrade", "--runtime-dir", dir}
			break
		}
	}
	var ids [24]byte
	if _, err := rand.Read(ids[:]); err != nil {
		t.Fatal(err)
	}
	traceID = hex.EncodeToString(ids[:16])
	cmd := exec.Command(s.gomon, append([]string{"--enable-tracing", "--tracing-endpoint", s.otlpAddr}, upgrade...)...)
	cmd.Env = append(os.Environ(), "TRACEPARENT=00-"+traceID+"-"+hex.EncodeToString(ids[16:])+"-01")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	s.times.record("gomon upgrade", col, time.Since(start), stepStatus(err))
	if err != nil || !strings.Contains(string(out), "upgraded") {
		s.dumpLogs(t)
		t.Fatalf("gomon %s: %v: %s", strings.Join(upgrade, " "), err, out)
	}
	t.Logf("gomon %s: %s", strings.Join(upgrade, " "), strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), fmt.Sprintf("%s: pid %d: upgraded", dir, monitor)) {
		t.Errorf("no upgrade of the pod's gomon %d at %s in the answer: %s", monitor, dir, out)
	}
	return traceID
}

// checkUpgradeSpan checks that Jaeger holds, in the trace the upgrade joined, the command's
// gomon_upgrade span and, as its child, the `upgrade` span of the pod's daemon (its pid).
func (s *suite) checkUpgradeSpan(t *testing.T, traceID string, monitor int) {
	t.Helper()
	err := poll(30*time.Second, 500*time.Millisecond, func() error {
		var body struct {
			Data []jaegerTrace `json:"data"`
		}
		if err := s.jaegerGet("/api/traces/"+traceID, &body); err != nil {
			return err
		}
		var client *span
		var ups []span
		for _, tr := range body.Data {
			for _, sp := range tr.spans() {
				switch {
				case sp.service != serviceGomon:
				case sp.name == "gomon_upgrade":
					client = &sp
				case sp.name == "upgrade":
					ups = append(ups, sp)
				}
			}
		}
		if client == nil {
			return fmt.Errorf("trace %s: no gomon_upgrade span", traceID)
		}
		for _, up := range ups {
			if pid, _ := tagInt(up, "pid"); pid == monitor && up.parent == client.id {
				return nil
			}
		}
		return fmt.Errorf("trace %s: no upgrade span of gomon %d under gomon_upgrade %s (upgrade spans: %v)", traceID, monitor, client.id, ups)
	})
	if err != nil {
		t.Errorf("Jaeger: %v", err)
	}
}

// checkMonitor proves who monitors pod: for the gomon handler a process whose executable is
// gomon and whose --runtime-dir belongs to the pod, in CRI-O's crio-conmon-<pod> cgroup (CRI-O
// 1.34; 1.36 leaves it in CRI-O's own cgroups). It
// returns the gomon PID (0 for the conmon handler).
func (s *suite) checkMonitor(t *testing.T, handler, pod string) int {
	t.Helper()
	pids := s.gomonsFor(pod)
	if handler != handlerGomon {
		// CRI-O gives the spoofed infra container of a pod without a shared PID namespace
		// the default runtime, which is gomon's pod handler: so it starts a gomon for this
		// pod too, while its containers run under conmon (checked by checkParent).
		t.Logf("handler %s: gomon processes for the pod's spoofed infra container: %v", handler, pids)
		return 0
	}
	if len(pids) != 1 {
		s.dumpLogs(t)
		t.Fatalf("want exactly one gomon process for pod %s, found %v", pod, pids)
	}
	pid := pids[0]
	t.Logf("pod %s monitored by gomon pid %d: %s", pod[:12], pid, cmdline(pid))
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	switch {
	case err != nil:
		t.Errorf("read gomon's cgroup: %v", err)
	case s.crioMinor >= 36:
		// CRI-O 1.36's cgroupfs manager no longer moves the monitor into
		// crio-conmon-<pod> (it only applies workload CPU settings there), so the
		// monitor stays in the cgroup of CRI-O that started it.
		own, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", s.crio.Process.Pid))
		if err != nil {
			t.Errorf("read crio's cgroup: %v", err)
		} else if string(cg) != string(own) {
			t.Errorf("CRI-O 1.%d: gomon %d is not in CRI-O's own cgroups:\n%s\ncrio:\n%s", s.crioMinor, pid, cg, own)
		}
	case !strings.Contains(string(cg), "crio-conmon-"+pod):
		t.Errorf("gomon %d is not in CRI-O's crio-conmon-%s cgroup:\n%s", pid, pod, cg)
	}
	return pid
}

// gomonsFor returns the PIDs of gomon processes whose --runtime-dir names pod. The executable
// is compared by path, so a concurrent rebuild of bin/gomon (the link then ends in
// " (deleted)") does not hide a running monitor.
func (s *suite) gomonsFor(pod string) []int {
	var pids []int
	for _, pid := range processesUnder(s.dir) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != s.gomon {
			continue
		}
		args := strings.Fields(cmdline(pid))
		for i, a := range args {
			if a == "--runtime-dir" && i+1 < len(args) && strings.Contains(args[i+1], pod) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// checkParent checks that the container's init process is a child of its monitor: gomon
// (a subreaper) for the pod handler, conmon for the OCI handler.
func (s *suite) checkParent(t *testing.T, handler, ctr string, monitor int) {
	t.Helper()
	var insp struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	s.inspectJSON(t, &insp, "inspect", ctr)
	if insp.Info.Pid <= 0 {
		t.Errorf("inspect %s: no pid in info", ctr)
		return
	}
	ppid := parentOf(insp.Info.Pid)
	switch {
	case handler == handlerGomon && ppid != monitor:
		t.Errorf("container pid %d: parent %d (%s), want gomon %d", insp.Info.Pid, ppid, cmdline(ppid), monitor)
	case handler != handlerGomon && !strings.Contains(cmdline(ppid), "conmon"):
		t.Errorf("container pid %d: parent %d (%s), want conmon", insp.Info.Pid, ppid, cmdline(ppid))
	}
}

// parentOf returns the PPid of pid from /proc (0 when unknown).
func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// followLogs runs `crictl logs -f` while the ticker writes and checks every tick arrives in
// order and crictl ends on its own when the container exits.
func (s *suite) followLogs(t *testing.T, col, ctr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, s.crictlBin, append(s.crictlArgs(true), "logs", "-f", ctr)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("logs -f: %v", err)
	}
	var got []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	err = cmd.Wait()
	s.times.record("logs -f (2 s writer)", col, time.Since(start), stepStatus(err))
	if err != nil {
		t.Errorf("logs -f: %v", err)
	}
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("tick-%d", i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("logs -f: got %q, want tick-0..tick-19", got)
	}
}

// attachTicks starts `crictl attach` on the running ticker (CRI-O's streaming server, then
// the monitor's attach socket: AttachContainer) and returns the wait for it: it must end
// when the ticker exits, having printed the ticks from some tick-N on, in order, through
// tick-19.
func (s *suite) attachTicks(t *testing.T, col, ctr string) (wait func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	start := time.Now()
	cmd := exec.CommandContext(ctx, s.crictlBin, append(s.crictlArgs(true), "attach", ctr)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("attach: %v", err)
	}
	return func() {
		t.Helper()
		defer cancel()
		err := cmd.Wait()
		s.times.record("attach (to the 2 s writer)", col, time.Since(start), stepStatus(err))
		got := strings.Fields(out.String())
		first := -1
		if len(got) > 0 {
			_, _ = fmt.Sscanf(got[0], "tick-%d", &first)
		}
		ok := err == nil && first >= 0 && first+len(got) == 20
		for i, g := range got {
			ok = ok && g == fmt.Sprintf("tick-%d", first+i)
		}
		if !ok {
			t.Errorf("attach: %v; got %q (stderr %q), want tick-N..tick-19 for some N", err, got, errOut.String())
		}
	}
}

// waitExited polls (untimed) until ctr is CONTAINER_EXITED.
func (s *suite) waitExited(t *testing.T, ctr string) {
	t.Helper()
	err := poll(30*time.Second, 100*time.Millisecond, func() error {
		var insp struct {
			Status struct {
				State string `json:"state"`
			} `json:"status"`
		}
		s.inspectJSON(t, &insp, "inspect", ctr)
		if insp.Status.State != "CONTAINER_EXITED" {
			return fmt.Errorf("state %s", insp.Status.State)
		}
		return nil
	})
	if err != nil {
		t.Errorf("container %s did not exit: %v", ctr, err)
	}
}

// checkExitCode times `crictl inspect` and checks the recorded exit code.
func (s *suite) checkExitCode(t *testing.T, col, step, ctr string, want int) {
	t.Helper()
	out := s.crictl(t, col, step, "inspect", "-o", "json", ctr)
	var insp struct {
		Status struct {
			State    string `json:"state"`
			ExitCode int    `json:"exitCode"`
		} `json:"status"`
	}
	if err := decodeJSON(out, &insp); err != nil {
		t.Errorf("%s: %v", step, err)
		return
	}
	if insp.Status.State != "CONTAINER_EXITED" || insp.Status.ExitCode != want {
		t.Errorf("%s: state %s exit code %d, want CONTAINER_EXITED %d", step, insp.Status.State, insp.Status.ExitCode, want)
	}
}

// shorten elides the middle of long strings in failure messages.
func shorten(s string) string {
	if len(s) <= 300 {
		return s
	}
	return s[:150] + fmt.Sprintf("[...%d bytes...]", len(s)-300) + s[len(s)-150:]
}
