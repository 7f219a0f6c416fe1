// Package trend decides whether a series of memory samples grows steadily.
//
// The Mann–Kendall test answers "is there a monotonic trend, and how sure
// are we", without assuming the growth is linear or the noise normal; the
// Theil–Sen estimator gives the slope, robust to outliers. A significant
// trend alone is not a leak: a cache that fills once and stops, a one-off
// jump and a cache that is reclaimed and refills all produce one. Shape
// checks on the raw series sort those out, so only growth that keeps going
// through the window is called Growing.
package trend

import (
	"math"
	"sort"
	"sync"
)

// Verdict is the shape of a series.
type Verdict string

const (
	// TooFew: fewer than MinSamples samples; nothing can be said.
	TooFew Verdict = "too-few"
	// Flat: every sample is equal.
	Flat Verdict = "flat"
	// Noise: it moves, but without a significant monotonic trend.
	Noise Verdict = "noise"
	// Growing: significant rise, spread over many samples, still rising
	// in the second half of the window and never falling back far.
	Growing Verdict = "growing"
	// Step: significant rise carried by one or two jumps.
	Step Verdict = "step"
	// Levelled: it rose, then stopped rising (warm-up, a cache filling up).
	Levelled Verdict = "levelled"
	// Breathing: it rises and falls back, as reclaimable caches do.
	Breathing Verdict = "breathing"
	// Shrinking: significant fall.
	Shrinking Verdict = "shrinking"
)

// MinSamples is the fewest samples Analyze gives a verdict for.
const MinSamples = 3

// MaxPoints bounds the O(n²) tests: longer series are reduced to this many
// points by averaging runs of consecutive samples. The shape checks still
// look at every sample.
const MaxPoints = 1000

// DefaultConfidence is the confidence a trend needs to count; with
// hundreds of caches or processes tested at once, 0.95 would flag a few
// noisy ones on every run.
const DefaultConfidence = 0.99

// Shape thresholds. A leak never gives back more than a small part of what
// it took, and it grows in many small steps rather than a few big ones.
const (
	breathingShare = 0.5 // largest peak-to-later-trough fall, as a share of the range
	stepShare      = 0.5 // largest single rise, as a share of all rises
	minRises       = 3   // fewest sample intervals that must rise
)

// Options tune Analyze. The zero value means DefaultConfidence.
type Options struct {
	Confidence float64
}

// Result is what Analyze found.
type Result struct {
	N int `json:"samples"`
	// S is the Mann–Kendall statistic: concordant minus discordant pairs.
	S int `json:"mk_s"`
	// Tau is Kendall's tau, S over the number of pairs: 1 is monotonic rise.
	Tau float64 `json:"tau"`
	// P is the one-sided p-value for a trend in the direction of S.
	P float64 `json:"p_value"`
	// Confidence is 1-P: how sure the test is of a trend in the
	// direction of S (rising when S > 0, falling when S < 0); 0 when S = 0.
	Confidence float64 `json:"confidence"`
	// Slope is the Theil–Sen slope in series units per time unit.
	Slope     float64 `json:"slope"`
	Intercept float64 `json:"intercept"`
	// Growth is Slope times the time span: the fitted change over the window.
	Growth float64 `json:"growth"`
	First  float64 `json:"first"`
	Last   float64 `json:"last"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Rises and Falls count sample intervals that rose and fell;
	// StepShare is the largest rise as a share of all rises; Drawdown is
	// the largest fall from a peak to a later sample as a share of the
	// range.
	Rises     int     `json:"rises"`
	Falls     int     `json:"falls"`
	StepShare float64 `json:"step_share"`
	Drawdown  float64 `json:"drawdown"`
	Verdict   Verdict `json:"verdict"`
}

// Analyze tests y, sampled at times t (any unit, increasing), for a trend.
// t and y must have the same length.
func Analyze(t, y []float64, opt Options) Result {
	if len(t) != len(y) {
		panic("trend: t and y differ in length")
	}
	conf := opt.Confidence
	if conf <= 0 || conf >= 1 {
		conf = DefaultConfidence
	}
	r := Result{N: len(y)}
	if len(y) == 0 {
		r.Verdict = TooFew
		return r
	}
	r.First, r.Last = y[0], y[len(y)-1]
	r.Min, r.Max = y[0], y[0]
	for _, v := range y {
		r.Min = math.Min(r.Min, v)
		r.Max = math.Max(r.Max, v)
	}
	shape(&r, y)
	if len(y) < MinSamples {
		r.Verdict = TooFew
		return r
	}
	if r.Min == r.Max {
		r.P = 1
		r.Verdict = Flat
		return r
	}

	bt, by := reduce(t, y, MaxPoints)
	r.S, r.P = mannKendall(by)
	n := len(by)
	r.Tau = float64(r.S) / float64(n*(n-1)/2)
	r.Slope, r.Intercept = TheilSen(bt, by)
	r.Growth = r.Slope * (bt[n-1] - bt[0])
	if r.S != 0 {
		r.Confidence = 1 - r.P
	}

	significant := 1-r.P >= conf
	// A cache that breathes climbs gradually and is cut back suddenly:
	// many rising intervals, few falling ones, and a deep fall. Independent
	// noise falls about as often as it rises.
	sawtooth := r.Drawdown > breathingShare && r.Falls*2 <= r.Rises
	switch {
	case sawtooth:
		r.Verdict = Breathing
	case !significant:
		r.Verdict = Noise
	case r.S < 0:
		r.Verdict = Shrinking
	case r.Drawdown > breathingShare:
		// Significant, but it gives back more than half of its range:
		// the noise is as large as the growth.
		r.Verdict = Noise
	case r.Rises < minRises || r.StepShare > stepShare:
		r.Verdict = Step
	case secondHalfS(y) <= 0:
		r.Verdict = Levelled
	default:
		r.Verdict = Growing
	}
	return r
}

// shape fills the raw-series measures the verdict's shape checks use.
func shape(r *Result, y []float64) {
	var rise, biggest float64
	peak := y[0]
	var fall float64
	for i := 1; i < len(y); i++ {
		if d := y[i] - y[i-1]; d > 0 {
			r.Rises++
			rise += d
			biggest = math.Max(biggest, d)
		} else if d < 0 {
			r.Falls++
		}
		peak = math.Max(peak, y[i])
		fall = math.Max(fall, peak-y[i])
	}
	if rise > 0 {
		r.StepShare = biggest / rise
	}
	if r.Max > r.Min {
		r.Drawdown = fall / (r.Max - r.Min)
	}
}

// secondHalfS is the Mann–Kendall S of the later half of y: growth that has
// stopped by then is a warm-up, not a leak.
func secondHalfS(y []float64) int {
	h := y[len(y)/2:]
	if len(h) > MaxPoints {
		_, h = reduce(make([]float64, len(h)), h, MaxPoints)
	}
	s, _ := mannKendall(h)
	return s
}

// reduce averages runs of consecutive samples so at most max points remain.
func reduce(t, y []float64, max int) ([]float64, []float64) {
	n := len(y)
	if n <= max {
		return t, y
	}
	rt := make([]float64, 0, max)
	ry := make([]float64, 0, max)
	for b := 0; b < max; b++ {
		lo, hi := b*n/max, (b+1)*n/max
		var st, sy float64
		for i := lo; i < hi; i++ {
			st += t[i]
			sy += y[i]
		}
		k := float64(hi - lo)
		rt = append(rt, st/k)
		ry = append(ry, sy/k)
	}
	return rt, ry
}

// mannKendall returns S and the one-sided p-value for a trend in S's
// direction. Without ties and for up to exactMax samples the p-value is
// exact; otherwise it uses the normal approximation with the variance
// corrected for ties and a continuity correction.
func mannKendall(y []float64) (int, float64) {
	n := len(y)
	s := 0
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			switch {
			case y[j] > y[i]:
				s++
			case y[j] < y[i]:
				s--
			}
		}
	}
	if n < 2 {
		return s, 1
	}
	sorted := append([]float64(nil), y...)
	sort.Float64s(sorted)
	var tieTerm float64
	ties := false
	for i := 0; i < n; {
		j := i
		for j < n && sorted[j] == sorted[i] {
			j++
		}
		if k := float64(j - i); k > 1 {
			ties = true
			tieTerm += k * (k - 1) * (2*k + 5)
		}
		i = j
	}
	if !ties && n <= exactMax {
		return s, exactP(n, s)
	}
	nf := float64(n)
	v := (nf*(nf-1)*(2*nf+5) - tieTerm) / 18
	if v <= 0 {
		return s, 1
	}
	a := math.Abs(float64(s))
	if a == 0 {
		return s, 0.5
	}
	z := (a - 1) / math.Sqrt(v)
	return s, 0.5 * math.Erfc(z/math.Sqrt2)
}

// exactMax is the largest sample count whose S distribution is computed
// exactly; beyond it the normal approximation is good to three decimals.
const exactMax = 60

var (
	cdfMu    sync.Mutex
	cdfCache = map[int][]float64{}
)

// exactP is P(|S'| ≥ |s|) in the direction of s, for S' the Mann–Kendall
// statistic of n untied samples in random order. S = N − 2Q where Q, the
// number of discordant pairs, follows the Mahonian distribution.
func exactP(n, s int) float64 {
	if s == 0 {
		return 0.5 + 0.5*exactPointZero(n)
	}
	if s < 0 {
		s = -s
	}
	pairs := n * (n - 1) / 2
	q := (pairs - s) / 2 // S ≥ s ⇔ Q ≤ (pairs−s)/2
	return inversionCDF(n)[q]
}

// exactPointZero is P(S = 0), so that a zero S gets p slightly above 0.5.
func exactPointZero(n int) float64 {
	pairs := n * (n - 1) / 2
	if pairs%2 != 0 {
		return 0
	}
	cdf := inversionCDF(n)
	q := pairs / 2
	if q == 0 {
		return cdf[0]
	}
	return cdf[q] - cdf[q-1]
}

// inversionCDF returns the cumulative distribution of the number of
// inversions of a random permutation of n items.
func inversionCDF(n int) []float64 {
	cdfMu.Lock()
	defer cdfMu.Unlock()
	if c, ok := cdfCache[n]; ok {
		return c
	}
	dist := []float64{1}
	for k := 2; k <= n; k++ {
		// Inserting the k-th item adds 0..k-1 inversions, uniformly.
		next := make([]float64, len(dist)+k-1)
		var window float64
		for q := range next {
			if q < len(dist) {
				window += dist[q]
			}
			if q-k >= 0 && q-k < len(dist) {
				window -= dist[q-k]
			}
			next[q] = window / float64(k)
		}
		dist = next
	}
	cdf := make([]float64, len(dist))
	var acc float64
	for i, p := range dist {
		acc += p
		cdf[i] = math.Min(acc, 1)
	}
	cdfCache[n] = cdf
	return cdf
}

// TheilSen returns the median of the pairwise slopes of (t, y) and the
// median intercept for that slope. Pairs with equal times are skipped.
func TheilSen(t, y []float64) (slope, intercept float64) {
	n := len(y)
	slopes := make([]float64, 0, n*(n-1)/2)
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			if dt := t[j] - t[i]; dt != 0 {
				slopes = append(slopes, (y[j]-y[i])/dt)
			}
		}
	}
	if len(slopes) == 0 {
		return 0, median(append([]float64(nil), y...))
	}
	slope = median(slopes)
	res := make([]float64, n)
	for i := range y {
		res[i] = y[i] - slope*t[i]
	}
	return slope, median(res)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// Compare orders growth findings the way every report lists them: flagged
// first, then the faster grower, then the larger total growth. It returns
// a negative number when a goes first, positive when b does, 0 for a tie.
func Compare(aFlagged bool, aRate float64, aFirst, aLast uint64, bFlagged bool, bRate float64, bFirst, bLast uint64) int {
	switch {
	case aFlagged != bFlagged:
		if aFlagged {
			return -1
		}
		return 1
	case aRate != bRate:
		if aRate > bRate {
			return -1
		}
		return 1
	}
	da, db := int64(aLast)-int64(aFirst), int64(bLast)-int64(bFirst)
	switch {
	case da > db:
		return -1
	case da < db:
		return 1
	}
	return 0
}
