package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/exporter"
	"github.com/gomon-dev/gomon/monitor/internal/stream"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// The OOM rule (oom.go): a process is OOM killed only when it died of
// SIGKILL and its cgroup's kill count grew while it ran. These tests run
// real containers under an 8 MiB limit in which `tail /dev/zero` (a line
// that never ends) is the OOM killer's victim.

// tracedMonitor is a Monitor whose spans are kept in memory.
type tracedMonitor struct {
	*Monitor
	tr *exporter.Tracing
	// exited receives the ID of each container whose waiter ended its
	// wait_for_exit_code span (Config.OnContainerExit), which happens
	// after Wait returns.
	exited chan string
}

// waitSpans waits until container id's waiter span has ended.
func (m tracedMonitor) waitSpans(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(30 * time.Second) // only for a broken build
	for {
		select {
		case got := <-m.exited:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("no OnContainerExit for %s", id)
		}
	}
}

// newTracedMonitor is newTestMonitor with its spans kept in memory (the
// exporter's tree mode, as `gomon run --trace`; the SDK is the exporter's
// alone).
func newTracedMonitor(t *testing.T) (tracedMonitor, *exporter.Tracing) {
	t.Helper()
	tr, err := exporter.Setup(context.Background(), exporter.Config{
		Mode: exporter.ModeTree, LookupEnv: func(string) (string, bool) { return "", false },
	})
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan string, 16)
	m, err := New(Config{Runtime: monitortest.Runc(t), RuntimeRoot: t.TempDir(), Logger: testLogger(),
		TracerProvider: tr.TracerProvider(), OnContainerExit: func(id string) { exited <- id }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		_ = tr.Shutdown(ctx)
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})
	return tracedMonitor{Monitor: m, tr: tr, exited: exited}, tr
}

// recordedSpan is what the tests read of a finished span.
type recordedSpan interface {
	Name() string
	Attributes() []attribute.KeyValue
}

// endedSpans returns the finished spans named name.
func endedSpans(tr *exporter.Tracing, name string) []recordedSpan {
	var out []recordedSpan
	for _, s := range tr.Spans() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// spanAttrs returns a span's attributes by key.
func spanAttrs(s recordedSpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// hasEvent reports whether s has an event named name. The events' type
// is the SDK's, which this package does not import: they are read by
// reflection.
func hasEvent(s recordedSpan, name string) bool {
	events := reflect.ValueOf(s).MethodByName("Events").Call(nil)[0]
	for i := range events.Len() {
		if events.Index(i).FieldByName("Name").String() == name {
			return true
		}
	}
	return false
}

// checkOOMSpan checks a span's OOM attributes.
func checkOOMSpan(t *testing.T, s recordedSpan, want OOMKills) {
	t.Helper()
	a := spanAttrs(s)
	if a["oom_killed"].AsBool() != (want.Init > 0) || a["oom_kills.init"].AsInt64() != int64(want.Init) ||
		a["oom_kills.other"].AsInt64() != int64(want.Other) {
		t.Errorf("span %s: oom_killed=%v oom_kills.init=%v oom_kills.other=%v, want %+v", s.Name(),
			a["oom_killed"].String(), a["oom_kills.init"].String(), a["oom_kills.other"].String(), want)
	}
	if got := hasEvent(s, "oom kill of another process"); got != (want.Other > 0) {
		t.Errorf("span %s: event \"oom kill of another process\" present = %v, want %v", s.Name(), got, want.Other > 0)
	}
}

// annotate adds annotations to a bundle's config.json.
func annotate(t *testing.T, bundle string, ann map[string]string) {
	t.Helper()
	name := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	a, _ := spec["annotations"].(map[string]any)
	if a == nil {
		a = map[string]any{}
	}
	for k, v := range ann {
		a[k] = v
	}
	spec["annotations"] = a
	if raw, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOOMKillOfChildIsNotContainerOOM: the init (sh) survives its child's
// OOM kill and exits 0. The container is not OOM killed (no oom file, exit
// code 0); the kill is counted as another process's, and put on the
// waiter's span as an event. Before the rule, any kill in the cgroup made
// the container OOM killed.
func TestOOMKillOfChildIsNotContainerOOM(t *testing.T) {
	m, rec := newTracedMonitor(t)
	p := newPaths(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "tail /dev/zero; exit 0"}, MemoryLimit: 8 << 20,
	})
	st := runToExit(t, m.Monitor, p.request("oom-child", bundle))
	m.waitSpans(t, "oom-child")
	if st.Code != 0 || st.Signal != 0 {
		t.Fatalf("status %+v, want exit 0 (the init survives its child's OOM kill)", st)
	}
	if st.OOMKilled || st.OOMKills != (OOMKills{Other: 1}) {
		t.Errorf("status %+v, want not OOM killed with 1 other OOM kill", st)
	}
	if _, err := os.Stat(p.oom); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("oom file: %v, want none", err)
	}
	if got := readExit(t, p.exit1); got != "0" {
		t.Errorf("exit file = %q, want 0", got)
	}
	waits := endedSpans(rec, "wait_for_exit_code")
	if len(waits) != 1 {
		t.Fatalf("%d wait_for_exit_code spans, want 1", len(waits))
	}
	checkOOMSpan(t, waits[0], st.OOMKills)
	// No Kubernetes identity in this bundle: container.id (and the old
	// container_id) only.
	a := spanAttrs(waits[0])
	if a[attrContainerID].AsString() != "oom-child" || a[attrContainerIDLegacy].AsString() != "oom-child" {
		t.Errorf("wait_for_exit_code span lacks container.id/container_id: %v", waits[0].Attributes())
	}
	if _, ok := a[attrK8sPodName]; ok {
		t.Errorf("span has k8s.pod.name for a container without one: %v", waits[0].Attributes())
	}
}

// TestSIGKILLAfterChildOOMIsNotContainerOOM: the init (sh) outlives its
// child's OOM kill, then dies of a SIGKILL sent by someone else (a stop's
// SIGKILL, runc kill). A SIGKILLed init with a kill counted while it ran
// looked OOM killed; it outlived that kill, so the kill was not its own:
// not OOM killed, 1 other kill.
func TestSIGKILLAfterChildOOMIsNotContainerOOM(t *testing.T) {
	m, _ := newTracedMonitor(t)
	p := newPaths(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "tail /dev/zero; exec sleep 1000"}, MemoryLimit: 8 << 20,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req := p.request("oom-then-kill", bundle)
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := m.Start(ctx, req.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	c, _, err := m.lookup(req.ID)
	if err != nil || c == nil {
		t.Fatalf("lookup: %v", err)
	}
	// The child's kill is counted, and the init outlived it by the grace.
	for c.oomSurvived.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the child's OOM kill was never recorded as outlived by the init")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := m.Kill(ctx, req.ID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	st, err := m.Wait(ctx, req.ID)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if st.Code != 137 || st.Signal != syscall.SIGKILL {
		t.Fatalf("status %+v, want SIGKILL (137)", st)
	}
	if st.OOMKilled || st.OOMKills != (OOMKills{Other: 1}) {
		t.Errorf("status %+v, want not OOM killed with 1 other OOM kill", st)
	}
	if _, err := os.Stat(p.oom); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("oom file: %v, want none", err)
	}
	if err := m.Delete(ctx, req.ID); err != nil {
		t.Errorf("delete: %v", err)
	}
}

// TestExecOOMKills: exec sessions, sync and streaming, get the rule for
// their own process: killed by the OOM killer → OOM killed (137); a child
// OOM killed while the exec's process exits 0 → not OOM killed, 1 other
// kill. The container, whose init exits 0 afterwards, is not OOM killed and
// counts all four kills as other processes'. The container is annotated as
// CRI-O annotates a crictl-made one: every span carries its identity.
func TestExecOOMKills(t *testing.T) {
	m, rec := newTracedMonitor(t)
	p := newPaths(t)
	bundle := monitortest.NewBundle(t, monitortest.BundleOptions{
		// The init ends when the test creates /tmp/stop (the rootfs is
		// read-only inside; the test writes it from outside).
		Args:        []string{"sh", "-c", "while [ ! -e /tmp/stop ]; do sleep 1; done"},
		MemoryLimit: 8 << 20,
	})
	annotate(t, bundle, map[string]string{
		"io.kubernetes.cri-o.Name":     "k8s_writer_web-0_shop_uid-1_0",
		"io.kubernetes.cri-o.Metadata": `{"name":"writer"}`,
		"io.kubernetes.cri-o.Labels":   "null",
	})
	const id = "oom-exec"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cctx, cspan := m.tracer.Start(ctx, "create_container") // as the RPC server's
	if _, err := m.CreateContainer(cctx, p.request(id, bundle)); err != nil {
		t.Fatal(err)
	}
	cspan.End()
	if err := m.Start(ctx, id); err != nil {
		t.Fatal(err)
	}

	childOOM := []string{"sh", "-c", "tail /dev/zero; exit 0"}
	ownOOM := []string{"tail", "/dev/zero"}
	for _, tc := range []struct {
		cmd      []string
		code     int32
		oomKills OOMKills
	}{
		{childOOM, 0, OOMKills{Other: 1}},
		{ownOOM, 137, OOMKills{Init: 1}},
	} {
		res, err := m.ExecSync(ctx, ExecSyncRequest{ID: id, Command: tc.cmd, Cgroup: Cgroupfs})
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != tc.code || res.OOMKilled != (tc.oomKills.Init > 0) || res.OOMKills != tc.oomKills {
			t.Errorf("exec %q: exit %d, OOMKilled %v, OOMKills %+v; want exit %d, %+v (stderr %q)",
				tc.cmd, res.ExitCode, res.OOMKilled, res.OOMKills, tc.code, tc.oomKills, res.Stderr)
		}
		code, err := m.streamExec(ctx, ServeExecRequest{ID: id, Command: tc.cmd, Stdout: true, Stderr: true, Cgroup: Cgroupfs},
			stream.IO{Stdout: io.Discard, Stderr: io.Discard})
		if err != nil || int32(code) != tc.code {
			t.Errorf("streaming exec %q: %d, %v; want %d", tc.cmd, code, err, tc.code)
		}
	}
	execs := endedSpans(rec, "runtime_exec")
	if len(execs) != 4 {
		t.Fatalf("%d runtime_exec spans, want 4", len(execs))
	}
	for i, want := range []OOMKills{{Other: 1}, {Other: 1}, {Init: 1}, {Init: 1}} {
		checkOOMSpan(t, execs[i], want)
	}

	// While the container runs, the exec processes' own kills are known to
	// be other processes'; the children's wait for the init's exit.
	c, _, err := m.lookup(id)
	if err != nil {
		t.Fatal(err)
	}
	if kills, pending, final := c.oomKills(); kills != (OOMKills{Other: 2}) || pending != 2 || final {
		t.Errorf("oomKills while running = %+v, pending %d, final %v; want {Other: 2}, 2, false", kills, pending, final)
	}

	if err := os.WriteFile(filepath.Join(bundle, "rootfs", "tmp", "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := m.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	m.waitSpans(t, id)
	if st.Code != 0 || st.OOMKilled || st.OOMKills != (OOMKills{Other: 4}) {
		t.Errorf("container status %+v, want exit 0, not OOM killed, 4 other kills", st)
	}
	if _, err := os.Stat(p.oom); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("oom file: %v, want none", err)
	}
	if kills, pending, final := c.oomKills(); kills != st.OOMKills || pending != 0 || !final {
		t.Errorf("oomKills after exit = %+v, %d, %v; want the exit status's, final", kills, pending, final)
	}

	// Every span of the container carries its identity.
	want := map[attribute.Key]string{
		attrContainerID: id, attrContainerIDLegacy: id, attrK8sPodName: "web-0", attrK8sNamespaceName: "shop",
		attrK8sPodUID: "uid-1", attrK8sContainerName: "writer",
	}
	var spans []recordedSpan
	for _, name := range []string{"create_container", "wait_for_exit_code", "read_loop", "runtime_exec"} {
		got := endedSpans(rec, name)
		if len(got) == 0 {
			t.Errorf("no %s span", name)
		}
		spans = append(spans, got...)
	}
	for _, s := range spans {
		a := spanAttrs(s)
		for k, v := range want {
			if a[k].AsString() != v {
				t.Errorf("span %s: %s = %q, want %q", s.Name(), k, a[k].AsString(), v)
			}
		}
	}
	if err := m.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestSplitOOMKills is the rule on its own: wait statuses are built the
// way the kernel encodes them (signal in the low 7 bits, exit code above).
func TestSplitOOMKills(t *testing.T) {
	exited := func(code int) exitEvent { return exitEvent{status: unix.WaitStatus(code << 8)} }
	killed := func(sig unix.Signal) exitEvent { return exitEvent{status: unix.WaitStatus(sig)} }
	for _, tc := range []struct {
		name          string
		kills, notOwn uint64
		ev            exitEvent
		want          OOMKills
	}{
		{"no kill, SIGKILL", 0, 0, killed(unix.SIGKILL), OOMKills{}},
		{"own kill", 1, 0, killed(unix.SIGKILL), OOMKills{Init: 1}},
		{"own kill after two children's", 3, 0, killed(unix.SIGKILL), OOMKills{Init: 1, Other: 2}},
		{"child's kill, exit 0", 1, 0, exited(0), OOMKills{Other: 1}},
		{"child's kill, SIGTERM", 1, 0, killed(unix.SIGTERM), OOMKills{Other: 1}},
		{"child's kill, exit 137 by itself", 1, 0, exited(137), OOMKills{Other: 1}},
		{"an exec's own kill, then SIGKILL", 1, 1, killed(unix.SIGKILL), OOMKills{Other: 1}},
		{"an exec's and another kill, then SIGKILL", 2, 1, killed(unix.SIGKILL), OOMKills{Init: 1, Other: 1}},
		{"status unknown: any kill is the init's", 1, 0, exitEvent{unknown: true}, OOMKills{Init: 1}},
	} {
		if got := splitOOMKills(tc.kills, tc.notOwn, tc.ev); got != tc.want {
			t.Errorf("%s: splitOOMKills(%d, %d) = %+v, want %+v", tc.name, tc.kills, tc.notOwn, got, tc.want)
		}
	}
}
