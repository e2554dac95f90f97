package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gomon-dev/gomon/bench/internal/driver"
	"github.com/gomon-dev/gomon/bench/internal/oci"
)

// Options is the command line of gomon-bench.
type Options struct {
	Quick   bool
	Gomon   string
	Conmon  string
	Runc    string
	Busybox string
	Loggen  string // static writer; built with `go build` when empty
	OutDir  string
	Prefix  string // output file name prefix ("results", "quick")
	WorkDir string // parent of the scratch dir
	Keep    bool   // keep the scratch dir
	Only    []string
	// Cycles, Execs and Quiet override the working pod's counts and
	// quiet time when set.
	Cycles, Execs int
	Quiet         time.Duration
	// Baseline is a gomon from before issue 20's log work for the
	// ratecost measure; empty to leave that contender out.
	Baseline string
	// RateCostRounds overrides the ratecost measure's rounds when set,
	// RateCostMiB the size of each of its runs.
	RateCostRounds int
	RateCostMiB    int
	// RateCostWith is the ratecost measure's contender set (see
	// Config.RateCostWith).
	RateCostWith string
}

// Execute checks the prerequisites, runs the benchmark and writes
// <OutDir>/<Prefix>.{md,svg,json}.
func Execute(ctx context.Context, o Options, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("gomon-bench needs root (runc containers)")
	}
	for name, p := range map[string]string{"gomon": o.Gomon, "conmon": o.Conmon, "runc": o.Runc, "busybox": o.Busybox} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s not usable at %q (install conmon with `apt-get install -y conmon`, build gomon with `make build`): %w", name, p, err)
		}
	}
	gomon, err := filepath.Abs(o.Gomon)
	if err != nil {
		return fmt.Errorf("resolve gomon path: %w", err)
	}
	// Daemonised monitors and bare container inits become our children, so
	// we can reap them, read their CPU time at exit and kill leftovers.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	work, err := os.MkdirTemp(o.WorkDir, "gomon-bench-")
	if err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}
	defer func() {
		if o.Keep {
			log.Info("keeping work dir", "path", work)
			return
		}
		if rerr := os.RemoveAll(work); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove work dir: %w", rerr))
		}
	}()
	// Private copies: the page sharing behind PSS/USS must not depend on
	// other users of the same binaries on a shared machine. (conmon's
	// shared libraries stay shared with everyone; gomon is static.)
	binDir := filepath.Join(work, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("create bin dir: %w", err)
	}
	conmon := filepath.Join(binDir, "conmon")
	if err := oci.CopyExecutable(o.Conmon, conmon); err != nil {
		return err
	}
	if err := oci.CopyExecutable(gomon, filepath.Join(binDir, "gomon")); err != nil {
		return err
	}
	versionOf := map[string]string{"gomon": gomon, "conmon": o.Conmon}
	gomon = filepath.Join(binDir, "gomon")
	baseline := ""
	if o.Baseline != "" {
		src, err := filepath.Abs(o.Baseline)
		if err != nil {
			return fmt.Errorf("resolve baseline path: %w", err)
		}
		baseline = filepath.Join(binDir, "gomon-baseline")
		if err := oci.CopyExecutable(src, baseline); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		versionOf["baseline"] = src
	}
	loggenBin := o.Loggen
	if loggenBin == "" {
		loggenBin = filepath.Join(work, "loggen")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", loggenBin, "github.com/gomon-dev/gomon/bench/cmd/loggen")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build loggen (run from the bench module or pass -loggen): %w: %s", err, out)
		}
	}
	golisten := filepath.Join(binDir, "golisten")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", golisten, "github.com/gomon-dev/gomon/bench/cmd/golisten")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build golisten (run from the bench module): %w: %s", err, out)
	}
	params := FullParams()
	if o.Quick {
		params = QuickParams()
	}
	if o.Cycles > 0 {
		params.WorkCycles = o.Cycles
	}
	if o.Execs > 0 {
		params.WorkExecs = o.Execs
	}
	if o.Quiet > 0 {
		params.WorkQuiet = o.Quiet
	}
	if o.RateCostRounds > 0 {
		params.RateCostReps = o.RateCostRounds
	}
	if o.RateCostMiB > 0 {
		params.RateCostBytes = int64(o.RateCostMiB) << 20
	}
	only := map[string]bool{}
	for _, s := range o.Only {
		only[s] = true
	}
	cfg := Config{
		Params: params,
		Env: &driver.Env{
			Runc: oci.Runc{Path: o.Runc}, Conmon: conmon, Gomon: gomon,
			WorkDir: work, Logger: log,
		},
		Busybox:      o.Busybox,
		Loggen:       loggenBin,
		Golisten:     golisten,
		Baseline:     baseline,
		RateCostWith: o.RateCostWith,
		Logger:       log,
		Only:         only,
		Sources:      versionOf,
	}
	res, runErr := Run(ctx, cfg)
	if res == nil {
		return runErr
	}
	if runErr != nil {
		// Keep what was measured, but say so loudly.
		log.Error("run failed; writing partial results", "err", runErr)
	}
	if err := write(o, res); err != nil {
		return errors.Join(runErr, err)
	}
	if res.RateCost != nil {
		// The verdicts the ratecost measure exists for, also on the terminal.
		for _, l := range res.RateCost.VerdictLines() {
			fmt.Println(l)
		}
	}
	return runErr
}

// write stores the report, chart and raw samples.
func write(o Options, res *Results) error {
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return fmt.Errorf("create output dir: %w", err)
	}
	base := filepath.Join(o.OutDir, o.Prefix)
	md := res.Doc(o.Quick).Markdown()
	md = append(md, fmt.Sprintf("\n![chart](%s.svg)\n", o.Prefix)...)
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	for _, f := range []struct {
		ext  string
		data []byte
	}{{".md", md}, {".svg", res.Chart().SVG()}, {".json", raw}} {
		if err := os.WriteFile(base+f.ext, f.data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", base+f.ext, err)
		}
	}
	return nil
}
