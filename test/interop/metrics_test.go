package interop

// Metrics (README.md, "Metrics"): a daemon started with the metrics
// variables in its environment, as CRI-O starts it, writes the textfile
// for node_exporter and sends OTLP metrics to a real OTLP/HTTP receiver;
// both carry the figures of what the test did. Built against both client
// generations (go.mod and go.v073.mod).

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/conmon-rs/pkg/client"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP metrics endpoint that decodes what it gets.
type otlpReceiver struct {
	mu   sync.Mutex
	last *colmetrics.ExportMetricsServiceRequest
	n    int
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	var m colmetrics.ExportMetricsServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &m)
	}
	if err != nil || req.URL.Path != "/v1/metrics" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.last, r.n = &m, r.n+1
	r.mu.Unlock()
	out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// sumPoint returns the value of the Sum or the count of the Histogram
// named name whose attributes include want.
func (r *otlpReceiver) value(name string, want map[string]string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		return 0, false
	}
	match := func(kvs map[string]string) bool {
		for k, v := range want {
			if kvs[k] != v {
				return false
			}
		}
		return true
	}
	for _, rm := range r.last.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != name {
					continue
				}
				for _, dp := range m.GetSum().GetDataPoints() {
					kvs := map[string]string{}
					for _, kv := range dp.Attributes {
						kvs[kv.Key] = kv.GetValue().GetStringValue()
					}
					if match(kvs) {
						return float64(dp.GetAsInt()), true
					}
				}
				for _, dp := range m.GetHistogram().GetDataPoints() {
					kvs := map[string]string{}
					for _, kv := range dp.Attributes {
						kvs[kv.Key] = kv.GetValue().GetStringValue()
					}
					if match(kvs) {
						return float64(dp.Count), true
					}
				}
			}
		}
	}
	return 0, false
}

// textValue returns the counter value (or histogram count) of the series
// of family name whose labels include want.
func textValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
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
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		if m.Histogram != nil {
			return float64(m.Histogram.GetSampleCount()), true
		}
		return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true
	}
	return 0, false
}

// seqBytes is the length of what `seq 1 n` prints.
func seqBytes(n int) int {
	b := 0
	for i := 1; i <= n; i++ {
		b += len(strconv.Itoa(i)) + 1
	}
	return b
}

// startMetricsDaemon starts gomon with both metric outputs on: the
// textfile in a directory of the test's and OTLP/HTTP to recv, every
// 200 ms. The client starts gomon with the test's environment, as CRI-O
// starts it with its own.
func startMetricsDaemon(t *testing.T) (s *gomonServer, recv *otlpReceiver, textDir string) {
	t.Helper()
	recv = new(otlpReceiver)
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	textDir = t.TempDir()
	t.Setenv("GOMON_METRICS_TEXTFILE_DIR", textDir)
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", srv.URL+"/v1/metrics")
	t.Setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
	return startGomon(t, serverConfig(t, t.TempDir())), recv, textDir
}

// TestMetricsOutputs: log bytes equal what the container wrote, exec
// counts and outcomes equal the execs the test ran (exit 0, exit 3, a
// timeout), one create; in the textfile (parsed with the Prometheus text
// parser) and over OTLP; the textfile is removed when the daemon stops.
func TestMetricsOutputs(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s, recv, textDir := startMetricsDaemon(t)

	const lines = 3000
	wantBytes := seqBytes(lines)
	uid := "6f1d2c3b-4a59-4e8d-9c7b-1a2b3c4d5e6f"
	c := runningContainer(t, s, []string{"sh", "-c", "seq 1 " + strconv.Itoa(lines) + "; exec sleep 1000"}, func(spec map[string]any) {
		spec["annotations"] = map[string]any{
			"io.kubernetes.pod.name": "metrics-pod", "io.kubernetes.pod.namespace": "interop",
			"io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": "seq",
		}
	}, nil)
	for _, e := range []struct {
		cmd     []string
		timeout uint64
	}{{[]string{"true"}, 0}, {[]string{"sh", "-c", "exit 3"}, 0}, {[]string{"sleep", "10"}, 1}} {
		execSync(t, s, &client.ExecSyncConfig{ID: c.id, Command: e.cmd, Timeout: e.timeout})
	}

	ident := map[string]string{"container_id": c.id, "k8s_pod_name": "metrics-pod", "k8s_namespace_name": "interop",
		"k8s_pod_uid": uid, "k8s_container_name": "seq"}
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
	// The file is named after the pod's UID once the pod is known.
	path := filepath.Join(textDir, "gomon-"+uid+".prom")
	var fams map[string]*dto.MetricFamily
	var text []byte
	deadline := time.Now().Add(hangGuard)
	for {
		var err error
		if text, err = os.ReadFile(path); err == nil {
			p := expfmt.NewTextParser(model.LegacyValidation)
			if fams, err = p.TextToMetricFamilies(bytes.NewReader(text)); err != nil {
				t.Fatalf("textfile does not parse: %v\n%s", err, text)
			}
			n, _ := textValue(fams, "gomon_exec_sync_duration_seconds", with("outcome", "timeout"))
			b, _ := textValue(fams, "gomon_log_bytes_total", with("stream", "stdout", "outcome", "written"))
			if n == 1 && b == float64(wantBytes) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("textfile %s not complete within %v (%v):\n%s", path, hangGuard, err, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("textfile:\n%s", text)
	for outcome, want := range map[string]float64{"exit_zero": 1, "exit_nonzero": 1, "timeout": 1} {
		if got, _ := textValue(fams, "gomon_exec_sync_duration_seconds", with("outcome", outcome)); got != want {
			t.Errorf("textfile: execs %s = %v, want %v", outcome, got, want)
		}
	}
	if got, _ := textValue(fams, "gomon_container_create_duration_seconds", map[string]string{"outcome": "success", "k8s_pod_uid": uid}); got != 1 {
		t.Errorf("textfile: creates = %v, want 1", got)
	}
	if got, _ := textValue(fams, "gomon_rpc_requests_total", map[string]string{"rpc_method": "exec_sync_container", "outcome": "ok"}); got != 3 {
		t.Errorf("textfile: exec_sync_container RPCs = %v, want 3", got)
	}
	if rss, ok := textValue(fams, "gomon_process_memory_rss_bytes", map[string]string{"process_pid": strconv.Itoa(s.pid)}); !ok || rss < 1<<20 {
		t.Errorf("textfile: daemon RSS %v (present %v)", rss, ok)
	}

	// OTLP: the same figures, with the OTel attribute names.
	otel := map[string]string{"container.id": c.id, "k8s.pod.name": "metrics-pod", "k8s.namespace.name": "interop",
		"k8s.pod.uid": uid, "k8s.container.name": "seq"}
	withOTel := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range otel {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	for deadline := time.Now().Add(hangGuard); ; time.Sleep(100 * time.Millisecond) {
		n, _ := recv.value("gomon.exec.sync.duration", withOTel("outcome", "timeout"))
		if n == 1 || time.Now().After(deadline) {
			break
		}
	}
	if got, _ := recv.value("gomon.log.bytes", withOTel("stream", "stdout", "outcome", "written")); got != float64(wantBytes) {
		t.Errorf("OTLP: stdout bytes written = %v, want %d", got, wantBytes)
	}
	for outcome, want := range map[string]float64{"exit_zero": 1, "exit_nonzero": 1, "timeout": 1} {
		if got, _ := recv.value("gomon.exec.sync.duration", withOTel("outcome", outcome)); got != want {
			t.Errorf("OTLP: execs %s = %v, want %v", outcome, got, want)
		}
	}

	s.stop(t)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("textfile left after the daemon stopped: %v", err)
	}
	if entries, _ := os.ReadDir(textDir); len(entries) != 0 {
		t.Errorf("textfile directory holds %d entries after the daemon stopped", len(entries))
	}
}

// TestMetricsOOMOutputs: the two OOM cases through the daemon's
// own outputs. An 8 MiB container whose init is OOM-killed exits 137 with
// an oom file and counts init=1, other=0; one whose child is OOM-killed
// while the init exits 0 has no oom file and counts init=0, other=1; the
// same in the textfile (parsed with the Prometheus text parser) and over
// OTLP.
func TestMetricsOOMOutputs(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s, recv, textDir := startMetricsDaemon(t)
	limit := func(spec map[string]any) {
		linux := spec["linux"].(map[string]any)
		res, _ := linux["resources"].(map[string]any)
		if res == nil {
			res = map[string]any{}
			linux["resources"] = res
		}
		res["memory"] = map[string]any{"limit": 8 << 20, "swap": 8 << 20}
	}
	own, err := create(t, s, []string{"tail", "/dev/zero"}, limit, nil)
	if err != nil {
		t.Fatal(err)
	}
	own.runc(t, s, "start", own.id)
	child, err := create(t, s, []string{"sh", "-c", "tail /dev/zero; exit 0"}, limit, nil)
	if err != nil {
		t.Fatal(err)
	}
	child.runc(t, s, "start", child.id)
	// The oom file is written before the exit file: once the exit code is
	// there, the oom file is there or never will be.
	if code := own.exitCode(t); code != 137 {
		t.Errorf("init OOM-killed: exit %d, want 137", code)
	}
	if _, err := os.Stat(own.oomPath); err != nil {
		t.Errorf("init OOM-killed: no oom file: %v", err)
	}
	if code := child.exitCode(t); code != 0 {
		t.Errorf("child OOM-killed: exit %d, want 0", code)
	}
	if _, err := os.Stat(child.oomPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("child OOM-killed: oom file: %v, want none", err)
	}

	want := map[[2]string]float64{{own.id, "init"}: 1, {own.id, "other"}: 0, {child.id, "init"}: 0, {child.id, "other"}: 1}
	// check reports the textfile's and the receiver's values that differ
	// from want; nil once both hold them all.
	check := func() []string {
		var bad []string
		files, _ := filepath.Glob(filepath.Join(textDir, "gomon-*.prom"))
		var fams map[string]*dto.MetricFamily
		if len(files) == 1 {
			text, _ := os.ReadFile(files[0])
			p := expfmt.NewTextParser(model.LegacyValidation)
			var err error
			if fams, err = p.TextToMetricFamilies(bytes.NewReader(text)); err != nil {
				t.Fatalf("textfile does not parse: %v\n%s", err, text)
			}
		} else {
			bad = append(bad, "textfiles "+strconv.Itoa(len(files)))
		}
		for k, w := range want {
			v, ok := textValue(fams, "gomon_container_oom_kills_total", map[string]string{"container_id": k[0], "process": k[1]})
			if !ok || v != w {
				bad = append(bad, "textfile "+k[0]+" process="+k[1]+": "+strconv.FormatFloat(v, 'g', -1, 64))
			}
			v, ok = recv.value("gomon.container.oom_kills", map[string]string{"container.id": k[0], "process": k[1]})
			if !ok || v != w {
				bad = append(bad, "OTLP "+k[0]+" process="+k[1]+": "+strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
		return bad
	}
	deadline := time.Now().Add(hangGuard)
	for bad := check(); bad != nil; bad = check() {
		if time.Now().After(deadline) {
			t.Fatalf("OOM kills not as expected within %v (want init/other %v): %v", hangGuard, want, bad)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.stop(t)
}

// TestMetricsAfterUpgrade: a pod whose one container has exited keeps that
// container's series through `gomon upgrade`: the new process's textfile,
// under the same pod-named file, reports the same written bytes and
// records, and no file named after the run directory appears.
func TestMetricsAfterUpgrade(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	s, _, textDir := startMetricsDaemon(t)
	const lines = 2000
	wantBytes := seqBytes(lines)
	uid := "3a9e1c7d-2b4f-4d8e-a6c5-0f1e2d3c4b5a"
	c := runningContainer(t, s, []string{"seq", "1", strconv.Itoa(lines)}, func(spec map[string]any) {
		spec["annotations"] = map[string]any{
			"io.kubernetes.pod.name": "job-pod", "io.kubernetes.pod.namespace": "interop",
			"io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": "seq",
		}
	}, nil)
	if code := c.exitCode(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	path := filepath.Join(textDir, "gomon-"+uid+".prom")
	written := map[string]string{"container_id": c.id, "k8s_pod_uid": uid, "k8s_container_name": "seq",
		"stream": "stdout", "outcome": "written"}
	// read waits (bounded) for a textfile written after since that
	// reports the container's bytes, and returns its families.
	read := func(since time.Time) map[string]*dto.MetricFamily {
		t.Helper()
		var text []byte
		for deadline := time.Now().Add(hangGuard); ; time.Sleep(50 * time.Millisecond) {
			st, err := os.Stat(path)
			if err == nil && st.ModTime().After(since) {
				if text, err = os.ReadFile(path); err == nil {
					p := expfmt.NewTextParser(model.LegacyValidation)
					fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
					if err != nil {
						t.Fatalf("textfile does not parse: %v\n%s", err, text)
					}
					if b, _ := textValue(fams, "gomon_log_bytes_total", written); b == float64(wantBytes) {
						return fams
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no textfile %s since %v with the container's %d bytes (%v):\n%s", path, since, wantBytes, err, text)
			}
		}
	}
	before := read(time.Time{})
	records := map[string]string{"container_id": c.id, "stream": "stdout", "outcome": "written"}
	// A line split across two reads is two records (P and F).
	wantRecords, _ := textValue(before, "gomon_log_records_total", records)
	if wantRecords < lines {
		t.Errorf("before the upgrade: %v records, want at least %d", wantRecords, lines)
	}

	out, err := exec.Command(gomonBinary(t), "upgrade", "--runtime-dir", s.runDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "upgraded") {
		t.Fatalf("gomon upgrade: %s (%v)", out, err)
	}
	t.Logf("gomon upgrade: %s", strings.TrimSpace(string(out)))
	after := read(time.Now())
	if got, _ := textValue(after, "gomon_log_records_total", records); got != wantRecords {
		t.Errorf("after the upgrade: %v records, want %v", got, wantRecords)
	}
	entries, err := os.ReadDir(textDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != filepath.Base(path) {
			t.Errorf("textfile directory holds %s besides the pod's file", e.Name())
		}
	}
}
