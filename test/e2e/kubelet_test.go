package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The static pod of the kubelet e2e. exiter writes to stdout and stderr and exits 3 after
// about four seconds (or at once on SIGTERM), so restartPolicy Always restarts it through gomon; sleeper keeps running
// and is probed with an exec liveness probe every two seconds (ExecSync through gomon).
const (
	kubeletNode    = "gomon-e2e-node"
	kubeletPod     = "gomon-kubelet"
	kubeletPodNS   = "default"
	exiterName     = "exiter"
	sleeperName    = "sleeper"
	exiterExitCode = 3
	exiterTicks    = 4
	exiterScript   = `trap 'echo exiter-term; exit 3' TERM; echo exiter-start; i=0; while [ $i -lt 4 ]; do echo exiter-tick-$i; i=$((i+1)); sleep 1; done; echo exiter-bye >&2; exit 3`
	sleeperScript  = `trap 'exit 0' TERM; echo sleeper-up; while true; do sleep 1; done`
)

// staticPod is the manifest the kubelet reads from its staticPodPath.
const staticPod = `apiVersion: v1
kind: Pod
metadata:
  name: ` + kubeletPod + `
  namespace: ` + kubeletPodNS + `
spec:
  hostNetwork: true
  dnsPolicy: Default
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: ` + exiterName + `
    image: ` + image + `
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", %q]
  - name: ` + sleeperName + `
    image: ` + image + `
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", %q]
    livenessProbe:
      exec:
        command: ["/bin/sh", "-c", "echo alive"]
      initialDelaySeconds: 1
      periodSeconds: 2
      timeoutSeconds: 10
`

// kubeletConfig is the standalone kubelet's configuration (no API server: no --kubeconfig).
// protectKernelDefaults makes it only read the kernel tunables it cares about (it would write
// them otherwise); makeIPTablesUtilChains: false keeps it off the host's iptables; failSwapOn
// is off so a host with swap still runs it; oomScoreAdj 0 because this host lacks
// CAP_SYS_RESOURCE for the default -999. The file source is polled every second so removing
// the manifest is seen at once.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: %[1]q
fileCheckFrequency: 1s
address: 127.0.0.1
port: %[2]d
readOnlyPort: %[3]d
healthzBindAddress: 127.0.0.1
healthzPort: %[4]d
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupRoot: %[5]q
containerRuntimeEndpoint: unix://%[6]s
imageServiceEndpoint: unix://%[6]s
podLogsDir: %[7]q
protectKernelDefaults: true
makeIPTablesUtilChains: false
failSwapOn: false
oomScoreAdj: 0
tracing:
  endpoint: %[8]s
  samplingRatePerMillion: 1000000
`

// kernelTunables are the sysctls the kubelet checks with protectKernelDefaults, with the values
// it expects. Its mount namespace sees stand-in files holding these values, so the host's
// own settings neither fail the start nor get rewritten.
var kernelTunables = []struct{ path, value string }{
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// kubeletLauncher runs in the kubelet's own mount namespace (unshare -m, private propagation)
// and makes the host paths the kubelet writes whatever --root-dir says land in the test's
// directory: overlays on /var/log (/var/log/containers) and /var/lib
// (/var/lib/kubelet/device-plugins, /var/lib/kubelet/pki), the stand-in sysctl files, and an
// empty /sys/kernel/mm/hugepages (the kubelet sends a hugetlb limit per page size it sees,
// and runc here has no cgroup v1 hugetlb controller to apply it). Then it execs the kubelet.
const kubeletLauncher = `#!/bin/sh
set -eu
ns=%[1]q
for d in varlog varlib; do mkdir -p "$ns/$d/upper" "$ns/$d/work"; done
mount -t overlay overlay -o "lowerdir=/var/log,upperdir=$ns/varlog/upper,workdir=$ns/varlog/work" /var/log
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$ns/varlib/upper,workdir=$ns/varlib/work" /var/lib
for f in "$ns"/sysctl/*; do
	mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
done
mount -t tmpfs -o size=64k,mode=0755 gomon-e2e-hugepages /sys/kernel/mm/hugepages
exec "$@"
`

// kubeletEnv is one standalone kubelet on the suite's CRI-O.
type kubeletEnv struct {
	s                                 *suite
	bin                               string
	root, manifests, podLogs, nsDir   string
	log                               string
	port, readOnlyPort, healthzPort   int
	cmd                               *exec.Cmd
	hostVarLibKubelet, hostVarLogCtrs bool // existed on the host before the run
}

// TestKubelet runs a static pod through a real standalone kubelet on CRI-O with gomon as the
// default pod monitor, and checks the kubelet's view, the logs, the cleanup and the trace
// kubelet → crio → gomon in Jaeger.
func TestKubelet(t *testing.T) {
	kubeletBin := toolFromEnv(t, "KUBELET", "")
	for _, c := range []string{"unshare", "mount"} {
		if _, err := exec.LookPath(c); err != nil {
			skipEnv(t, "%s is not installed: %v", c, err)
		}
	}
	s := newSuite(t)
	k := &kubeletEnv{
		s: s, bin: kubeletBin,
		root:      filepath.Join(s.dir, "kubelet"),
		manifests: filepath.Join(s.dir, "manifests"),
		podLogs:   filepath.Join(s.dir, "kubelet-pod-logs"),
		nsDir:     filepath.Join(s.dir, "kubelet-ns"),
		log:       filepath.Join(s.dir, "kubelet.log"),
	}
	k.hostVarLibKubelet = exists("/var/lib/kubelet")
	k.hostVarLogCtrs = exists("/var/log/containers")
	// The kubelet stops before the suite's teardown stops CRI-O (cleanups run last-in first-out).
	t.Cleanup(func() { k.stop(t) })
	mountsBefore := mountsUnder(s.dir)

	step := time.Now()
	if err := k.start(t); err != nil {
		k.dumpLog(t)
		t.Fatalf("start kubelet: %v", err)
	}
	t.Logf("kubelet up in %v (pid %d, root %s)", time.Since(step).Round(time.Millisecond), k.cmd.Process.Pid, k.root)

	// The pod: written atomically into the static pod directory.
	step = time.Now()
	tmp := filepath.Join(s.dir, "static-pod.yaml")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, staticPod, exiterScript, sleeperScript), 0o644); err != nil {
		t.Fatalf("write manifest: %v", err)
	}
	manifest := filepath.Join(k.manifests, kubeletPod+".yaml")
	if err := os.Rename(tmp, manifest); err != nil {
		t.Fatalf("place manifest: %v", err)
	}

	// Wait until exiter's first run exited 3, the kubelet restarted it through gomon, and the
	// second run is two ticks into its output. The manifest is then deleted: the kubelet stops
	// the containers with SIGTERM, on which exiter also exits 3, and about a second after the
	// last container stopped it SIGKILLs what is left in the pod's cgroup, gomon included. So
	// exiter's last run ends with the pod, as close to gomon's death as a pod deletion allows.
	var last podStatus
	err := poll(3*time.Minute, 200*time.Millisecond, func() error {
		st, err := k.podStatus()
		if err != nil {
			return err
		}
		last = st
		ex, ok := st.container(exiterName)
		if !ok {
			return fmt.Errorf("no %s status yet (phase %q)", exiterName, st.Phase)
		}
		if ex.RestartCount < 1 || ex.State.Running == nil || ex.LastState.Terminated == nil {
			return fmt.Errorf("%s: restartCount %d, state %s, last state %s", exiterName, ex.RestartCount, ex.State, ex.LastState)
		}
		if out := k.logOf(t, ex.runningID()); !strings.Contains(out, "exiter-tick-1") {
			return fmt.Errorf("%s's second run has not written exiter-tick-1 yet: %q", exiterName, out)
		}
		return nil
	})
	if err != nil {
		k.dumpLog(t)
		t.Fatalf("waiting for %s's second run: %v", exiterName, err)
	}
	t.Logf("exiter exited 3, was restarted and is writing, %v after the manifest was written", time.Since(step).Round(time.Millisecond))

	// The kubelet's own view, from its read-only /pods API.
	ex, _ := last.container(exiterName)
	sl, okSleeper := last.container(sleeperName)
	if got := ex.LastState.Terminated.ExitCode; got != exiterExitCode {
		t.Errorf("kubelet /pods: %s last exit code %d, want %d", exiterName, got, exiterExitCode)
	}
	if !okSleeper || sl.State.Running == nil {
		t.Errorf("kubelet /pods: %s is not running: %+v", sleeperName, sl)
	}
	if sl.RestartCount != 0 {
		t.Errorf("kubelet /pods: %s restarted %d times (its liveness probe failed?)", sleeperName, sl.RestartCount)
	}
	firstExiter, lastExiter := ex.LastState.terminatedID(), ex.runningID()
	sleeperID := sl.runningID()
	t.Logf("kubelet /pods: pod uid %s, %s restartCount %d, last exit %d (%s), running again (%s); %s running (%s)",
		last.UID, exiterName, ex.RestartCount, ex.LastState.Terminated.ExitCode, short(firstExiter), short(lastExiter),
		sleeperName, short(sleeperID))

	// The pod's sandbox and monitor, as CRI-O sees them.
	pods := strings.Fields(s.crictlQuiet(t, "pods", "-q"))
	if len(pods) != 1 {
		t.Fatalf("crictl pods: want the static pod's sandbox only, got %v", pods)
	}
	sandbox := pods[0]
	monitors := s.gomonsFor(sandbox)
	if len(monitors) != 1 {
		s.dumpLogs(t)
		t.Fatalf("want one gomon for sandbox %s, found %v", short(sandbox), monitors)
	}
	t.Logf("sandbox %s monitored by gomon pid %d", short(sandbox), monitors[0])

	// The first run's log, where the kubelet told CRI-O to write it.
	k.checkExiterLog(t, last, firstExiter, ex.RestartCount-1)

	// Delete the pod while exiter's second run writes: the kubelet stops both containers and,
	// about a second after the last one stopped, kills every process left in the pod's cgroup,
	// gomon included.
	if err := os.Remove(manifest); err != nil {
		t.Fatalf("remove manifest: %v", err)
	}
	removed := time.Now()
	var extraRuns []string
	err = poll(3*time.Minute, 500*time.Millisecond, func() error {
		for _, id := range strings.Fields(s.crictlQuiet(t, "ps", "-a", "-q", "--name", "^"+exiterName+"$")) {
			if id != firstExiter && id != lastExiter && !slices.Contains(extraRuns, id) {
				extraRuns = append(extraRuns, id) // a run the status read before the removal did not show
			}
		}
		if p := strings.Fields(s.crictlQuiet(t, "pods", "-q")); len(p) > 0 {
			return fmt.Errorf("sandboxes still present: %v", p)
		}
		return nil
	})
	if err != nil {
		k.dumpLog(t)
		t.Fatalf("pod removal: %v", err)
	}
	t.Logf("pod removed by the kubelet %v after its manifest was deleted", time.Since(removed).Round(time.Millisecond))
	if len(extraRuns) > 0 {
		t.Errorf("exiter runs other than the two the test saw: %v (a restart after the deletion?)", extraRuns)
	}

	// Nothing left behind: no gomon, no runc container, no mount, no cgroup, no pod directory.
	err = poll(60*time.Second, time.Second, func() error {
		return k.leftovers(last.UID, sandbox, mountsBefore)
	})
	if err != nil {
		t.Errorf("after removal: %v", err)
	} else {
		t.Logf("nothing left %v after the manifest was deleted", time.Since(removed).Round(time.Millisecond))
	}

	// Traces.
	want := kubeletWant{exiterRuns: []string{firstExiter, lastExiter}, lastExiter: lastExiter, sleeper: sleeperID}
	k.checkTraces(t, want)
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// short shortens a container or sandbox ID for the log.
func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// crictlQuiet runs one untraced crictl call and returns its trimmed stdout, failing the test on error.
func (s *suite) crictlQuiet(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, err := s.crictlRaw(ctx, false, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return strings.TrimSpace(out)
}

// start writes the kubelet's files, pre-creates its cgroup root and starts it in its own mount
// namespace; it returns once the kubelet's healthz answers.
func (k *kubeletEnv) start(t *testing.T) error {
	t.Helper()
	s := k.s
	for _, d := range []string{k.root, k.manifests, k.podLogs, filepath.Join(k.nsDir, "sysctl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	for _, kt := range kernelTunables {
		name := strings.ReplaceAll(kt.path, "/", ".")
		if err := os.WriteFile(filepath.Join(k.nsDir, "sysctl", name), []byte(kt.value+"\n"), 0o644); err != nil {
			return fmt.Errorf("write stand-in for %s: %w", kt.path, err)
		}
	}
	if err := createCgroupRoot(s.cgroupParent); err != nil {
		return err
	}
	ports, err := freeLoopbackPorts(3)
	if err != nil {
		return err
	}
	k.port, k.readOnlyPort, k.healthzPort = ports[0], ports[1], ports[2]
	conf := filepath.Join(s.dir, "kubelet-config.yaml")
	content := fmt.Sprintf(kubeletConfig, k.manifests, k.port, k.readOnlyPort, k.healthzPort, s.cgroupParent,
		s.crioSock, k.podLogs, s.otlpAddr)
	if err := os.WriteFile(conf, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	launcher := filepath.Join(s.dir, "kubelet-launcher")
	if err := os.WriteFile(launcher, fmt.Appendf(nil, kubeletLauncher, k.nsDir), 0o755); err != nil {
		return fmt.Errorf("write kubelet launcher: %w", err)
	}
	cmd, err := startProcess(nil, k.log, "unshare", "--mount", "--propagation", "private", "--",
		launcher, k.bin, "--config", conf, "--root-dir", k.root, "--cert-dir", filepath.Join(k.root, "pki"),
		"--hostname-override", kubeletNode, "--v", "2")
	if err != nil {
		return err
	}
	k.cmd = cmd
	client := &http.Client{Timeout: 2 * time.Second}
	return poll(3*time.Minute, 250*time.Millisecond, func() error {
		if exited(cmd) {
			return errors.New("kubelet exited")
		}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", k.healthzPort))
		if err != nil {
			return fmt.Errorf("healthz: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
}

// createCgroupRoot creates the kubelet's cgroupRoot in every cgroup v1 hierarchy (the kubelet
// refuses to start without it), copying the parent's cpus and mems in the cpuset hierarchy
// so tasks can join it; on a unified (v2) host it creates the one directory. The suite's
// teardown removes it with everything below.
func createCgroupRoot(root string) error {
	hier, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return fmt.Errorf("list cgroup hierarchies: %w", err)
	}
	if exists("/sys/fs/cgroup/cgroup.controllers") {
		hier = []string{"/sys/fs/cgroup"}
	}
	for _, h := range hier {
		if fi, err := os.Lstat(h); err != nil || !fi.IsDir() {
			continue // symlinks such as cpu,cpuacct -> cpu name a hierarchy twice
		}
		d := filepath.Join(h, root)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
				return fmt.Errorf("set %s of %s: %w", f, d, err)
			}
		}
	}
	return nil
}

// stop stops the kubelet and checks that its mount namespace kept the host untouched.
func (k *kubeletEnv) stop(t *testing.T) {
	t.Helper()
	if k.cmd == nil {
		return
	}
	if t.Failed() {
		k.dumpLog(t)
	}
	start := time.Now()
	stopProcess(k.cmd, 20*time.Second)
	t.Logf("teardown: kubelet stopped in %v", time.Since(start).Round(time.Millisecond))
	// What the kubelet wrote to the host paths it does not take from --root-dir went into
	// the overlays' upper directories.
	for _, d := range []string{"varlog", "varlib"} {
		var wrote []string
		upper := filepath.Join(k.nsDir, d, "upper")
		_ = filepath.WalkDir(upper, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && p != upper {
				wrote = append(wrote, strings.TrimPrefix(p, upper))
			}
			return nil
		})
		t.Logf("kubelet wrote below /%s (kept in its overlay): %v", strings.Replace(d, "var", "var/", 1), wrote)
	}
	if !k.hostVarLibKubelet && exists("/var/lib/kubelet") {
		t.Errorf("the kubelet created /var/lib/kubelet on the host")
	}
	if !k.hostVarLogCtrs && exists("/var/log/containers") {
		t.Errorf("the kubelet created /var/log/containers on the host")
	}
}

// dumpLog prints the tail of the kubelet's log once.
func (k *kubeletEnv) dumpLog(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(k.log)
	if err != nil {
		t.Logf("--- %s: %v", k.log, err)
		return
	}
	const max = 30000
	if len(b) > max {
		b = append([]byte("[...]\n"), b[len(b)-max:]...)
	}
	t.Logf("--- %s (tail) ---\n%s\n--- end of kubelet.log ---", k.log, b)
	k.log = k.log + " (dumped above)"
}

// podStatus is the part of a v1.Pod the test reads from the kubelet's /pods.
type podStatus struct {
	UID               string            `json:"-"`
	Phase             string            `json:"phase"`
	ContainerStatuses []containerStatus `json:"containerStatuses"`
}

type containerStatus struct {
	Name         string         `json:"name"`
	RestartCount int            `json:"restartCount"`
	ContainerID  string         `json:"containerID"`
	State        containerState `json:"state"`
	LastState    containerState `json:"lastState"`
}

type containerState struct {
	Waiting *struct {
		Reason string `json:"reason"`
	} `json:"waiting"`
	Running *struct {
		StartedAt string `json:"startedAt"`
	} `json:"running"`
	Terminated *struct {
		ExitCode    int    `json:"exitCode"`
		Reason      string `json:"reason"`
		ContainerID string `json:"containerID"`
	} `json:"terminated"`
}

// String names the state for messages.
func (c containerState) String() string {
	switch {
	case c.Running != nil:
		return "running"
	case c.Terminated != nil:
		return fmt.Sprintf("terminated(%d, %s)", c.Terminated.ExitCode, c.Terminated.Reason)
	case c.Waiting != nil:
		return "waiting(" + c.Waiting.Reason + ")"
	}
	return "none"
}

// terminatedID is the bare container ID of a terminated state ("" otherwise).
func (c containerState) terminatedID() string {
	if c.Terminated == nil {
		return ""
	}
	return bareID(c.Terminated.ContainerID)
}

// runningID is the bare ID of the container when it is running ("" otherwise).
func (c containerStatus) runningID() string {
	if c.State.Running == nil {
		return ""
	}
	return bareID(c.ContainerID)
}

// bareID strips the runtime prefix of a Kubernetes container ID ("cri-o://<id>").
func bareID(id string) string {
	if _, after, ok := strings.Cut(id, "://"); ok {
		return after
	}
	return id
}

// container returns the status of the named container.
func (p podStatus) container(name string) (containerStatus, bool) {
	for _, c := range p.ContainerStatuses {
		if c.Name == name {
			return c, true
		}
	}
	return containerStatus{}, false
}

// podStatus reads the static pod's status from the kubelet's read-only /pods API.
func (k *kubeletEnv) podStatus() (podStatus, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/pods", k.readOnlyPort))
	if err != nil {
		return podStatus{}, fmt.Errorf("kubelet /pods: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return podStatus{}, fmt.Errorf("kubelet /pods: %s", resp.Status)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
				UID       string `json:"uid"`
			} `json:"metadata"`
			Status podStatus `json:"status"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return podStatus{}, fmt.Errorf("decode kubelet /pods: %w", err)
	}
	for _, it := range list.Items {
		if it.Metadata.Name == kubeletPod+"-"+kubeletNode && it.Metadata.Namespace == kubeletPodNS {
			st := it.Status
			st.UID = it.Metadata.UID
			return st, nil
		}
	}
	return podStatus{}, fmt.Errorf("kubelet /pods: no pod %s-%s among %d", kubeletPod, kubeletNode, len(list.Items))
}

// logOf returns the log file of container ctr as CRI-O reports its path ("" when unreadable).
func (k *kubeletEnv) logOf(t *testing.T, ctr string) string {
	t.Helper()
	var insp struct {
		Status struct {
			LogPath string `json:"logPath"`
		} `json:"status"`
	}
	k.s.inspectJSON(t, &insp, "inspect", ctr)
	b, _ := os.ReadFile(insp.Status.LogPath)
	return string(b)
}

// checkExiterLog checks the log file of exiter's finished first run (ctr, whose restart count
// was restartCount): CRI-O reports its path, which must be in the kubelet's pod log directory (<podLogsDir>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log),
// and it must hold the run's output in CRI format.
func (k *kubeletEnv) checkExiterLog(t *testing.T, st podStatus, ctr string, restartCount int) {
	t.Helper()
	var insp struct {
		Status struct {
			LogPath string `json:"logPath"`
		} `json:"status"`
	}
	k.s.inspectJSON(t, &insp, "inspect", ctr)
	want := filepath.Join(k.podLogs, fmt.Sprintf("%s_%s-%s_%s", kubeletPodNS, kubeletPod, kubeletNode, st.UID), exiterName,
		fmt.Sprintf("%d.log", restartCount))
	p := insp.Status.LogPath
	if p != want {
		t.Errorf("exiter's first run logs to %q, want %q (the kubelet's pod log directory)", p, want)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("exiter's log: %v", err)
		return
	}
	var got []string
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		// <RFC 3339 time> <stream> <P|F> <text>
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			t.Errorf("exiter's log %s: malformed CRI line %q", p, line)
			continue
		}
		got = append(got, f[1]+" "+f[2]+" "+f[3])
	}
	wantLines := []string{"stdout F exiter-start"}
	for i := range exiterTicks {
		wantLines = append(wantLines, fmt.Sprintf("stdout F exiter-tick-%d", i))
	}
	wantLines = append(wantLines, "stderr F exiter-bye")
	if strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("exiter's log %s:\ngot  %q\nwant %q", p, got, wantLines)
	} else {
		t.Logf("exiter's first run's log %s holds its %d lines", p, len(wantLines))
	}
}

// leftovers says what of the pod is still there: gomon processes or runc containers of the
// suite, mounts below the suite directory that were not there before the kubelet started,
// mounts naming the sandbox, the pod's cgroups, the kubelet's directory for the pod.
func (k *kubeletEnv) leftovers(uid, sandbox string, mountsBefore []string) error {
	s := k.s
	var left []string
	for _, pid := range processesUnder(s.dir) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && strings.TrimSuffix(exe, " (deleted)") == s.gomon {
			left = append(left, fmt.Sprintf("gomon pid %d (%s)", pid, cmdline(pid)))
		}
	}
	if ids, err := exec.Command(s.runc, "--root", filepath.Join(s.dir, "runc"), "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(ids)) {
			left = append(left, "runc container "+id)
		}
	}
	for _, m := range mountsUnder(s.dir) {
		if !slices.Contains(mountsBefore, m) {
			left = append(left, "mount "+m)
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && strings.Contains(string(b), sandbox) {
		left = append(left, "a mount naming sandbox "+short(sandbox))
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*" + s.cgroupParent + "/kubepods/*/pod" + uid)
	more, _ := filepath.Glob("/sys/fs/cgroup/*" + s.cgroupParent + "/kubepods/pod" + uid)
	for _, c := range append(cgs, more...) {
		left = append(left, "cgroup "+c)
	}
	if exists(filepath.Join(k.root, "pods", uid)) {
		left = append(left, "kubelet pod directory "+filepath.Join(k.root, "pods", uid))
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	return nil
}
