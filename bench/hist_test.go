package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Percentiles from the histogram match a sorted list of the same random
// data within the bucket error (1/64).
func TestHistogramAgainstSortedList(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, dist := range []struct {
		name string
		gen  func() int64
	}{
		{"uniform 0-10ms", func() int64 { return r.Int64N(10_000_000) }},
		{"lognormal", func() int64 { return int64(math.Exp(r.NormFloat64()*1.5 + 12)) }},
		{"small values", func() int64 { return r.Int64N(100) }},
	} {
		t.Run(dist.name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, 100_000)
			for i := range vals {
				vals[i] = dist.gen()
				h.Record(time.Duration(vals[i]))
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
				want := vals[int(q*float64(len(vals)))]
				got := int64(h.Quantile(q))
				if diff := math.Abs(float64(got - want)); diff > float64(want)/64+1 {
					t.Errorf("q%.3f: got %d, sorted list says %d (off by %.2f%%)", q, got, want, 100*diff/float64(want))
				}
			}
			if got := int64(h.Quantile(1)); got != vals[len(vals)-1] {
				t.Errorf("max %d, want %d", got, vals[len(vals)-1])
			}
			// Round trip through the wire form keeps every quantile.
			s := h.Summary()
			back := HistogramFrom(h.Buckets(), int64(s.Max), int64(s.Mean)*int64(s.Count))
			if back.Summary().P99 != s.P99 || back.Count() != h.Count() {
				t.Errorf("round trip: %+v vs %+v", back.Summary(), s)
			}
		})
	}
}

func TestBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<20; v += 1 + v/100 {
		b := bucketOf(v)
		if b < prev {
			t.Fatalf("bucketOf(%d) = %d < %d", v, b, prev)
		}
		prev = b
		if mid := bucketValue(b); math.Abs(float64(mid-v)) > float64(v)/64+1 {
			t.Fatalf("value %d reported as %d", v, mid)
		}
	}
}
