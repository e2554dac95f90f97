// Command gomon-bench runs gomon, C conmon and bare runc side by side and
// writes a Markdown report, an SVG chart and the raw samples. It needs
// root, runc, conmon (apt-get install -y conmon) and busybox-static.
//
//	make bench                      # full run (< 10 minutes on 2 cores)
//	make bench BENCH_FLAGS=-quick   # ~1 minute smoke run
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gomon-dev/gomon/bench/internal/suite"
)

func main() {
	var o suite.Options
	var only string
	flag.BoolVar(&o.Quick, "quick", false, "smoke run of about a minute (small samples)")
	flag.StringVar(&o.Gomon, "gomon", "../bin/gomon", "gomon binary")
	flag.StringVar(&o.Conmon, "conmon", "/usr/bin/conmon", "C conmon binary")
	flag.StringVar(&o.Runc, "runc", "/usr/sbin/runc", "runc binary")
	flag.StringVar(&o.Busybox, "busybox", "/bin/busybox", "static busybox for the rootfs")
	flag.StringVar(&o.Loggen, "loggen", "", "static log writer (default: go build ./cmd/loggen with CGO_ENABLED=0)")
	flag.StringVar(&o.OutDir, "out", "results", "output directory")
	flag.StringVar(&o.Prefix, "prefix", "", "output file prefix (default results, or quick with -quick)")
	flag.StringVar(&o.WorkDir, "workdir", "", "parent of the scratch directory (default $TMPDIR)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the scratch directory")
	flag.StringVar(&only, "only", "", "comma-separated measures to run: latency,exec,memory,logs,tracing,neighbour,ratecost,metrics,workingpod,node,upgrade")
	flag.IntVar(&o.Cycles, "cycles", 0, "working pod: create/start/exit/delete cycles (default 1000, 20 with -quick)")
	flag.IntVar(&o.Execs, "execs", 0, "working pod: exec syncs (default 1000, 20 with -quick)")
	flag.DurationVar(&o.Quiet, "quiet", 0, "working pod: quiet time before the last figure (default 1m, 5s with -quick)")
	flag.StringVar(&o.Baseline, "baseline", "", "ratecost: another gomon to compare against (make bench builds commit 836b64a, from before issue 20's log work); empty: left out")
	flag.IntVar(&o.RateCostMiB, "ratecost-mib", 0, "ratecost: MiB per run (default: lines100's size in the logs section); longer runs have less noise")
	flag.IntVar(&o.RateCostRounds, "ratecost-rounds", 0, fmt.Sprintf("ratecost: rounds, one lines100 run per contender each (default %d, 6 with -quick)", suite.RateCostRounds))
	flag.StringVar(&o.RateCostWith, "ratecost-with", suite.RateCostLimit, fmt.Sprintf("ratecost: the contenders, besides the baseline: %s (no limit and a limit far above the load), %s (gomon exporting spans; the baseline too), %s (tracing on, metrics off and on)", suite.RateCostLimit, suite.RateCostTracing, suite.RateCostMetrics))
	verbose := flag.Bool("v", false, "log every sample")
	flag.Parse()
	if only != "" {
		o.Only = strings.Split(only, ",")
	}
	if o.Prefix == "" {
		o.Prefix = "results"
		if o.Quick {
			o.Prefix = "quick"
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := suite.Execute(ctx, o, log)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gomon-bench:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s/%s.md, .svg and .json\n", o.OutDir, o.Prefix)
}
