package trend

import (
	"math"
	"math/rand"
	"testing"
)

func times(n int, dt float64) []float64 {
	t := make([]float64, n)
	for i := range t {
		t[i] = float64(i) * dt
	}
	return t
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestSteadyGrowth(t *testing.T) {
	y := make([]float64, 30)
	for i := range y {
		y[i] = 1e6 + 40960*float64(i)
	}
	r := Analyze(times(30, 0.1), y, Options{})
	if r.Verdict != Growing {
		t.Fatalf("verdict %s, want growing (%+v)", r.Verdict, r)
	}
	if !near(r.Slope, 409600, 1e-6) {
		t.Errorf("slope %v, want 409600 per second", r.Slope)
	}
	if !near(r.Growth, 40960*29, 1e-3) {
		t.Errorf("growth %v, want %v", r.Growth, 40960*29)
	}
	if r.S != 30*29/2 || r.Tau != 1 {
		t.Errorf("S=%d tau=%v, want %d and 1", r.S, r.Tau, 30*29/2)
	}
	if r.Confidence < 0.999999 {
		t.Errorf("confidence %v", r.Confidence)
	}
}

func TestNoisyGrowthDetected(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for seed := 0; seed < 20; seed++ {
		y := make([]float64, 40)
		for i := range y {
			// Noise of ±3 samples' worth of growth.
			y[i] = 100*float64(i) + (rng.Float64()*2-1)*300
		}
		r := Analyze(times(40, 1), y, Options{})
		if r.Verdict != Growing {
			t.Fatalf("seed %d: verdict %s, want growing (%+v)", seed, r.Verdict, r)
		}
		if r.Slope < 80 || r.Slope > 120 {
			t.Errorf("seed %d: slope %v, want about 100", seed, r.Slope)
		}
	}
}

func TestNoiseNotFlagged(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for seed := 0; seed < 100; seed++ {
		n := 10 + seed%40
		y := make([]float64, n)
		for i := range y {
			y[i] = 5e6 + rng.NormFloat64()*1e5
		}
		r := Analyze(times(n, 1), y, Options{})
		if r.Verdict == Growing {
			t.Fatalf("series %d (n=%d) of pure noise flagged growing: %+v", seed, n, r)
		}
	}
}

func TestSawtoothNotFlagged(t *testing.T) {
	// A reclaimable cache: climbs for 8 samples, is cut back, climbs again;
	// the window ends on a rise so the series as a whole trends upward.
	var y []float64
	for tooth := 0; tooth < 3; tooth++ {
		for i := 0; i < 8; i++ {
			y = append(y, 1000+float64(i)*500)
		}
	}
	for i := 0; i < 6; i++ {
		y = append(y, 1000+float64(i)*800)
	}
	r := Analyze(times(len(y), 1), y, Options{})
	if r.Verdict != Breathing {
		t.Fatalf("verdict %s, want breathing (%+v)", r.Verdict, r)
	}
}

func TestStepNotFlagged(t *testing.T) {
	y := make([]float64, 31)
	for i := range y {
		y[i] = 2000
		if i >= 15 {
			y[i] = 900000
		}
	}
	r := Analyze(times(31, 1), y, Options{})
	if r.Verdict != Step {
		t.Fatalf("one-off jump: verdict %s, want step (%+v)", r.Verdict, r)
	}
	if r.Confidence < DefaultConfidence {
		t.Errorf("the jump itself is significant (confidence %v); only the shape check should stop it", r.Confidence)
	}

	// A jump with a little noise around it is still one jump.
	rng := rand.New(rand.NewSource(3))
	for i := range y {
		y[i] += float64(rng.Intn(3)) * 4096
	}
	if r := Analyze(times(31, 1), y, Options{}); r.Verdict != Step {
		t.Fatalf("noisy jump: verdict %s, want step (%+v)", r.Verdict, r)
	}

	// Two jumps are still not steady growth.
	for i := range y {
		y[i] = float64(i/11) * 1e5
	}
	if r := Analyze(times(31, 1), y, Options{}); r.Verdict != Step {
		t.Fatalf("two jumps: verdict %s, want step (%+v)", r.Verdict, r)
	}
}

func TestLevelled(t *testing.T) {
	y := make([]float64, 30)
	for i := range y {
		y[i] = float64(min(i, 10)) * 8192
	}
	r := Analyze(times(30, 1), y, Options{})
	if r.Verdict != Levelled {
		t.Fatalf("verdict %s, want levelled (%+v)", r.Verdict, r)
	}
}

func TestFlatShrinkingTooFew(t *testing.T) {
	if r := Analyze(times(10, 1), make([]float64, 10), Options{}); r.Verdict != Flat || r.Confidence != 0 {
		t.Errorf("flat: %+v", r)
	}
	y := []float64{10, 9, 8, 7, 6, 5, 4, 3}
	if r := Analyze(times(8, 1), y, Options{}); r.Verdict != Shrinking || r.S != -28 || r.Confidence != 1-1.0/40320 || r.Slope != -1 {
		t.Errorf("shrinking: %+v", r)
	}
	if r := Analyze(times(2, 1), []float64{1, 2}, Options{}); r.Verdict != TooFew {
		t.Errorf("two samples: %+v", r)
	}
}

func TestExactPValues(t *testing.T) {
	// Only one of the n! orders is strictly increasing.
	for n, want := range map[int]float64{4: 1.0 / 24, 5: 1.0 / 120, 6: 1.0 / 720} {
		y := make([]float64, n)
		for i := range y {
			y[i] = float64(i)
		}
		r := Analyze(times(n, 1), y, Options{})
		if !near(r.P, want, 1e-12) {
			t.Errorf("n=%d: p=%v, want %v", n, r.P, want)
		}
	}
	// Four samples can never reach 0.99: one order in 24 is still 4%.
	if r := Analyze(times(4, 1), []float64{1, 2, 3, 4}, Options{}); r.Verdict != Noise {
		t.Errorf("n=4 rising: verdict %s, want noise (too few samples to be sure)", r.Verdict)
	}
	// n=5, one swapped pair: S = 10 - 2 = 8; orders with at most one
	// inversion: 1 + 4 = 5 of 120.
	_, p := mannKendall([]float64{1, 3, 2, 4, 5})
	if !near(p, 5.0/120, 1e-12) {
		t.Errorf("p=%v, want %v", p, 5.0/120)
	}
	// The exact distribution and the normal approximation agree where the
	// exact table stops.
	n := exactMax
	cdf := inversionCDF(n)
	pairs := n * (n - 1) / 2
	s := 300
	exact := cdf[(pairs-s)/2]
	v := float64(n*(n-1)*(2*n+5)) / 18
	approx := 0.5 * math.Erfc((float64(s)-1)/math.Sqrt(v)/math.Sqrt2)
	if !near(exact, approx, 0.002) {
		t.Errorf("n=%d s=%d: exact %v, normal %v", n, s, exact, approx)
	}
}

func TestTiesUseCorrectedVariance(t *testing.T) {
	y := []float64{1, 1, 2, 2, 3, 3}
	s, p := mannKendall(y)
	if s != 12 {
		t.Fatalf("S=%d, want 12", s)
	}
	// Var = (6·5·17 − 3·(2·1·9))/18 = (510 − 54)/18.
	z := 11 / math.Sqrt(456.0/18)
	if want := 0.5 * math.Erfc(z/math.Sqrt2); !near(p, want, 1e-12) {
		t.Errorf("p=%v, want %v", p, want)
	}
}

func TestTheilSenIgnoresOutliers(t *testing.T) {
	tt := times(11, 1)
	y := make([]float64, 11)
	for i := range y {
		y[i] = 2*tt[i] + 1
	}
	y[3] = 1000
	y[8] = -500
	slope, icpt := TheilSen(tt, y)
	if slope != 2 || icpt != 1 {
		t.Errorf("slope %v intercept %v, want 2 and 1", slope, icpt)
	}
}

func TestLongSeriesReduced(t *testing.T) {
	n := 5000
	y := make([]float64, n)
	for i := range y {
		y[i] = float64(i) * 10
	}
	r := Analyze(times(n, 1), y, Options{})
	if r.Verdict != Growing || !near(r.Slope, 10, 1e-9) {
		t.Fatalf("%+v", r)
	}
	if r.N != n {
		t.Errorf("N=%d, want the raw count %d", r.N, n)
	}
}

func TestConfidenceOption(t *testing.T) {
	// Strictly rising over 5 samples: p = 1/120, confidence 0.9917.
	y := []float64{1, 2, 3, 4, 5}
	if r := Analyze(times(5, 1), y, Options{Confidence: 0.999}); r.Verdict != Noise {
		t.Errorf("at 0.999: %s", r.Verdict)
	}
	if r := Analyze(times(5, 1), y, Options{Confidence: 0.99}); r.Verdict != Growing {
		t.Errorf("at 0.99: %s", r.Verdict)
	}
}
