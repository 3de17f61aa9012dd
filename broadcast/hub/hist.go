package hub

import (
	"math"
	"sort"
	"sync/atomic"
)

// Hist is a fixed-bucket histogram with atomic counters, cheap enough for
// the fan-out path; exporters read it through Snapshot. Each keeps its own
// unit (seconds, bytes): the sum is a float64, so bytes do not overflow it
// the way nano-units of a MiB did a uint64 after ~17,600 samples.
type Hist struct {
	bounds []float64 // upper bounds, ascending
	counts []atomic.Uint64
	sum    atomic.Uint64 // math.Float64bits of the sum, in the unit of bounds
	n      atomic.Uint64
}

// NewHist returns a histogram with the given ascending upper bounds.
func NewHist(bounds ...float64) *Hist {
	return &Hist{bounds: bounds, counts: make([]atomic.Uint64, len(bounds))}
}

// Observe records one value.
func (h *Hist) Observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v)
	if i < len(h.counts) {
		h.counts[i].Add(1)
	}
	h.n.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// HistSnapshot is a cumulative histogram: Buckets[le] = observations ≤ le.
type HistSnapshot struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

// Snapshot adds h's counts into into, so shards can be summed.
func (h *Hist) Snapshot(into *HistSnapshot) {
	if into.Buckets == nil {
		into.Buckets = make(map[float64]uint64, len(h.bounds))
	}
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		into.Buckets[b] += cum
	}
	into.Count += h.n.Load()
	into.Sum += math.Float64frombits(h.sum.Load())
}

var (
	fanoutBounds = []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1}
	queueBounds  = []float64{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20}
)
