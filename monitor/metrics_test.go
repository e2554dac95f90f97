package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gomon-dev/gomon/ioloop"
	"github.com/gomon-dev/gomon/metrics"
	"github.com/gomon-dev/gomon/monitor/internal/bundle"
	"github.com/gomon-dev/gomon/monitor/internal/handoff"
	"github.com/gomon-dev/gomon/monitor/monitortest"
)

// newMetricsMonitor is newTestMonitor with metrics on.
func newMetricsMonitor(t *testing.T) *Monitor {
	t.Helper()
	return newTestMonitorWith(t, Config{Metrics: true})
}

// scrape collects m's metrics as the daemon does (monitor-level series
// labelled with the pod and a PID), writes them as the textfile does and
// parses them with the Prometheus text parser.
func scrape(t *testing.T, m *Monitor) map[string]*dto.MetricFamily {
	t.Helper()
	b := metrics.NewBatch()
	m.CollectMetrics(b, append(m.PodLabels(), metrics.Label{Key: "process.pid", Value: "1"})...)
	var buf bytes.Buffer
	if err := metrics.WriteText(&buf, b.Families()); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, buf.String())
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want (a counter's value, a histogram's count); found is false
// when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, found bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, w := range want {
			if got[k] != w {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsGroundTruth runs a real container with a known output and
// known execs and checks the figures against what the test did: log bytes
// equal the bytes the container wrote, exec outcomes and counts equal the
// execs run, the create and the failed create are counted, and every
// container series carries the pod's identity from the bundle.
func TestMetricsGroundTruth(t *testing.T) {
	m := newMetricsMonitor(t)
	const lines = 5000
	// seq writes "1\n" .. "5000\n"; then 7 bytes without a newline (a
	// partial record) on stdout and 4 bytes on stderr.
	wantStdout := len("partial")
	for i := 1; i <= lines; i++ {
		wantStdout += len(strconv.Itoa(i)) + 1
	}
	dir := monitortest.Bundle(t, "sh", "-c", "seq 1 "+strconv.Itoa(lines)+"; printf partial; echo err >&2; exec sleep 1000")
	annotate(t, dir, map[string]string{
		bundle.PodName: "web-0", bundle.PodNamespace: "shop", bundle.PodUID: "0b3c5a0e-1f2d-4c3b-9a8e-7d6c5b4a3f21",
		bundle.ContainerName: "app",
	})
	p := newPaths(t)
	req := p.request("met", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "met"); err != nil {
		t.Fatal(err)
	}
	ident := map[string]string{"k8s_pod_name": "web-0", "k8s_namespace_name": "shop",
		"k8s_pod_uid": "0b3c5a0e-1f2d-4c3b-9a8e-7d6c5b4a3f21", "k8s_container_name": "app", "container_id": "met"}
	with := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range ident {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	written := func(fams map[string]*dto.MetricFamily, stream string) float64 {
		v, _ := value(fams, "gomon_log_bytes_total", with("stream", stream, "outcome", "written"))
		return v
	}
	// The container keeps running: wait until its output is logged.
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		fams = scrape(t, m)
		if written(fams, "stdout") >= float64(wantStdout) && written(fams, "stderr") >= 4 || time.Now().After(deadline) {
			break
		}
	}
	if got := written(fams, "stdout"); got != float64(wantStdout) {
		t.Errorf("stdout written bytes = %v, want %d (the bytes the container wrote)", got, wantStdout)
	}
	if got := written(fams, "stderr"); got != 4 {
		t.Errorf("stderr written bytes = %v, want 4", got)
	}
	logData, err := os.ReadFile(p.log)
	if err != nil {
		t.Fatal(err)
	}
	if len(logData) == 0 {
		t.Fatal("empty CRI log")
	}
	partials, _ := value(fams, "gomon_log_partial_records_total", with("stream", "stdout"))
	records, _ := value(fams, "gomon_log_records_total", with("stream", "stdout", "outcome", "written"))
	// Every complete line is a record, and so is every partial chunk
	// (at least the final "partial"; a read may split a line too).
	if partials < 1 || records != lines+partials {
		t.Errorf("stdout records %v with %v partial records, want %d + partials", records, partials, lines)
	}
	for _, reason := range []string{"disk_full", "sink_error", "rate_limit", "unread"} {
		if v, ok := value(fams, "gomon_log_bytes_total", with("stream", "stdout", "outcome", "dropped", "reason", reason)); !ok || v != 0 {
			t.Errorf("dropped %s = %v (present %v), want a zero series", reason, v, ok)
		}
	}

	// Execs: two exit 0, one exit 3, one timeout, one runtime error.
	execs := []struct {
		cmd     []string
		timeout uint64
		code    int32
	}{
		{[]string{"true"}, 0, 0},
		{[]string{"sh", "-c", "exit 0"}, 0, 0},
		{[]string{"sh", "-c", "exit 3"}, 0, 3},
		{[]string{"sleep", "10"}, 1, ExitTimedOut},
		{[]string{"nonexistent"}, 0, ExitRuntimeFailed},
	}
	for _, e := range execs {
		if res := execSync(t, m, ExecSyncRequest{ID: "met", Command: e.cmd, TimeoutSec: e.timeout}); res.ExitCode != e.code {
			t.Fatalf("exec %v: exit %d, want %d", e.cmd, res.ExitCode, e.code)
		}
	}
	// A create the runtime refuses: its bundle has no config.json.
	if _, err := m.CreateContainer(ctx, CreateRequest{ID: "bad", BundlePath: t.TempDir(), Cgroup: Cgroupfs}); err == nil {
		t.Fatal("create without config.json succeeded")
	}
	fams = scrape(t, m)
	for outcome, want := range map[string]float64{"exit_zero": 2, "exit_nonzero": 1, "timeout": 1, "runtime_error": 1} {
		if got, _ := value(fams, "gomon_exec_sync_duration_seconds", with("outcome", outcome)); got != want {
			t.Errorf("execs with outcome %s = %v, want %v", outcome, got, want)
		}
	}
	if _, ok := value(fams, "gomon_exec_sync_duration_seconds", with("outcome", "canceled")); ok {
		t.Error("a canceled-exec series exists though no exec was canceled")
	}
	pod := map[string]string{"k8s_pod_name": "web-0", "k8s_namespace_name": "shop", "process_pid": "1"}
	for outcome, want := range map[string]float64{"success": 1, "failure": 1} {
		l := map[string]string{"outcome": outcome}
		for k, v := range pod {
			l[k] = v
		}
		if got, _ := value(fams, "gomon_container_create_duration_seconds", l); got != want {
			t.Errorf("creates with outcome %s = %v, want %v", outcome, got, want)
		}
	}
	for verb, want := range map[string]float64{"exec": 1, "create": 1} {
		if got, _ := value(fams, "gomon_runtime_failures_total", map[string]string{"verb": verb}); got != want {
			t.Errorf("runtime failures of %s = %v, want %v", verb, got, want)
		}
	}
	if v, _ := value(fams, "gomon_container_oom_kills_total", with("process", "init")); v != 0 {
		t.Errorf("init OOM kills = %v, want 0", v)
	}

	// Once the container is deleted its series go.
	if err := m.Kill(ctx, "met", 9); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Wait(ctx, "met"); err != nil {
		t.Fatal(err)
	}
	if _, ok := value(scrape(t, m), "gomon_log_bytes_total", ident); !ok {
		t.Error("an exited container's series are gone before it was deleted")
	}
	if err := m.Delete(ctx, "met"); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, m)
	if _, ok := value(fams, "gomon_log_bytes_total", ident); ok {
		t.Error("a deleted container's series are still reported")
	}
	if _, ok := value(fams, "gomon_container_create_duration_seconds", pod); !ok {
		t.Error("monitor-level series went with the container")
	}
}

// TestMetricsOOMInit: an 8 MiB-limited container that is OOM-killed counts
// one OOM kill of its init, and gets its (empty) oom file.
func TestMetricsOOMInit(t *testing.T) {
	m := newMetricsMonitor(t)
	dir := monitortest.NewBundle(t, monitortest.BundleOptions{Args: []string{"tail", "/dev/zero"}, MemoryLimit: 8 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newPaths(t)
	if _, err := m.CreateContainer(ctx, p.request("oomm", dir)); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "oomm"); err != nil {
		t.Fatal(err)
	}
	st, err := m.Wait(ctx, "oomm")
	if err != nil {
		t.Fatal(err)
	}
	if !st.OOMKilled {
		t.Fatalf("container not OOM killed: %+v", st)
	}
	if b, err := os.ReadFile(p.oom); err != nil || len(b) != 0 {
		t.Errorf("oom file %q, %v; want an empty file", b, err)
	}
	fams := scrape(t, m)
	if v, _ := value(fams, "gomon_container_oom_kills_total", map[string]string{"container_id": "oomm", "process": "init"}); v != 1 {
		t.Errorf("init OOM kills = %v, want 1", v)
	}
	if v, ok := value(fams, "gomon_container_oom_kills_total", map[string]string{"container_id": "oomm", "process": "other"}); !ok || v != 0 {
		t.Errorf("other OOM kills = %v (present %v), want 0", v, ok)
	}
	// Without annotations a container has container.id only.
	for _, m := range fams["gomon_container_oom_kills_total"].Metric {
		for _, l := range m.Label {
			if l.GetName() == "k8s_pod_name" {
				t.Errorf("unannotated container has %s=%q", l.GetName(), l.GetValue())
			}
		}
	}
}

// runKept runs req's container to its exit and leaves it known (not
// deleted): a deleted container's series are gone.
func runKept(t *testing.T, m *Monitor, req CreateRequest) ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, req); err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := m.Start(ctx, req.ID); err != nil {
		t.Fatalf("start: %v", err)
	}
	st, err := m.Wait(ctx, req.ID)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return st
}

// TestMetricsOOMOther: a child OOM killed while the init exits 0 counts as
// another process's kill, not the container's: no oom file.
func TestMetricsOOMOther(t *testing.T) {
	m := newMetricsMonitor(t)
	dir := monitortest.NewBundle(t, monitortest.BundleOptions{
		Args: []string{"sh", "-c", "tail /dev/zero; exit 0"}, MemoryLimit: 8 << 20,
	})
	p := newPaths(t)
	st := runKept(t, m, p.request("oom-other", dir))
	if st.Code != 0 || st.OOMKilled {
		t.Fatalf("status %+v, want exit 0, not OOM killed", st)
	}
	if _, err := os.Stat(p.oom); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("oom file: %v, want none", err)
	}
	fams := scrape(t, m)
	for process, want := range map[string]float64{"init": 0, "other": 1} {
		v, ok := value(fams, "gomon_container_oom_kills_total", map[string]string{"container_id": "oom-other", "process": process})
		if !ok || v != want {
			t.Errorf("%s OOM kills = %v (present %v), want %v", process, v, ok, want)
		}
	}
}

// TestMetricsRateLimitDrops: under a log rate limit the bytes written to
// the log plus those dropped by the limit are exactly what the container
// wrote.
func TestMetricsRateLimitDrops(t *testing.T) {
	m, err := New(Config{Runtime: monitortest.Runc(t), RuntimeRoot: t.TempDir(), Logger: testLogger(), Metrics: true,
		LogRateLimit: ioloop.RateLimit{Rate: 1 << 20, Burst: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	data := numberedLines(16 << 20)
	st := runKept(t, m, newPaths(t).request("limited", catBundle(t, data, nil)))
	if st.Code != 0 {
		t.Fatalf("status %+v", st)
	}
	fams := scrape(t, m)
	out := map[string]string{"container_id": "limited", "stream": "stdout"}
	with := func(kv ...string) map[string]string {
		w := map[string]string{}
		for k, v := range out {
			w[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			w[kv[i]] = kv[i+1]
		}
		return w
	}
	written, _ := value(fams, "gomon_log_bytes_total", with("outcome", "written"))
	dropped, _ := value(fams, "gomon_log_bytes_total", with("outcome", "dropped", "reason", "rate_limit"))
	records, _ := value(fams, "gomon_log_records_total", with("outcome", "dropped", "reason", "rate_limit"))
	t.Logf("written %v, dropped by the limit %v bytes in %v records", written, dropped, records)
	if dropped == 0 || records == 0 || written+dropped != float64(len(data)) {
		t.Fatalf("written %v + dropped %v != %d bytes written by the container (or nothing dropped)", written, dropped, len(data))
	}
}

// TestMetricsOff: without Config.Metrics nothing is collected and the
// containers have no instruments.
func TestMetricsOff(t *testing.T) {
	m := newTestMonitor(t)
	st := runToExit(t, m, newPaths(t).request("off", monitortest.Bundle(t, "echo", "hi")))
	if st.Code != 0 {
		t.Fatalf("exit %d", st.Code)
	}
	b := metrics.NewBatch()
	m.CollectMetrics(b)
	if len(b.Families()) != 0 {
		t.Errorf("metrics collected with metrics off: %v", b.Families())
	}
	if m.metrics != nil {
		t.Error("monitor-level instruments exist with metrics off")
	}
}

// TestMetricsHandoffRoundTrip: the counters an upgrade carries come back
// the same in the new process's instruments, through the record's JSON;
// a record of another shape is refused.
func TestMetricsHandoffRoundTrip(t *testing.T) {
	old := newContainerMetrics("c1", bundle.Identity{})
	old.hasStream[0].Store(true)
	old.streams[0].WrittenBytes.Store(10048)
	old.streams[0].WrittenRecords.Store(5001)
	old.streams[0].Partials.Store(1)
	old.streams[0].Drop(ioloop.DropRateLimit, 4096, 40)
	old.addOOM(oomOther, 2)
	old.recordExec(execExitZero, 30*time.Millisecond)
	old.recordExec(execTimeout, 2*time.Second)
	data, err := json.Marshal(old.handoffState())
	if err != nil {
		t.Fatal(err)
	}
	var hm handoff.Metrics
	if err := json.Unmarshal(data, &hm); err != nil {
		t.Fatal(err)
	}
	cm := newContainerMetrics("c1", bundle.Identity{})
	if !cm.restore(&hm) {
		t.Fatal("restore refused its own record")
	}
	cm.hasStream[0].Store(true) // as the adopted container's startStream does
	if got, want := cm.handoffState(), old.handoffState(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the round trip\n%+v\nwant\n%+v", got, want)
	}
	hm.OOM = hm.OOM[:1]
	if newContainerMetrics("c1", bundle.Identity{}).restore(&hm) {
		t.Fatal("a record of another shape was taken")
	}
}

// TestTombstoneMetricsCarried: an exited container's series go on after an
// upgrade with the same values and labels, and the pod's identity with
// them, although no container is left to name it; a record of schema 2
// (no counters) restores the tombstone without series.
func TestTombstoneMetricsCarried(t *testing.T) {
	m := newMetricsMonitor(t)
	dir := monitortest.Bundle(t, "sh", "-c", "seq 1 1000; echo err >&2; exit 3")
	annotate(t, dir, map[string]string{
		bundle.PodName: "job-0", bundle.PodNamespace: "batch", bundle.PodUID: "5e0c2a8b-7f1d-4e6a-9b3c-2d1e0f9a8b7c",
		bundle.ContainerName: "work",
	})
	p := newPaths(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.CreateContainer(ctx, p.request("done", dir)); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx, "done"); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Wait(ctx, "done"); err != nil || st.Code != 3 {
		t.Fatalf("status %+v, %v", st, err)
	}
	before := scrape(t, m)
	ident := map[string]string{"k8s_pod_name": "job-0", "k8s_namespace_name": "batch",
		"k8s_pod_uid": "5e0c2a8b-7f1d-4e6a-9b3c-2d1e0f9a8b7c", "k8s_container_name": "work", "container_id": "done"}
	written := func(fams map[string]*dto.MetricFamily, stream string) (float64, bool) {
		want := map[string]string{"stream": stream, "outcome": "written"}
		for k, v := range ident {
			want[k] = v
		}
		return value(fams, "gomon_log_bytes_total", want)
	}
	if v, ok := written(before, "stdout"); !ok || v != 3893 { // seq 1 1000: 3893 bytes
		t.Fatalf("before: stdout written %v (found %v), want 3893", v, ok)
	}

	// The record as an upgrade writes and reads it.
	raw, err := json.Marshal(m.tombstones())
	if err != nil {
		t.Fatal(err)
	}
	var recs []handoff.Tombstone
	if err := json.Unmarshal(raw, &recs); err != nil {
		t.Fatal(err)
	}
	next := newMetricsMonitor(t)
	next.restoreTombstones(recs)
	after := scrape(t, next)
	for _, stream := range []string{"stdout", "stderr"} {
		want, _ := written(before, stream)
		if got, ok := written(after, stream); !ok || got != want {
			t.Errorf("after: %s written %v (found %v), want %v", stream, got, ok, want)
		}
	}
	// Every series of the container, whole.
	if a, b := containerSeries(before, "done"), containerSeries(after, "done"); len(a) < 10 || !reflect.DeepEqual(a, b) {
		t.Errorf("the container's series before the upgrade\n%v\nafter\n%v", a, b)
	}
	if got := next.PodLabels(); len(got) != 3 || got[2].Value != ident["k8s_pod_uid"] {
		t.Errorf("pod labels after the upgrade %v, want the exited container's pod", got)
	}

	// Schema 2 carried no counters: the tombstone answers, without series.
	for i := range recs {
		recs[i].Metrics, recs[i].Identity = nil, nil
	}
	old := newMetricsMonitor(t)
	old.restoreTombstones(recs)
	if st, err := old.Wait(context.Background(), "done"); err != nil || st.Code != 3 {
		t.Errorf("Wait after a schema-2 record: %+v, %v", st, err)
	}
	if _, ok := written(scrape(t, old), "stdout"); ok {
		t.Error("series without carried counters")
	}
}

// containerSeries returns the series of container id, each as its family
// and labels mapped to its value (a histogram's count and sum).
func containerSeries(fams map[string]*dto.MetricFamily, id string) map[string]string {
	out := map[string]string{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key, mine := name, false
			for _, l := range m.Label {
				key += fmt.Sprintf(" %s=%q", l.GetName(), l.GetValue())
				mine = mine || l.GetName() == "container_id" && l.GetValue() == id
			}
			if !mine {
				continue
			}
			switch {
			case m.Counter != nil:
				out[key] = fmt.Sprint(m.Counter.GetValue())
			case m.Histogram != nil:
				out[key] = fmt.Sprint(m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum())
			}
		}
	}
	return out
}
