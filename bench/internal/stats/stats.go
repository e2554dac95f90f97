// Package stats summarises repeated measurements.
package stats

import (
	"math"
	"slices"
)

// Summary is the median, quartiles, 90th percentile and range of a
// sample.
type Summary struct {
	N        int
	Median   float64
	P25, P75 float64
	P90      float64
	Min, Max float64
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
	return Summary{
		N: len(s), Median: Quantile(s, 0.5), P25: Quantile(s, 0.25), P75: Quantile(s, 0.75), P90: Quantile(s, 0.9),
		Min: s[0], Max: s[len(s)-1],
	}
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

// PairedRatios returns num[i]/den[i] for every i present in both, where
// num[i] and den[i] were measured in the same round (one run of each
// contender, close in time). A drift of the machine slower than a round
// scales both alike and cancels in the ratio, which a ratio of two
// medians taken over the whole run does not do. Pairs with a figure that
// cannot be a measurement (NaN, negative, or a zero denominator) are left
// out.
func PairedRatios(num, den []float64) []float64 {
	n := min(len(num), len(den))
	out := make([]float64, 0, n)
	for i := range n {
		a, b := num[i], den[i]
		if math.IsNaN(a) || math.IsNaN(b) || a < 0 || b <= 0 {
			continue
		}
		out = append(out, a/b)
	}
	return out
}

// MedianCI returns a confidence interval for the median of the population
// xs was drawn from, at confidence level conf (0.95): the k-th smallest
// and k-th largest sample, with k the largest rank for which the
// probability that the median lies outside is at most 1-conf. That
// probability is 2·P(B ≤ k-1) for B ~ Binomial(n, ½) (each sample lies
// below the median with probability ½), whatever the distribution, so
// the interval needs no assumption of normality and one wild run moves it
// by at most one rank. NaN, NaN when n is too small for any interval to
// reach conf (n ≤ 5 at 95 %).
func MedianCI(xs []float64, conf float64) (lo, hi float64) {
	n := len(xs)
	k := medianCIRank(n, conf)
	if k == 0 {
		return math.NaN(), math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[k-1], s[n-k]
}

// medianCIRank is MedianCI's k (1-based), 0 when none reaches conf.
func medianCIRank(n int, conf float64) int {
	if n <= 0 {
		return 0
	}
	// Binomial(n, ½) probabilities in log space: 0.5^n underflows past
	// n = 1074.
	lgn, _ := math.Lgamma(float64(n + 1))
	pmf := func(i int) float64 {
		a, _ := math.Lgamma(float64(i + 1))
		b, _ := math.Lgamma(float64(n - i + 1))
		return math.Exp(lgn - a - b - float64(n)*math.Ln2)
	}
	k, cdf := 0, 0.0 // cdf = P(B ≤ k-1) before the step to k+1
	for j := 0; j < n/2; j++ {
		cdf += pmf(j) // now P(B ≤ j): the outside probability of rank j+1
		if 2*cdf > 1-conf {
			break
		}
		k = j + 1
	}
	return k
}
