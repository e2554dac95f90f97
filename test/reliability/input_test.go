package reliability

// Bad input: malformed trace metadata, odd IDs and paths, huge lists. Each
// gets a clear error or is harmless, and the daemon keeps serving.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containers/conmon-rs/pkg/client"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// rawPropagator injects fixed entries into the request metadata, whatever
// the span: it lets the real client send malformed trace context.
type rawPropagator struct{ entries map[string]string }

func (p rawPropagator) Inject(_ context.Context, c propagation.TextMapCarrier) {
	for k, v := range p.entries {
		c.Set(k, v)
	}
}
func (p rawPropagator) Extract(ctx context.Context, _ propagation.TextMapCarrier) context.Context {
	return ctx
}
func (p rawPropagator) Fields() []string { return nil }

func TestMalformedTraceMetadata(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	cfg := serverConfig(t, runcPath(t))
	// The client sends metadata only to a server started with tracing; the
	// collector address is a closed loopback port.
	cfg.Tracing = &client.Tracing{Enabled: true, Endpoint: "http://127.0.0.1:9"}
	s := startGomon(t, cfg)
	prev := otel.GetTextMapPropagator()
	t.Cleanup(func() { otel.SetTextMapPropagator(prev) })
	// setMetadata injects only when the context carries a span.
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled,
	}))
	many := map[string]string{}
	for i := range 10000 {
		many["k"+strconv.Itoa(i)] = strings.Repeat("v", 20)
	}
	tests := []struct {
		name    string
		entries map[string]string
	}{
		{"garbage traceparent", map[string]string{"traceparent": "garbage"}},
		{"all-zero ids", map[string]string{"traceparent": "00-00000000000000000000000000000000-0000000000000000-01"}},
		{"bad version", map[string]string{"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		{"1 MB traceparent", map[string]string{"traceparent": strings.Repeat("f", 1<<20)}},
		{"garbage tracestate and baggage", map[string]string{
			"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"tracestate":  "===,,,\x00\xff", "baggage": "%%%;;;=\xff"}},
		{"empty key and NUL", map[string]string{"": "", "a\x00b": "c\x00d"}},
		{"10000 entries", many},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			otel.SetTextMapPropagator(rawPropagator{tt.entries})
			cctx, cancel := context.WithTimeout(ctx, hangGuard)
			defer cancel()
			if _, err := s.client.Version(cctx, &client.VersionConfig{}); err != nil {
				t.Errorf("Version with %s: %v", tt.name, err)
			}
			res, err := s.client.ExecSyncContainer(cctx, &client.ExecSyncConfig{ID: "no-such", Command: []string{"true"}})
			if err == nil && res.ExitCode >= 0 {
				t.Errorf("ExecSync of an unknown container with %s: exit code %d, want an error or a negative code", tt.name, res.ExitCode)
			}
			otel.SetTextMapPropagator(prev)
			s.alive(t)
		})
	}
	otel.SetTextMapPropagator(prev)
	c := running(t, s, nil, "true")
	if code := c.exitCode(t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// badCreate is one malformed CreateContainer request.
type badCreate struct {
	name string
	mod  func(t *testing.T, c *ctr, r *client.CreateContainerConfig)
	// refuse: gomon itself should refuse it before running the runtime
	// (the finding if it does not is in the test's skip message).
	refuse bool
	// harmless: it may succeed; then the container must run normally.
	harmless bool
}

func badCreates(t *testing.T) []badCreate {
	setID := func(id string) func(*testing.T, *ctr, *client.CreateContainerConfig) {
		return func(_ *testing.T, c *ctr, r *client.CreateContainerConfig) { r.ID, c.id = id, id }
	}
	return []badCreate{
		{name: "empty id", mod: setID(""), refuse: true},
		{name: "id ../x", mod: setID("../x"), refuse: true},
		{name: "id a/b", mod: setID("a/b"), refuse: true},
		{name: "id ..", mod: setID(".."), refuse: true},
		{name: "id --help", mod: setID("--help"), refuse: true},
		{name: "id with space and flag", mod: setID("x --root=/tmp"), refuse: true},
		{name: "id with NUL", mod: setID("x\x00y"), refuse: true},
		{name: "1 MB id", mod: setID(strings.Repeat("a", 1<<20)), refuse: true},
		{name: "empty bundle", mod: func(_ *testing.T, _ *ctr, r *client.CreateContainerConfig) { r.BundlePath = "" }, refuse: true},
		{name: "relative bundle", mod: func(_ *testing.T, _ *ctr, r *client.CreateContainerConfig) { r.BundlePath = "bundle" }, refuse: true},
		{name: "missing bundle", mod: func(_ *testing.T, _ *ctr, r *client.CreateContainerConfig) { r.BundlePath = "/nonexistent/bundle" }},
		{name: "relative exit path", mod: func(_ *testing.T, _ *ctr, r *client.CreateContainerConfig) {
			r.ExitPaths = append(r.ExitPaths, "gomon-rel-exit")
		}, refuse: true},
		{name: "relative log path", mod: func(_ *testing.T, _ *ctr, r *client.CreateContainerConfig) {
			r.LogDrivers[0].Path = "gomon-rel-ctr.log"
		}, refuse: true},
		{name: "traversing exit path", mod: func(_ *testing.T, c *ctr, r *client.CreateContainerConfig) {
			r.ExitPaths = []string{filepath.Join(c.dir, "sub", "..", "exit")}
		}, harmless: true},
		{name: "exit path in a missing dir", mod: func(_ *testing.T, c *ctr, r *client.CreateContainerConfig) {
			r.ExitPaths = append(r.ExitPaths, filepath.Join(c.dir, "missing", "exit"))
		}, harmless: true},
		{name: "10000 exit paths", mod: func(_ *testing.T, c *ctr, r *client.CreateContainerConfig) {
			for i := range 10000 {
				r.ExitPaths = append(r.ExitPaths, filepath.Join(c.dir, "exit-"+strconv.Itoa(i)))
			}
		}, harmless: true},
	}
}

// TestBadCreateInputIsHarmless: every malformed create gets a clear error
// or works, writes nothing outside the paths it names, and the daemon
// keeps serving.
func TestBadCreateInputIsHarmless(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Chdir(t.TempDir()) // the daemon inherits it: relative paths land there
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(s.pid), "cwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range badCreates(t) {
		t.Run(tt.name, func(t *testing.T) {
			c := newCtr(t, nil, "true")
			r := c.request()
			tt.mod(t, c, r)
			err := createCtr(t, s, c, func(req *client.CreateContainerConfig) { *req = *r })
			msg := fmt.Sprint(err)
			t.Logf("CreateContainer: %.300s", msg)
			if err == nil {
				if !tt.harmless {
					t.Logf("accepted")
				}
				c.runc(t, s, "start", c.id)
				if code := c.exitCode(t); code != 0 {
					t.Errorf("exit code %d", code)
				}
			}
			for _, rel := range []string{"gomon-rel-exit", "gomon-rel-ctr.log"} {
				p := filepath.Join(cwd, rel)
				if _, err := os.Stat(p); err == nil {
					t.Logf("a relative path landed in gomon's cwd: %s (finding, see TestBadCreateInputRefused)", p)
					_ = os.Remove(p)
				}
			}
			if tt.name == "10000 exit paths" && err == nil {
				if _, err := waitForFile(filepath.Join(c.dir, "exit-9999"), hangGuard); err != nil {
					t.Error(err)
				}
				left, _ := filepath.Glob(filepath.Join(c.dir, "exit-*"))
				if len(left) != 10000 {
					t.Errorf("%d of 10000 exit files written", len(left))
				}
			}
			s.alive(t)
		})
	}
	checkServing(t, s)
}

// TestBadCreateInputRefused: what gomon should refuse itself, before it
// runs the runtime (which may or may not catch it, and, for an ID like
// "--help", reads it as a flag).
func TestBadCreateInputRefused(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Chdir(t.TempDir()) // the daemon inherits it: relative paths land there
	fr := newFaultRuntime(t)
	s := startGomon(t, serverConfig(t, fr.path))
	var accepted []string
	for _, tt := range badCreates(t) {
		if !tt.refuse {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			c := newCtr(t, nil, "true")
			r := c.request()
			tt.mod(t, c, r)
			calls := len(readInvocationsIfAny(t, fr))
			err := createCtr(t, s, c, func(req *client.CreateContainerConfig) { *req = *r })
			ran := len(readInvocationsIfAny(t, fr)) > calls
			if err == nil || ran {
				accepted = append(accepted, tt.name)
				t.Logf("not refused by gomon: create error %.200v, runtime ran: %v", err, ran)
			}
		})
	}
	if len(accepted) > 0 {
		t.Errorf("not refused before the runtime ran: %s", strings.Join(accepted, "; "))
	}
}

func readInvocationsIfAny(t *testing.T, fr *faultRuntime) []invocation {
	t.Helper()
	if _, err := os.Stat(filepath.Join(fr.dir, "calls.jsonl")); err != nil {
		return nil
	}
	return fr.calls(t)
}

// TestBadExecAndAttachInput: odd IDs and paths in ExecSync and Attach.
func TestBadExecAndAttachInput(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Chdir(t.TempDir()) // the daemon inherits it: relative paths land there
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := running(t, s, nil, "sleep", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	for _, id := range []string{"", "../x", "a/b", "--help", strings.Repeat("a", 1<<20)} {
		res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: id, Command: []string{"true"}})
		if err == nil && res.ExitCode >= 0 {
			t.Errorf("ExecSync on container %.20q: exit code %d, want an error or a negative code", id, res.ExitCode)
		}
	}
	if _, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id}); err == nil {
		t.Errorf("ExecSync with an empty command: no error")
	}
	if err := s.client.AttachContainer(ctx, &client.AttachConfig{ID: c.id, SocketPath: ""}); err == nil {
		t.Errorf("attach with an empty socket path: no error")
	}
	s.alive(t)
	res, err := s.client.ExecSyncContainer(ctx, &client.ExecSyncConfig{ID: c.id, Command: []string{"echo", "ok"}})
	if err != nil || string(res.Stdout) != "ok\n" {
		t.Fatalf("exec after bad input: %+v %v", res, err)
	}
}

// TestRelativeAttachPathRefused: an attach socket path must be absolute;
// a relative one would be bound in whatever directory gomon runs in.
func TestRelativeAttachPathRefused(t *testing.T) {
	requireRoot(t)
	checkNoLeftovers(t)
	t.Chdir(t.TempDir()) // the daemon inherits it: relative paths land there
	s := startGomon(t, serverConfig(t, runcPath(t)))
	c := running(t, s, nil, "sleep", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	err := s.client.AttachContainer(ctx, &client.AttachConfig{ID: c.id, SocketPath: "relative-attach",
		Streams: client.AttachStreams{Stdout: &client.Out{WriteCloser: discard{}}}})
	cwd, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(s.pid), "cwd"))
	if _, serr := os.Stat(filepath.Join(cwd, "relative-attach")); serr == nil {
		t.Errorf("the relative attach socket path was bound in gomon's cwd %s", cwd)
	}
	if err == nil || !strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("attach with a relative socket path: %v, want an invalid-argument error", err)
	}
	s.alive(t)
}
