package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/oci"
)

// TestMain makes the test binary a child subreaper, as gomon-bench is.
func TestMain(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "become subreaper:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// skipOrFail skips with a loud reason, or fails when GOMON_REQUIRE_ROOT=1.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("GOMON_REQUIRE_ROOT") == "1" {
		t.Fatalf("GOMON_REQUIRE_ROOT=1 but %s", reason)
	}
	t.Skipf("SKIPPED: %s (set GOMON_REQUIRE_ROOT=1 to make this a failure)", reason)
}

// testEnv finds root, runc, conmon, busybox and gomon (GOMON_BINARY or
// ../../../bin/gomon) or skips.
func testEnv(t *testing.T) (*Env, *oci.Bundler) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "test needs root")
	}
	gomon := os.Getenv("GOMON_BINARY")
	if gomon == "" {
		gomon = "../../../bin/gomon"
	}
	gomon, _ = filepath.Abs(gomon)
	tools := map[string]string{"runc": "/usr/sbin/runc", "conmon": "/usr/bin/conmon", "busybox": "/bin/busybox", "gomon": gomon}
	for name, p := range tools {
		if _, err := exec.LookPath(p); err != nil {
			skipOrFail(t, fmt.Sprintf("%s not found at %s", name, p))
		}
	}
	work := t.TempDir()
	env := &Env{Runc: oci.Runc{Path: tools["runc"]}, Conmon: tools["conmon"], Gomon: gomon, WorkDir: work,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	b, err := oci.NewBundler(env.Runc.Path, tools["busybox"], "", filepath.Join(work, "bundler"))
	if err != nil {
		t.Fatal(err)
	}
	return env, b
}

// TestDriversLifecycle runs one container through every driver: create,
// start, exec sync, exit, remove, close; and checks that each monitor
// process is gone afterwards.
func TestDriversLifecycle(t *testing.T) {
	env, bundler := testEnv(t)
	drivers := []Driver{&Gomon{Env: env}, &Conmon{Env: env}, &Bare{Env: env}}
	for _, d := range drivers {
		t.Run(d.Name(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p, err := d.NewPod(ctx, "p-"+d.Name())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := p.Close(ctx); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			mk := func(name string, args ...string) *Container {
				id := fmt.Sprintf("gbtest%d-%s-%s", os.Getpid(), d.Name(), name)
				dir := filepath.Join(env.WorkDir, id)
				c := &Container{ID: id, Name: id, Bundle: filepath.Join(dir, "bundle"), Dir: filepath.Join(dir, "state")}
				if err := os.MkdirAll(c.Dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := bundler.Make(c.Bundle, args...); err != nil {
					t.Fatal(err)
				}
				return c
			}

			// A long-running container: exec into it, then force-remove.
			c := mk("sleep", "/bin/sleep", "3600")
			if err := p.Create(ctx, c); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if c.PID <= 0 || c.Root == "" {
				t.Fatalf("Create left PID %d root %q", c.PID, c.Root)
			}
			if err := env.Runc.Start(ctx, c.Root, c.ID); err != nil {
				t.Fatal(err)
			}
			if err := env.Runc.WaitRunning(ctx, c.Root, c.ID); err != nil {
				t.Fatal(err)
			}
			res, err := p.ExecSync(ctx, c, []string{"/bin/echo", "hi"})
			switch {
			case errors.Is(err, ErrUnsupported):
				t.Logf("exec sync unsupported: %v", err)
			case err != nil:
				t.Fatalf("ExecSync: %v", err)
			case res.ExitCode != 0 || string(res.Stdout) != "hi\n":
				t.Fatalf("ExecSync = %+v, want exit 0 and \"hi\\n\"", res)
			}
			monitors := p.MonitorPIDs()
			if err := p.Remove(ctx, c); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if d.Name() == "conmon" {
				for _, pid := range monitors {
					if !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
						t.Errorf("conmon %d still there after Remove", pid)
					}
				}
			}

			// A short-lived container: its exit is recorded.
			c2 := mk("echo", "/bin/echo", "bye")
			if err := p.Create(ctx, c2); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if err := env.Runc.Start(ctx, c2.Root, c2.ID); err != nil {
				t.Fatal(err)
			}
			if err := p.WaitExit(ctx, c2); err != nil {
				t.Fatalf("WaitExit: %v", err)
			}
			if c2.ExitFile != "" {
				code, err := os.ReadFile(c2.ExitFile)
				if err != nil || strings.TrimSpace(string(code)) != "0" {
					t.Errorf("exit file %s = %q, %v; want 0", c2.ExitFile, code, err)
				}
				log, err := os.ReadFile(c2.LogPath)
				if err != nil || !strings.Contains(string(log), " stdout F bye\n") {
					t.Errorf("log %s = %q, %v; want a `stdout F bye` record", c2.LogPath, log, err)
				}
			}
			if err := p.Remove(ctx, c2); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if _, err := p.MonitorCPU(); err != nil {
				t.Errorf("MonitorCPU: %v", err)
			}
		})
	}
}

// TestGomonExtraEnv: a pod started with ExtraEnv has the variables in its
// daemon's environment (here: the metrics textfile appears, and goes with
// the pod), and the harness's own environment is left as it was.
func TestGomonExtraEnv(t *testing.T) {
	env, _ := testEnv(t)
	dir := t.TempDir()
	g := &Gomon{Env: env, ExtraEnv: []string{"GOMON_METRICS_TEXTFILE_DIR=" + dir, "OTEL_METRIC_EXPORT_INTERVAL=200"}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := g.NewPod(ctx, "p-extraenv")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv("GOMON_METRICS_TEXTFILE_DIR"); ok {
		t.Error("ExtraEnv left in the harness's environment")
	}
	var files []string
	for deadline := time.Now().Add(30 * time.Second); len(files) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		files, _ = filepath.Glob(filepath.Join(dir, "gomon-*.prom"))
	}
	if len(files) != 1 {
		t.Errorf("textfiles %v, want one: ExtraEnv did not reach the daemon", files)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "gomon-*.prom")); len(left) != 0 {
		t.Errorf("textfiles %v left after Close", left)
	}
}
