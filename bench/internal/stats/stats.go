// Package stats summarises repeated measurements.
package stats

import (
	"math"
	"slices"
)

// Summary is the median, quartiles and 90th percentile of a sample.
type Summary struct {
	N        int
	Median   float64
	P25, P75 float64
	P90      float64
}

// Spread is half the interquartile range relative to the median (0.04 is
// "±4 %"): how far a typical run lies from the median, robust to one
// outlier. NaN for no data or a zero median.
func (s Summary) Spread() float64 {
	if s.N == 0 || s.Median == 0 {
		return math.NaN()
	}
	return (s.P75 - s.P25) / 2 / math.Abs(s.Median)
}

// Summarize returns the summary of xs; the zero Summary for no data.
func Summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return Summary{N: len(s), Median: Quantile(s, 0.5), P25: Quantile(s, 0.25), P75: Quantile(s, 0.75), P90: Quantile(s, 0.9)}
}

// Quantile returns the q-quantile of sorted, interpolating linearly
// between closest ranks. sorted must be sorted and non-empty.
func Quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return sorted[lo] + (sorted[hi]-sorted[lo])*frac
}
