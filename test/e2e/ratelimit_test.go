package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The log rate limit through CRI-O. The node default comes from the environment gomon
// inherits from CRI-O (startCRIO sets e2eNodeRateLimit: far above anything the suite writes,
// so every other container runs through the limiter without losing a byte). A pod's
// io.gomon.* annotations need no CRI-O setting: CRI-O copies a sandbox's annotations into
// each of its containers' OCI specs (internal/factory/container's SpecAddAnnotations), and
// its allowed_annotations only gates CRI-O's own experimental annotations, which it lists
// (naming any other there makes CRI-O refuse its configuration).
const (
	e2eNodeRateLimit = "GOMON_LOG_RATE_LIMIT=1GiB/s"
	// floodSize bytes of 100-byte lines, as fast as the container can.
	floodSize   = 8 << 20
	floodScript = `yes 012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678 | head -c %d; exit 0`
	floodRate   = 64 << 10 // the pod's annotation, with the same burst
)

var e2eMarker = regexp.MustCompile(`(?m)^gomon: (\d+) bytes dropped by the log rate limit\n`)

// rateLimit runs a pod annotated with a 64 KiB/s limit whose container floods its stdout:
// `crictl logs` shows the marker lines, and what they report plus what is left is what the
// container wrote.
func (s *suite) rateLimit(t *testing.T) {
	col := "gomon/rate-limit"
	name := "gomon-rate-limit"
	podJSON := s.writeJSON(t, name+"-pod.json", map[string]any{
		"metadata": map[string]any{"name": name, "namespace": "gomon-e2e", "uid": name + "-uid", "attempt": 0},
		"hostname": name, "log_directory": filepath.Join(s.dir, "podlogs", name),
		"annotations": map[string]string{
			"io.gomon.log.rate-limit": "64KiB/s",
			"io.gomon.log.rate-burst": "64KiB",
		},
		"linux": map[string]any{
			"cgroup_parent":    s.cgroupParent,
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2, "pid": 1}},
		},
	})
	ctrJSON := s.writeJSON(t, name+"-flood.json", map[string]any{
		"metadata": map[string]any{"name": "flood"},
		"image":    map[string]any{"image": image},
		"command":  []string{"/bin/sh", "-c", fmt.Sprintf(floodScript, floodSize)},
		"log_path": "flood.log",
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"network": 2, "pid": 1},
		}},
	})
	pod := s.crictl(t, col, "runp", "runp", podJSON)
	s.gomonCreates++
	// The node default reached the pod's gomon through CRI-O's environment.
	if pids := s.gomonsFor(pod); len(pids) != 1 {
		t.Errorf("want one gomon for pod %s, found %v", pod, pids)
	} else if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pids[0])); err != nil ||
		!slices.Contains(strings.Split(string(env), "\x00"), e2eNodeRateLimit) {
		t.Errorf("gomon %d's environment lacks %s from CRI-O's (%v)", pids[0], e2eNodeRateLimit, err)
	}
	ctr := s.crictl(t, col, "create", "create", "--no-pull", pod, ctrJSON, podJSON)
	s.crictl(t, col, "start", "start", ctr)
	s.waitExited(t, ctr)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, err := s.crictlRaw(ctx, false, "logs", ctr)
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	var reported, markers int
	for _, m := range e2eMarker.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		reported += n
		markers++
	}
	// A marker that follows a chunk cut mid-line comes after a line break of its own.
	kept := len(e2eMarker.ReplaceAllString(out, ""))
	t.Logf("crictl logs: %d bytes kept, %d markers report %d bytes dropped", kept, markers, reported)
	switch {
	case markers == 0:
		s.dumpLogs(t)
		t.Fatalf("no rate limit marker in the log of a container flooding under the pod's 64 KiB/s annotation (%d bytes)", len(out))
	case kept+reported < floodSize || kept+reported > floodSize+markers:
		t.Errorf("kept %d + dropped %d != %d written (give or take a line break per marker)", kept, reported, floodSize)
	case reported < floodSize/2:
		t.Errorf("only %d of %d bytes dropped under 64 KiB/s", reported, floodSize)
	}
	if os.Getenv("GOMON_E2E_EXPECT_TRACES") == "1" {
		s.checkRateLimitSpan(t, ctr)
	}
	s.crictl(t, col, "rm", "rm", ctr)
	s.crictl(t, col, "stopp", "stopp", pod)
	s.crictl(t, col, "rmp", "rmp", pod)

	// gomon said it applies the node default, where its log is kept: CRI-O 1.36 starts pod
	// monitors with --log-driver none unless monitor_env sets LOG_DRIVER.
	b, err := os.ReadFile(s.gomonLog)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if s.crioMinor < 36 && os.Getenv("GOMON_E2E_DIRECT_MONITOR") != "1" && !strings.Contains(string(b), "log rate limit for every container") {
		t.Errorf("gomon.log does not show the node default %s from CRI-O's environment", e2eNodeRateLimit)
	}
}

// checkRateLimitSpan finds the flooding container's stdout read_loop span in Jaeger: it counts
// the dropped bytes and has the events of the drop episode's start and end.
func (s *suite) checkRateLimitSpan(t *testing.T, ctr string) {
	t.Helper()
	var last string
	err := poll(30*time.Second, time.Second, func() error {
		trs, err := s.traces(serviceGomon)
		if err != nil {
			return err
		}
		for _, tr := range trs {
			for _, sp := range tr.Spans {
				tags := map[string]any{}
				for _, kv := range sp.Tags {
					tags[kv.Key] = kv.Value
				}
				if sp.OperationName != "read_loop" || tags["container_id"] != ctr || tags["stream"] != "stdout" {
					continue
				}
				var events []string
				for _, l := range sp.Logs {
					for _, f := range l.Fields {
						if f.Key == "event" {
							events = append(events, fmt.Sprint(f.Value))
						}
					}
				}
				last = fmt.Sprintf("rate_limited_bytes=%v events=%v", tags["rate_limited_bytes"], events)
				dropped, _ := tags["rate_limited_bytes"].(float64)
				if dropped > 0 && slices.Contains(events, "log_rate_limit.dropping") && slices.Contains(events, "log_rate_limit.resumed") {
					return nil
				}
				return errors.New(last)
			}
		}
		return errors.New("no read_loop span of the container yet")
	})
	if err != nil {
		t.Errorf("the flooding container's read_loop span in Jaeger: %v", err)
		return
	}
	t.Logf("read_loop span: %s", last)
}
