package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Metrics through CRI-O (README.md, "Metrics"): CRI-O runs with
// GOMON_METRICS_TEXTFILE_DIR in its environment, as an operator would set
// it on CRI-O's service, and passes it on to every pod's gomon; the
// textfile then carries the pod's identity as CRI-O wrote it into the
// bundles and the figures of what the lifecycle did.

// metricsInterval is the export interval of the e2e daemons.
const metricsInterval = "300"

// metricsEnv is what CRI-O gets in its environment for gomon's metrics.
func (s *suite) metricsEnv() []string {
	return []string{"GOMON_METRICS_TEXTFILE_DIR=" + s.textfileDir(), "OTEL_METRIC_EXPORT_INTERVAL=" + metricsInterval}
}

func (s *suite) textfileDir() string { return filepath.Join(s.dir, "textfile") }

// sampleLine is one sample of the Prometheus text format.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$`)

// textSample returns the value of the sample of metric whose labels include
// want (values without quotes or escapes, as the e2e's are).
func textSample(text, metric string, want map[string]string) (float64, bool) {
next:
	for _, line := range strings.Split(text, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil || m[1] != metric {
			continue
		}
		for k, v := range want {
			if !strings.Contains(","+m[2]+",", ","+k+`="`+v+`",`) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(m[3], 64)
		return v, err == nil
	}
	return 0, false
}

// checkMetrics waits (untimed) for the pod's textfile to show what the
// writer container did: its stdout and stderr bytes, one exec sync that
// exited 0 and one that exited 3, labelled with the pod's name, namespace,
// UID and the container's name.
func (s *suite) checkMetrics(t *testing.T, podName, ctr string, stdoutBytes, stderrBytes int) {
	t.Helper()
	uid := podName + "-uid"
	path := filepath.Join(s.textfileDir(), "gomon-"+uid+".prom")
	ident := map[string]string{"k8s_pod_name": podName, "k8s_namespace_name": "gomon-e2e", "k8s_pod_uid": uid,
		"k8s_container_name": "writer", "container_id": ctr}
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
	checks := []struct {
		what, metric string
		labels       map[string]string
		want         float64
	}{
		{"stdout bytes written", "gomon_log_bytes_total", with("stream", "stdout", "outcome", "written"), float64(stdoutBytes)},
		{"stderr bytes written", "gomon_log_bytes_total", with("stream", "stderr", "outcome", "written"), float64(stderrBytes)},
		{"exec syncs exiting 0", "gomon_exec_sync_duration_seconds_count", with("outcome", "exit_zero"), 1},
		{"exec syncs exiting non-zero", "gomon_exec_sync_duration_seconds_count", with("outcome", "exit_nonzero"), 1},
	}
	var text string
	err := poll(20*time.Second, 100*time.Millisecond, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text = string(b)
		for _, c := range checks {
			if got, ok := textSample(text, c.metric, c.labels); !ok || got != c.want {
				return fmt.Errorf("%s: %v (present %v), want %v", c.what, got, ok, c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("metrics textfile %s: %v\n%s", path, err, shorten(text))
	}
}

// checkTextfileGone checks that the pod's gomon removed its textfile when
// it shut down with the pod.
func (s *suite) checkTextfileGone(t *testing.T, podName string) {
	t.Helper()
	path := filepath.Join(s.textfileDir(), "gomon-"+podName+"-uid.prom")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("metrics textfile %s left after the pod was removed: %v", path, err)
	}
}
