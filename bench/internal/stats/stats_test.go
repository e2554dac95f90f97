package stats

import (
	"math"
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
