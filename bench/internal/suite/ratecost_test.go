package suite

import (
	"math"
	"strings"
	"testing"
)

func TestCIVerdict(t *testing.T) {
	atLeast97 := atLeast(0.97, "x")
	atMost103 := atMost(1.03, "x")
	nan := math.NaN()
	cases := []struct {
		name   string
		t      *target
		lo, hi float64
		want   string
	}{
		{"no target", nil, 0.9, 1.1, "—"},
		{"too few rounds", atLeast97, nan, nan, ciTooFew},
		{"MB/s all above", atLeast97, 0.975, 1.02, ciMet},
		{"MB/s on the edge", atLeast97, 0.97, 0.99, ciMet},
		{"MB/s straddles", atLeast97, 0.95, 1.01, ciUnresolved},
		{"MB/s all below", atLeast97, 0.90, 0.96, ciMissed},
		{"CPU all below", atMost103, 0.98, 1.02, ciMet},
		{"CPU straddles", atMost103, 1.0, 1.07, ciUnresolved},
		{"CPU all above", atMost103, 1.04, 1.10, ciMissed},
		{"CPU much cheaper", atMost103, 0.5, 0.6, ciMet},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := pairedRatio{Lo: tc.lo, Hi: tc.hi, Median: math.NaN()}
			if got := ciVerdict(tc.t, p); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestComparePairedCancelsDrift: the machine slows down steadily over the
// run, both contenders alike, and the second is 2 % slower within every
// round. The ratio of medians happens to be right here, but its
// contenders' spreads (min – max 100 – 119) hide a 2 % difference; the
// per-round ratios are all 0.98, so their interval is exactly 0.98.
func TestComparePairedCancelsDrift(t *testing.T) {
	var a, b []float64
	for i := range 20 {
		base := 100 + float64(i)
		a = append(a, base)
		b = append(b, 0.98*base)
	}
	p := comparePaired(b, a)
	if p.N != 20 || !near(p.Median, 0.98) || !near(p.Lo, 0.98) || !near(p.Hi, 0.98) {
		t.Fatalf("paired %+v, want median and CI 0.98 over 20 rounds", p)
	}
	if got := ciVerdict(atLeast(0.97, "x"), p); got != ciMet {
		t.Fatalf("verdict %q", got)
	}
	if got := ciVerdict(atLeast(0.99, "x"), p); got != ciMissed {
		t.Fatalf("verdict %q", got)
	}
	if p := comparePaired(nil, nil); !math.IsNaN(p.Median) || !math.IsNaN(p.Lo) || !math.IsNaN(p.OfMedians) {
		t.Fatalf("no data: %+v", p)
	}
}

// TestCIVerdictRoundsHint: 12 rounds with median 0.99 and CI 0.95 –
// 1.03 against ≥ 0.97: the lower side (0.04) must shrink to 0.02, a
// quarter of the variance, so 4 × 12 = 48 rounds.
func TestCIVerdictRoundsHint(t *testing.T) {
	p := pairedRatio{Median: 0.99, Lo: 0.95, Hi: 1.03, N: 12}
	want := "not resolved at this noise (95% CI straddles the target; about 48 rounds would resolve it if the median held)"
	if got := ciVerdict(atLeast(0.97, "x"), p); got != want {
		t.Fatalf("got %q", got)
	}
	// CPU: median 1.04 above ≤ 1.03, the lower side 0.03 must shrink to 0.01.
	p = pairedRatio{Median: 1.04, Lo: 1.01, Hi: 1.05, N: 10}
	if got := roundsToResolve(1.03, p); got != 90 {
		t.Fatalf("rounds %d, want 90", got)
	}
	if got := roundsToResolve(1.04, p); got != 0 {
		t.Fatalf("median on the threshold: rounds %d, want 0", got)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func rateCostFixture(baseline bool) *Results {
	n := 12
	rc := &RateCostResult{
		Bytes: 128 << 20, MBps: map[string][]float64{}, CPUPerGB: map[string][]float64{},
		Errors: map[string][]string{}, WarmupMBps: map[string]float64{lGomon: 700, lLimited: 690},
		Contenders: []string{lGomon, lLimited},
	}
	if baseline {
		rc.Contenders = append([]string{lBaseline}, rc.Contenders...)
		rc.Baseline, rc.BaselineVersion = "/x/bin/gomon-836b64a", "0.5.0 (836b64a)"
		rc.WarmupMBps[lBaseline] = 710
	}
	for i := range n {
		drift := 1 + 0.01*float64(i%4) // ±2 %: the rounds differ, the pairs do not
		if baseline {
			rc.MBps[lBaseline] = append(rc.MBps[lBaseline], 800*drift)
			rc.CPUPerGB[lBaseline] = append(rc.CPUPerGB[lBaseline], 1.0*drift)
		}
		// gomon: 1 % slower than the baseline in every round; the limit: 10 %.
		rc.MBps[lGomon] = append(rc.MBps[lGomon], 792*drift)
		rc.CPUPerGB[lGomon] = append(rc.CPUPerGB[lGomon], 1.01*drift)
		// The limited runs are noisy: ±2 % for MB/s, ±4 % for CPU.
		wobble := float64(i%3 - 1)
		rc.MBps[lLimited] = append(rc.MBps[lLimited], 720*drift*(1+0.02*wobble))
		rc.CPUPerGB[lLimited] = append(rc.CPUPerGB[lLimited], 1.03*drift*(1+0.04*wobble))
	}
	return &Results{Params: Params{RateCostReps: n}, RateCost: rc}
}

func TestRateCostSections(t *testing.T) {
	md := string((&Results{}).docWith(rateCostFixture(true)))
	for _, want := range []string{
		"| gomon baseline | 12 | 812.0 | 806.0 – 818.0 | 800.0 – 824.0 | 1.02 | 1.01 – 1.02 | 1.00 – 1.03 |",
		"/x/bin/gomon-836b64a, version 0.5.0 (836b64a)",
		"| no limit / baseline | MB/s | 0.990× | 0.990× | 0.990 – 0.990 | 12 | ≥ 0.97 (within 3%) | " + ciMet + " |",
		"| no limit / baseline | CPU s/GB | 1.010× | 1.010× | 1.010 – 1.010 | 12 | ≤ 1.03 (within 3%) | " + ciMet + " |",
		"| limit 1TiB/s / baseline | MB/s | 0.900× | 0.900× | 0.882 – 0.918 | 12 | ≥ 0.95 (within 5%) | " + ciMissed + " |",
		"| limit 1TiB/s / baseline | CPU s/GB | 1.030× | 1.030× | 0.989 – 1.071 | 12 | ≤ 1.05 (within 5%) | not resolved at this noise (95% CI straddles the target; about 51 rounds would resolve it if the median held) |",
		"Every byte of every run verified.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	lines := rateCostFixture(true).RateCost.VerdictLines()
	if len(lines) != 6 || !strings.Contains(lines[0], "no limit / baseline, MB/s: per-round ratio 0.990× (95% CI 0.990 – 0.990, 12 rounds)") {
		t.Errorf("verdict lines %q", lines)
	}

	md = string((&Results{}).docWith(rateCostFixture(false)))
	if strings.Contains(md, "/ baseline") || !strings.Contains(md, "No baseline: -baseline was not given") ||
		!strings.Contains(md, "| limit 1TiB/s / no limit (the limiter alone) | MB/s |") {
		t.Errorf("report without a baseline:\n%s", md)
	}

	r := rateCostFixture(true)
	r.RateCost.Errors[lLimited] = []string{"short log"}
	md = string((&Results{}).docWith(r))
	if !strings.Contains(md, "VERIFICATION FAILED: gomon, limit 1TiB/s: 1 of 12 runs (short log).") ||
		!strings.Contains(md, "| 12 | ≤ 1.05 (within 5%) | "+invalidVerdict+" |") ||
		!strings.Contains(md, "| 12 | ≤ 1.03 (within 3%) | "+ciMet+" |") {
		t.Errorf("a failed verification does not void the limited rows alone:\n%s", md)
	}
}

// docWith renders r's ratecost sections alone.
func (*Results) docWith(r *Results) []byte {
	d := r.Doc(false)
	d.Preamble = nil
	return d.Markdown()
}

// The metrics and tracing sets judge their own pairs, and render no
// limiter rows.
func TestRateCostSets(t *testing.T) {
	rc := &RateCostResult{
		With: RateCostMetrics, Bytes: 128 << 20, MBps: map[string][]float64{}, CPUPerGB: map[string][]float64{},
		Errors: map[string][]string{}, WarmupMBps: map[string]float64{},
		Contenders: []string{lBaseline + "+tracing", lTrace, lMetrics},
		Baseline:   "/x/bin/gomon-e133f9c", BaselineVersion: "0.4.0 (e133f9c)",
	}
	for i := range 12 {
		drift := 1 + 0.01*float64(i%4)
		rc.MBps[lBaseline+"+tracing"] = append(rc.MBps[lBaseline+"+tracing"], 800*drift)
		rc.CPUPerGB[lBaseline+"+tracing"] = append(rc.CPUPerGB[lBaseline+"+tracing"], drift)
		rc.MBps[lTrace] = append(rc.MBps[lTrace], 800*drift)
		rc.CPUPerGB[lTrace] = append(rc.CPUPerGB[lTrace], drift)
		// metrics on: 5 % slower every round, a missed 3 % target.
		rc.MBps[lMetrics] = append(rc.MBps[lMetrics], 760*drift)
		rc.CPUPerGB[lMetrics] = append(rc.CPUPerGB[lMetrics], drift)
	}
	md := string((&Results{}).docWith(&Results{Params: Params{RateCostReps: 12}, RateCost: rc}))
	for _, want := range []string{
		"7. Cost of metrics on the log path",
		"gomon baseline+tracing: /x/bin/gomon-e133f9c, version 0.4.0 (e133f9c)",
		"| gomon / baseline, tracing on | MB/s | 1.000× | 1.000× | 1.000 – 1.000 | 12 | ≥ 0.97 (within 3%) | " + ciMet + " |",
		"| metrics on / off, tracing on | MB/s | 0.950× | 0.950× | 0.950 – 0.950 | 12 | ≥ 0.97 (within 3%) | " + ciMissed + " |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	if strings.Contains(md, "limit 1TiB/s") {
		t.Errorf("the metrics set renders limiter rows:\n%s", md)
	}
	rc.With = RateCostTracing
	if rows := rc.ratioRows(); len(rows) != 2 || rows[0][0] != "gomon / baseline, tracing on" {
		t.Errorf("tracing set rows %q", rows)
	}
}
