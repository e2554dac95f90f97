package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runtimeWrapper sits in front of runc for both handlers. Test-host workaround: this machine
// lacks CAP_SYS_RESOURCE, so runc cannot apply the negative oomScoreAdj CRI-O asks for (infra
// containers get -998); on `create` it clamps a negative value in the bundle's config.json to 0.
// Everything else is passed through unchanged with exec.
const runtimeWrapper = `#!/bin/sh
# gomon e2e test-host workaround: clamp a negative oomScoreAdj (needs CAP_SYS_RESOURCE) to 0.
runc=%q
bundle=. create=
prev=
for a in "$@"; do
	case "$prev" in --bundle|-b) bundle=$a ;; esac
	case "$a" in
	create) create=1 ;;
	--bundle=*) bundle=${a#--bundle=} ;;
	esac
	prev=$a
done
if [ -n "$create" ] && [ -f "$bundle/config.json" ]; then
	sed -i 's/"oomScoreAdj":[[:space:]]*-[0-9][0-9]*/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec "$runc" "$@"
`

// monitorWrapper keeps gomon's own log: CRI-O starts the monitor with stderr on /dev/null
// and gomon falls back to stderr when there is no journal (no systemd here). It execs gomon
// in place (same PID, same /proc/<pid>/exe), only redirecting stderr to the suite's gomon.log.
const monitorWrapper = `#!/bin/sh
exec %q "$@" 2>>%q
`

// crioConf is the suite's whole CRI-O configuration; %[n] are filled by writeCRIOConfig.
const crioConf = `# gomon e2e: generated, every path below the suite's temporary directory.
[crio]
root = "%[1]s/root"
runroot = "%[1]s/run"
storage_driver = "%[2]s"
log_dir = "%[1]s/podlogs"
version_file = "%[1]s/run/crio-version"
version_file_persist = "%[1]s/crio-version"
clean_shutdown_file = "%[1]s/clean.shutdown"

[crio.api]
listen = "%[1]s/crio.sock"
stream_address = "127.0.0.1"
stream_port = "0"

[crio.runtime]
default_runtime = "gomon"
drop_infra_ctr = true
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
log_level = "debug"
log_to_journald = false
namespaces_dir = "%[1]s/ns"
pinns_path = "%[3]s"
container_exits_dir = "%[1]s/exits"
container_attach_socket_dir = "%[1]s/attach"
hooks_dir = ["%[1]s/hooks"]
cdi_spec_dirs = ["%[1]s/cdi"]
default_mounts_file = "%[1]s/mounts.conf"
irqbalance_config_file = "%[1]s/irqbalance"
irqbalance_config_restore_file = "disable"
decryption_keys_path = "%[1]s/keys"

[crio.runtime.runtimes.gomon]
runtime_path = "%[4]s"
runtime_type = "pod"
runtime_root = "%[1]s/runc"
monitor_path = "%[5]s"
monitor_cgroup = "pod"

[crio.runtime.runtimes.runc-oci]
runtime_path = "%[4]s"
runtime_type = "oci"
runtime_root = "%[1]s/runc"
monitor_path = "%[6]s"
monitor_cgroup = "pod"

[crio.image]
signature_policy = "%[1]s/policy.json"
pause_image = "docker.io/library/busybox:e2e"
pinned_images = ["docker.io/library/busybox:e2e"]
big_files_temporary_dir = "%[1]s/tmp"

[crio.network]
network_dir = "%[1]s/cni"
plugin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
cni_default_network = "gomon-e2e-lo"

[crio.metrics]
enable_metrics = false

[crio.tracing]
enable_tracing = true
tracing_endpoint = "%[7]s"
tracing_sampling_rate_per_million = 1000000

[crio.nri]
enable_nri = false
`

// cniConf has only the loopback plugin: this machine may only use loopback addresses, so a
// pod with its own network namespace gets just lo.
const cniConf = `{"cniVersion":"1.0.0","name":"gomon-e2e-lo","plugins":[{"type":"loopback"}]}`

// jaegerConf runs Jaeger v2 all-in-one with in-memory storage, OTLP gRPC and the query API on
// loopback ports, without its own metrics endpoint (port 8888 may be taken on a shared host)
// and without tracing itself (it would export to 127.0.0.1:4317 and wait 10 s on shutdown).
const jaegerConf = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 100000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// startJaeger starts Jaeger on free loopback ports and waits for its query API.
func (s *suite) startJaeger(t *testing.T) error {
	t.Helper()
	ports, err := freeLoopbackPorts(3)
	if err != nil {
		return err
	}
	s.otlpAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.queryURL = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	conf := filepath.Join(s.dir, "jaeger.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, jaegerConf, ports[1], ports[2], s.otlpAddr), 0o644); err != nil {
		return fmt.Errorf("write jaeger config: %w", err)
	}
	cmd, err := startProcess(nil, s.jaegerLog, s.jaegerBin, "--config", conf)
	if err != nil {
		return err
	}
	s.jaeger = cmd
	client := &http.Client{Timeout: 2 * time.Second}
	return poll(60*time.Second, 100*time.Millisecond, func() error {
		if exited(cmd) {
			return errors.New("jaeger exited")
		}
		resp, err := client.Get(s.queryURL + "/api/services")
		if err != nil {
			return fmt.Errorf("query api: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("query api: %s", resp.Status)
		}
		return nil
	})
}

// writeCRIOConfig writes crio.conf, the CNI config and the two wrapper scripts.
func (s *suite) writeCRIOConfig() (string, error) {
	for _, d := range []string{"cni", "crio.conf.d", "hooks", "cdi", "podlogs", "tmp", "keys"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return "", fmt.Errorf("make %s: %w", d, err)
		}
	}
	runtime := filepath.Join(s.dir, "runc-wrapper")
	monitor := filepath.Join(s.dir, "gomon-monitor")
	if os.Getenv("GOMON_E2E_DIRECT_MONITOR") == "1" {
		monitor = s.gomon // no log capture: gomon's stderr stays /dev/null
	}
	conf := filepath.Join(s.dir, "crio.conf")
	files := []struct {
		path, content string
		mode          os.FileMode
	}{
		{runtime, fmt.Sprintf(runtimeWrapper, s.runc), 0o755},
		{filepath.Join(s.dir, "gomon-monitor"), fmt.Sprintf(monitorWrapper, s.gomon, s.gomonLog), 0o755},
		{filepath.Join(s.dir, "cni", "10-gomon-e2e-lo.conflist"), cniConf, 0o644},
		{filepath.Join(s.dir, "mounts.conf"), "", 0o644},
		{conf, fmt.Sprintf(crioConf, s.dir, s.driver, s.pinns, runtime, monitor, s.conmon, s.otlpAddr), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.content), f.mode); err != nil {
			return "", fmt.Errorf("write %s: %w", filepath.Base(f.path), err)
		}
	}
	return conf, nil
}

// startCRIO starts CRI-O and waits until `crictl version` answers.
func (s *suite) startCRIO(t *testing.T) error {
	t.Helper()
	conf, err := s.writeCRIOConfig()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.textfileDir(), 0o755); err != nil {
		return fmt.Errorf("make metrics textfile dir: %w", err)
	}
	// CRI-O's environment is the monitor's: the node's default log rate
	// limit (ratelimit_test.go) and the metrics textfile (metrics_test.go).
	env := append(append(s.containersEnv(), e2eNodeRateLimit), s.metricsEnv()...)
	cmd, err := startProcess(env, s.crioLog, s.crioBin, "--config", conf, "--config-dir", filepath.Join(s.dir, "crio.conf.d"),
		"--log-level", "debug")
	if err != nil {
		return err
	}
	s.crio = cmd
	return poll(90*time.Second, 100*time.Millisecond, func() error {
		if exited(cmd) {
			return errors.New("crio exited")
		}
		if _, err := os.Stat(s.crioSock); err != nil {
			return fmt.Errorf("no socket yet: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, _, err := s.crictlRaw(ctx, false, "version")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "cri-o") {
			return fmt.Errorf("unexpected version output %q", out)
		}
		s.crioMinor = runtimeMinor(out)
		return nil
	})
}

// runtimeMinor returns the minor version from `crictl version` output ("RuntimeVersion:  1.36.3"
// gives 36), 0 when there is none.
func runtimeMinor(out string) int {
	for line := range strings.SplitSeq(out, "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "RuntimeVersion:")
		if !ok {
			continue
		}
		parts := strings.Split(strings.TrimSpace(v), ".")
		if len(parts) >= 2 {
			n, _ := strconv.Atoi(parts[1])
			return n
		}
	}
	return 0
}
