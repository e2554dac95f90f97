package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// crictlArgs are the global flags of every crictl call: the suite's socket, a bounded
// timeout, and tracing into the suite's Jaeger when traced is set.
func (s *suite) crictlArgs(traced bool) []string {
	args := []string{
		"--config", filepath.Join(s.dir, "crictl.yaml"),
		"--runtime-endpoint", "unix://" + s.crioSock,
		"--image-endpoint", "unix://" + s.crioSock,
		"--timeout", s.crictlTimeout,
	}
	if traced {
		args = append(args, "--enable-tracing", "--tracing-endpoint", s.otlpAddr,
			"--tracing-sampling-rate-per-million", "1000000")
	}
	return args
}

// crictlRaw runs crictl and returns its stdout and stderr separately.
func (s *suite) crictlRaw(ctx context.Context, traced bool, args ...string) (string, string, error) {
	if _, err := os.Stat(filepath.Join(s.dir, "crictl.yaml")); err != nil {
		conf := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", s.crioSock, s.crioSock)
		if err := os.WriteFile(filepath.Join(s.dir, "crictl.yaml"), []byte(conf), 0o644); err != nil {
			return "", "", fmt.Errorf("write crictl.yaml: %w", err)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.crictlBin, append(s.crictlArgs(traced), args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("crictl %s: %w\nstderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String(), err
}

// crictl runs one traced crictl step, records its wall time under (step, column) and fails
// the test (dumping the logs) when it does not succeed.
func (s *suite) crictl(t *testing.T, column, step string, args ...string) string {
	t.Helper()
	out, _, err := s.crictlStep(t, column, step, args...)
	if err != nil {
		s.dumpLogs(t)
		t.Fatalf("%s: %v", step, err)
	}
	return strings.TrimSpace(out)
}

// crictlStep is crictl without failing: it returns stdout, stderr and the error.
func (s *suite) crictlStep(t *testing.T, column, step string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, errOut, err := s.crictlRaw(ctx, true, args...)
	d := time.Since(start)
	status := stepStatus(err)
	s.times.record(step, column, d, status)
	t.Logf("%-14s %-22s %8s %s", column, step, d.Round(100*time.Microsecond), status)
	return out, errOut, err
}

// stepStatus is the timing table's note for a step's outcome.
func stepStatus(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ee):
		return fmt.Sprintf("(exit %d)", ee.ExitCode())
	default:
		return "(error)"
	}
}

// inspectJSON runs `crictl <verb> -o json id` (untimed) and decodes it into v.
func (s *suite) inspectJSON(t *testing.T, v any, verb, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _, err := s.crictlRaw(ctx, false, verb, "-o", "json", id)
	if err != nil {
		t.Fatalf("%s %s: %v", verb, id, err)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode %s output: %v\n%s", verb, err, out)
	}
}

// timings collects each step's wall times per column (handler and pod kind).
type timings struct {
	mu      sync.Mutex
	steps   []string
	columns []string
	samples map[[2]string][]time.Duration
	notes   map[[2]string]string // last non-ok status
}

func newTimings() *timings {
	return &timings{samples: map[[2]string][]time.Duration{}, notes: map[[2]string]string{}}
}

// record stores one measurement of (step, column).
func (tm *timings) record(step, column string, d time.Duration, status string) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if !contains(tm.steps, step) {
		tm.steps = append(tm.steps, step)
	}
	if !contains(tm.columns, column) {
		tm.columns = append(tm.columns, column)
	}
	k := [2]string{step, column}
	tm.samples[k] = append(tm.samples[k], d)
	if status != "ok" {
		tm.notes[k] = status
	}
}

// cell renders the median of a cell's samples, with its status note.
func (tm *timings) cell(k [2]string) string {
	ds := append([]time.Duration(nil), tm.samples[k]...)
	if len(ds) == 0 {
		return "-"
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	med := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		med = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	c := fmt.Sprintf("%.1f ms", float64(med.Microseconds())/1000)
	if n := tm.notes[k]; n != "" {
		c += " " + n
	}
	return c
}

// table renders the timings (median per cell) as an aligned text table, columns sorted.
func (tm *timings) table() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	cols := append([]string(nil), tm.columns...)
	sort.Strings(cols)
	rows := [][]string{append([]string{"step"}, cols...)}
	for _, st := range tm.steps {
		r := []string{st}
		for _, c := range cols {
			r = append(r, tm.cell([2]string{st, c}))
		}
		rows = append(rows, r)
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(&b, "  %*s", width[i], c)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
