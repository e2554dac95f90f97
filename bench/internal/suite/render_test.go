package suite

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gomon-dev/gomon/bench/internal/procfs"
)

func TestTargetVerdict(t *testing.T) {
	aimed := atMost(10, "x")
	aimed.aim = func(v float64) bool { return v <= 5.5 }
	cases := []struct {
		name string
		t    *target
		v    float64
		want string
	}{
		{name: "no target", t: nil, v: 1, want: "—"},
		{name: "at most met", t: atMost(1.05, "x"), v: 1.05, want: "met"},
		{name: "at most missed", t: atMost(1.05, "x"), v: 1.06, want: "missed"},
		{name: "at least met", t: atLeast(2, "x"), v: 2.5, want: "met"},
		{name: "at least missed", t: atLeast(2, "x"), v: 1.9, want: "missed"},
		{name: "no value", t: atLeast(2, "x"), v: math.NaN(), want: "n/a"},
		{name: "aim missed", t: aimed, v: 9, want: "met (aim missed)"},
		{name: "aim met", t: aimed, v: 5, want: "met"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.verdict(tc.v); got != tc.want {
				t.Fatalf("verdict(%v) = %q, want %q", tc.v, got, tc.want)
			}
		})
	}
}

func TestDocRendersEverySection(t *testing.T) {
	r := &Results{
		Machine:       Machine{Date: time.Unix(0, 0), NProc: 2},
		Latency:       map[string][]float64{lGomon: {10, 12}, lConmon: {20}, lRunc: {10}},
		LatencyCreate: map[string][]float64{lGomon: {5}},
		Exec:          map[string][]float64{lConmon: {3}, lRunc: {2}},
		ExecNA:        map[string]string{lGomon: "not implemented"},
		Memory: []MemoryResult{
			{Scenario: Scenario{1, 1}, Mem: map[string]procfs.Memory{lGomon: {RSS: 4096, USS: 1000}, lConmon: {RSS: 2048, USS: 900}}, Procs: map[string]int{lGomon: 1, lConmon: 1}},
			{Scenario: Scenario{1, 11}, Mem: map[string]procfs.Memory{lGomon: {RSS: 5000, USS: 1500}, lConmon: {RSS: 20000, USS: 3000}}, Procs: map[string]int{lGomon: 1, lConmon: 11}},
		},
		Logs: []LogResult{{Pattern: "lines100", Bytes: 1 << 20,
			MBps:     map[string][]float64{lGomon: {200}, lConmon: {100}, lNoSync: {80}, lRunc: {400}, lRelay: {500}},
			CPUPerGB: map[string][]float64{lGomon: {1}, lConmon: {2}, lNoSync: {2.5}, lRelay: {0.5}}, CPUTicksPerGB: map[string][]float64{},
			Errors: map[string][]string{lConmon: {"short"}}, Records: map[string]int64{}}},
		Tracing: &TracingResult{Latency: map[string][]float64{}, Exec: map[string][]float64{}, Memory: map[string]procfs.Memory{},
			LogBytes: 1 << 20, LogMBps: map[string][]float64{lGomon: {400}, lTrace: {360}}, LogCPUPerGB: map[string][]float64{lGomon: {1}, lTrace: {1.1}}},
		Upgrade: &UpgradeResult{Reps: 3, PerPod: []int{1, 10},
			PauseMs:   map[int][]float64{1: {9, 8, 12}, 10: {60, 40, 70}},
			CommandMs: map[int][]float64{1: {15, 14, 16}, 10: {80, 60, 90}}},
	}
	md := string(r.Doc(false).Markdown())
	for _, want := range []string{
		"| create-to-running, median | 11.00 | 20.00 | 10.00 | 0.55× | 1.10× | gomon/runc ≤ 1.05 | missed |",
		"| exec sync `echo hello`, median | n/a | 3.00 | 2.00 | n/a | n/a | gomon/runc ≤ 1.05 | n/a |",
		"gomon: n/a — not implemented",
		"| USS growth, KiB | 50.00 | 210.0 | 0.24× | gomon < 100 KiB | met |",
		"| lines100, 1 MiB: MB/s, median | 200.0 | 100.0 | 80.00 | 400.0 | 500.0 | 2.00× | 2.50× | 0.50× | 0.40× | gomon/conmon ≥ 2 | invalid: verification failed |",
		"| lines100, 1 MiB: MB/s against bare runc | 200.0 |  |  | 400.0 | 500.0 |  |  | 0.50× | 0.40× | gomon/runc ≥ 0.7 | invalid: verification failed |",
		"| lines100, 1 MiB: monitor CPU s/GB, median | 1.00 | 2.00 | 2.50 | n/a | 0.50 | 0.50× | 0.40× | n/a | 2.00× | gomon/conmon ≤ 0.5 | invalid: verification failed |",
		"VERIFICATION FAILED: conmon: 1 of 1 runs failed (short)",
		"received NO export request",
		"| log lines100, 1 MiB: MB/s, median | 400.0 | 360.0 | 0.90× | on/off ≥ 0.95 | missed |",
		"| log lines100, 1 MiB: monitor CPU s/GB, median | 1.00 | 1.10 | 1.10× | — | — |",
		"| 1 | 9.00 | 8.00 | 12.00 | 15.00 | — | — |",
		"| 10 | 60.00 | 40.00 | 70.00 | 80.00 | ≤ 50 ms | missed |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	if svg := string(r.Chart().SVG()); !strings.Contains(svg, "n/a") {
		t.Error("chart does not mark gomon's missing exec bar")
	}
}

func TestRotation(t *testing.T) {
	for _, tc := range []struct {
		n, rep int
		want   []int
	}{
		{3, 0, []int{0, 1, 2}},
		{3, 1, []int{0, 2, 1}},
		{3, 2, []int{1, 0, 2}},
		{3, 5, []int{2, 1, 0}},
		{3, -1, []int{2, 1, 0}},
		{3, 6, []int{0, 1, 2}},
		{2, 3, []int{1, 0}},
		{1, 7, []int{0}},
	} {
		if got := rotation(tc.n, tc.rep); !slices.Equal(got, tc.want) {
			t.Errorf("rotation(%d, %d) = %v, want %v", tc.n, tc.rep, got, tc.want)
		}
	}
	// Over n! rounds every ordered pair is adjacent equally often.
	for _, n := range []int{2, 3, 4} {
		follows := map[[2]int]int{}
		rounds := factorial(n)
		for rep := range rounds {
			o := rotation(n, rep)
			for i := 1; i < n; i++ {
				follows[[2]int{o[i-1], o[i]}]++
			}
		}
		want := rounds * (n - 1) / (n * (n - 1))
		for a := range n {
			for b := range n {
				if a != b && follows[[2]int{a, b}] != want {
					t.Errorf("n=%d: %d directly before %d in %d of %d rounds, want %d", n, a, b, follows[[2]int{a, b}], rounds, want)
				}
			}
		}
	}
}

// TestLogRowVerdict: a log target is met only against both conmons, and a
// pattern whose runs failed verification gets no verdict.
func TestLogRowVerdict(t *testing.T) {
	atLeast2 := atLeast(2, "gomon/conmon ≥ 2")
	mb := func(g, c, n float64) map[string][]float64 {
		return map[string][]float64{lGomon: {g}, lConmon: {c}, lNoSync: {n}, lRunc: {1000}}
	}
	for _, tc := range []struct {
		name    string
		v       map[string][]float64
		failed  bool
		verdict string
	}{
		{"both met", mb(300, 100, 150), false, "met"},
		{"met against the fsyncing conmon only", mb(300, 100, 200), false, "missed"},
		{"both missed", mb(100, 100, 100), false, "missed"},
		{"verification failed", mb(300, 100, 100), true, "invalid: verification failed"},
		{"negative cpu figure", mb(300, -5, 100), false, "n/a"},
	} {
		row := logRow("x", tc.v, atLeast2, tc.failed)
		if got := row[len(row)-1]; got != tc.verdict {
			t.Errorf("%s: verdict %q, want %q (row %v)", tc.name, got, tc.verdict, row)
		}
	}
}
