package hub

import "testing"

// The sum of a histogram in bytes must not wrap: 20,000 samples of 1 MiB
// overflowed the old nano-unit uint64 sum (2^64 / (2^20 × 1e9) ≈ 17,592).
func TestHistSumKeepsItsUnit(t *testing.T) {
	h := NewHist(queueBounds...)
	const n, v = 20000, 1 << 20
	for i := 0; i < n; i++ {
		h.Observe(v)
	}
	var s HistSnapshot
	h.Snapshot(&s)
	if s.Count != n || s.Sum != n*v {
		t.Fatalf("count %d sum %g, want %d and %d", s.Count, s.Sum, n, n*v)
	}
	if got := s.Buckets[1<<20]; got != n {
		t.Fatalf("bucket le=1MiB holds %d, want %d", got, n)
	}
	d := NewHist(fanoutBounds...)
	d.Observe(0.25)
	d.Observe(0.5)
	var ds HistSnapshot
	d.Snapshot(&ds)
	if ds.Sum != 0.75 {
		t.Fatalf("seconds sum %g, want 0.75", ds.Sum)
	}
}
