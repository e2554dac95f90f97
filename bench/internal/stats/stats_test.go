package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSummarize(t *testing.T) {
	cases := []struct {
		name     string
		xs       []float64
		med, p90 float64
	}{
		{name: "one", xs: []float64{3}, med: 3, p90: 3},
		{name: "odd unsorted", xs: []float64{5, 1, 3}, med: 3, p90: 4.6},
		{name: "even", xs: []float64{1, 2, 3, 4}, med: 2.5, p90: 3.7},
		{name: "ten", xs: []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, med: 5.5, p90: 9.1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Summarize(tc.xs)
			if s.N != len(tc.xs) || !near(s.Median, tc.med) || !near(s.P90, tc.p90) {
				t.Fatalf("got %+v, want median %v p90 %v", s, tc.med, tc.p90)
			}
		})
	}
	if s := Summarize(nil); s.N != 0 {
		t.Fatalf("Summarize(nil) = %+v", s)
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestSpread(t *testing.T) {
	s := Summarize([]float64{90, 100, 100, 100, 110, 200})
	if s.P25 != 100 || s.P75 != 107.5 || s.Median != 100 {
		t.Fatalf("quartiles %+v", s)
	}
	if got := s.Spread(); got != 0.0375 {
		t.Fatalf("spread %v, want 0.0375", got)
	}
	if !math.IsNaN(Summarize(nil).Spread()) {
		t.Fatal("spread of no data is not NaN")
	}
}

func TestSummarizeRange(t *testing.T) {
	s := Summarize([]float64{3, -1, 7, 2})
	if s.Min != -1 || s.Max != 7 {
		t.Fatalf("range %v–%v, want -1–7", s.Min, s.Max)
	}
}

func TestPairedRatios(t *testing.T) {
	num := []float64{110, 90, math.NaN(), 50, -1, 30, 99}
	den := []float64{100, 100, 100, 0, 10, 60}
	got := PairedRatios(num, den)
	want := []float64{1.1, 0.9, 0.5} // NaN, zero and negative pairs and the unpaired 99 are left out
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if !near(got[i], want[i]) {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got := PairedRatios(nil, []float64{1}); len(got) != 0 {
		t.Fatalf("no pairs: got %v", got)
	}
}

// TestMedianCIRank checks the ranks against the binomial tables: for n =
// 10, P(B ≤ 1) = 11/1024, so 2·P = 0.0215 ≤ 0.05 while 2·P(B ≤ 2) =
// 0.109; for n = 20, 2·P(B ≤ 5) = 0.041 and 2·P(B ≤ 6) = 0.115.
func TestMedianCIRank(t *testing.T) {
	cases := []struct {
		n    int
		conf float64
		k    int
	}{
		{0, 0.95, 0}, {1, 0.95, 0}, {5, 0.95, 0}, // 2/32 = 0.0625 > 0.05
		{6, 0.95, 1}, // 2/64 = 0.031
		{10, 0.95, 2}, {20, 0.95, 6}, {20, 0.90, 6}, {20, 0.99, 4},
		{48, 0.95, 17}, {100, 0.95, 40},
		{3000, 0.95, 1446}, // past 0.5^n's underflow
	}
	for _, tc := range cases {
		if got := medianCIRank(tc.n, tc.conf); got != tc.k {
			t.Errorf("n=%d conf=%v: rank %d, want %d", tc.n, tc.conf, got, tc.k)
		}
	}
}

func TestMedianCI(t *testing.T) {
	xs := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5} // 1…10 shuffled
	lo, hi := MedianCI(xs, 0.95)
	if lo != 2 || hi != 9 {
		t.Fatalf("CI [%v, %v], want [2, 9]", lo, hi)
	}
	if xs[0] != 10 {
		t.Fatal("MedianCI sorted its input")
	}
	if lo, hi := MedianCI(xs[:5], 0.95); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Fatalf("5 samples: CI [%v, %v], want NaN", lo, hi)
	}
}

// TestMedianCICoverage draws many samples from a skewed distribution and
// checks that the 95 % interval holds the true median about 95 % of the
// time (at least; the ranks are discrete, so it is conservative).
func TestMedianCICoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const trials, n = 4000, 30
	trueMedian := math.Ln2 // of Exp(1)
	in := 0
	xs := make([]float64, n)
	for range trials {
		for i := range xs {
			xs[i] = rng.ExpFloat64()
		}
		if lo, hi := MedianCI(xs, 0.95); lo <= trueMedian && trueMedian <= hi {
			in++
		}
	}
	// The exact coverage for n = 30, k = 10 is 1-2·P(B ≤ 9) = 0.957; the
	// binomial noise over 4000 trials is ±0.3 %.
	if c := float64(in) / trials; c < 0.945 || c > 0.97 {
		t.Fatalf("coverage %.3f, want about 0.957", c)
	}
}
