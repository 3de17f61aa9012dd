package bench

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a log-linear (HDR-style) histogram of durations in
// nanoseconds: every power of two is split into subBuckets linear buckets,
// so any recorded value is reported within 1/subBuckets (under 1.6 %) of
// itself, from 1 ns to about 2^63 ns, in a fixed 64×64 array. Record is
// lock-free and safe from many goroutines.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
	sum    atomic.Int64
	n      atomic.Uint64
}

const (
	subBits     = 6
	subBuckets  = 1 << subBits // 64 linear buckets per power of two
	histBuckets = 64 * subBuckets
)

// bucketOf maps v ≥ 0 to its bucket.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1 // v >> e is in [subBuckets, 2*subBuckets)
	return (e+1)*subBuckets + int(uint64(v)>>e) - subBuckets
}

// bucketValue is the midpoint of bucket i, the value reported for it.
func bucketValue(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	e := i/subBuckets - 1
	lo := int64(i%subBuckets+subBuckets) << e
	return lo + (int64(1)<<e)/2
}

// Record adds one observation.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the value at quantile q (0..1), within the bucket error.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max.Load())
	}
	rank := uint64(q*float64(n)) + 1 // the rank-th smallest value
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return time.Duration(min(bucketValue(i), h.max.Load()))
		}
	}
	return time.Duration(h.max.Load())
}

// Merge adds o's observations to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			break
		}
	}
}

// Summary is a histogram's digest, in the JSON results.
type Summary struct {
	Count uint64        `json:"count"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Summary digests the histogram.
func (h *Histogram) Summary() Summary {
	s := Summary{Count: h.n.Load(), Max: time.Duration(h.max.Load())}
	if s.Count == 0 {
		return s
	}
	s.Mean = time.Duration(h.sum.Load() / int64(s.Count))
	s.P50, s.P90, s.P99, s.P999 = h.Quantile(0.5), h.Quantile(0.9), h.Quantile(0.99), h.Quantile(0.999)
	return s
}

// Buckets exports the non-empty buckets as (value, count) pairs: the
// histogram's wire form between bench processes and in the JSON results.
func (h *Histogram) Buckets() [][2]int64 {
	var out [][2]int64
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			out = append(out, [2]int64{bucketValue(i), int64(c)})
		}
	}
	return out
}

// HistogramFrom rebuilds a histogram from Buckets output plus its max and
// sum (which the buckets alone cannot give exactly).
func HistogramFrom(buckets [][2]int64, maxV, sum int64) *Histogram {
	h := new(Histogram)
	for _, b := range buckets {
		h.counts[bucketOf(b[0])].Add(uint64(b[1]))
		h.n.Add(uint64(b[1]))
	}
	h.max.Store(maxV)
	h.sum.Store(sum)
	return h
}

// Reset empties the histogram (not atomically with concurrent Records:
// use it between intervals, where a few racing records do not matter).
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.sum.Store(0)
	h.max.Store(0)
}
