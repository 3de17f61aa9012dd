package hub

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type pingCounter struct {
	Slot
	pings int
}

func (p *pingCounter) Join(Joined)                                     {}
func (p *pingCounter) Encoding() Encoding                              { return EncodingFrame }
func (p *pingCounter) Deliver([][]byte, int, *[]unix.Iovec) (int, int) { return 0, 0 }
func (p *pingCounter) Drain()                                          {}
func (p *pingCounter) Kill()                                           {}
func (p *pingCounter) Sweep(_ int64, ping bool) int {
	if ping {
		p.pings++
	}
	return 0
}

// Pings are spread over the interval: with ten sweeps per ping interval,
// each sweep pings a tenth of the subscribers, and over ten sweeps every
// one of them is pinged exactly once. (Before, every subscriber was pinged
// in the same sweep: 10,000 pings at once on a 10,000-client node.) A
// shard that missed sweeps while busy pings the phases it missed.
func TestPingsAreSpreadOverTheInterval(t *testing.T) {
	h := &Hub{cfg: Config{SweepEvery: time.Second, PingInterval: 10 * time.Second}}
	h.pingPhases = 10
	s := newShard(h)
	subs := make([]*pingCounter, 100)
	for i := range subs {
		subs[i] = &pingCounter{}
		subs[i].phase = uint32(h.nextPhase.Add(1) % h.pingPhases)
		s.table.Link(subs[i], nil)
	}
	total := func() (n int) {
		for _, p := range subs {
			n += p.pings
		}
		return n
	}
	for tick := uint64(1); tick <= 10; tick++ {
		before := total()
		s.sweep(0, tick)
		if got := total() - before; got != 10 {
			t.Fatalf("sweep %d pinged %d of 100, want 10", tick, got)
		}
	}
	for i, p := range subs {
		if p.pings != 1 {
			t.Fatalf("subscriber %d pinged %d times in one interval, want 1", i, p.pings)
		}
	}
	s.sweep(0, 13) // sweeps 11 and 12 missed: their phases ping now too
	if got := total(); got != 100+30 {
		t.Fatalf("after a sweep that covers three phases: %d pings, want 130", got)
	}
	s.sweep(0, 40) // more than a whole interval missed: everyone
	if got := total(); got != 230 {
		t.Fatalf("after a sweep that covers a whole interval: %d pings, want 230", got)
	}
}
