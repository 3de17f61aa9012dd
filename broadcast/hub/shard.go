package hub

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Subscriber is what a shard holds: one connection, whatever protocol it
// speaks. The hub calls its methods from the shard's goroutine (its owner
// may call Drain and Kill too); each takes the subscriber's own lock, and
// none may block on the peer.
type Subscriber interface {
	// HubSlot is where the hub keeps the subscriber (embed a Slot).
	HubSlot() *Slot
	// Join runs when the subscriber enters its shard's table: every
	// message the shard takes from now on is delivered to it.
	Join()
	// Encoding is the encoding the subscriber writes.
	Encoding() Encoding
	// Deliver hands frames (total size bytes), in order, to the
	// subscriber: written now, or queued behind what waits. It returns
	// how many it took and how many it dropped (slow, under a drop
	// policy); a subscriber that is closing takes none.
	Deliver(frames [][]byte, size int, iov *[]unix.Iovec) (delivered, dropped int)
	// Sweep runs every Config.SweepEvery with the time now (unix ns):
	// timeouts, and a ping when ping is set. It returns the bytes the
	// subscriber has queued.
	Sweep(now int64, ping bool) (queued int)
	// Drain asks the subscriber to leave: the hub is shutting down and
	// everything broadcast before has been delivered.
	Drain()
	// Kill ends the subscriber at once.
	Kill()
}

// Slot is the hub's bookkeeping inside a subscriber: which shard, and
// where in its table. Embed it; the zero value is "in no hub".
type Slot struct {
	shard *Shard
	idx   int32  // owned by the shard goroutine
	phase uint32 // the sweep, of every Hub.pingPhases, that pings it
}

// HubSlot implements Subscriber.
func (s *Slot) HubSlot() *Slot { return s }

// Shard owns a slice of the subscriber table. Its goroutine is the only
// one that touches subs; additions and removals reach it through an inbox.
type Shard struct {
	hub  *Hub
	wake chan struct{} // capacity 1: "something to do"
	stop chan struct{}

	cursor atomic.Uint64 // next sequence number to take from the ring
	count  atomic.Int64  // len(subs), for readers outside the goroutine

	sweepDue  atomic.Bool
	sweepTick atomic.Uint64 // the hub's sweep count when sweepDue was set
	draining  atomic.Bool   // Drain: deliver what was taken, then Subscriber.Drain
	forcing   atomic.Bool   // Force: Subscriber.Kill

	mu      sync.Mutex
	adds    []Subscriber // guarded by mu
	removes []Subscriber // guarded by mu

	// Owned by the shard goroutine.
	spareAdds, spareRemoves []Subscriber // the inbox's other buffers
	subs                    []Subscriber
	lastSweep               uint64 // the hub tick of the last sweep
	batch                   []Message
	scratch                 Scratch
	drain                   drainState

	deliveries atomic.Uint64
	dropped    atomic.Uint64
	fanoutHist *Hist // seconds per batch
	queueHist  *Hist // queued bytes per backlogged subscriber, per sweep
}

func newShard(h *Hub) *Shard {
	return &Shard{
		hub:        h,
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		fanoutHist: NewHist(fanoutBounds...),
		queueHist:  NewHist(queueBounds...),
	}
}

func (s *Shard) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Shard) add(sub Subscriber) {
	s.mu.Lock()
	s.adds = append(s.adds, sub)
	s.mu.Unlock()
	s.notify()
}

func (s *Shard) remove(sub Subscriber) {
	s.mu.Lock()
	s.removes = append(s.removes, sub)
	s.mu.Unlock()
	s.notify()
}

// run is the shard's goroutine: on every wake it applies its inbox, takes
// and delivers what the ring has for it, sweeps when due and carries out
// a drain or a force. Each batch is one round of all of that: under a
// publisher that never lets the ring run empty, additions, removals,
// sweeps and the shutdown still get their turn every maxBatch messages.
func (s *Shard) run() {
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		if d := s.hub.cfg.FlushDelay; d > 0 && s.hub.pending(s) {
			// Batching window: let more messages pile up for one writev.
			select {
			case <-time.After(d):
			case <-s.stop:
				return
			}
		}
		for more := true; more; {
			s.applyInbox()
			if more = s.hub.take(s) > 0; more {
				s.fanOut()
			}
			if s.sweepDue.Swap(false) {
				s.sweep(time.Now().UnixNano(), s.sweepTick.Load())
			}
			if s.shutdownStep() {
				more = true
			}
		}
	}
}

// applyInbox moves the inbox into the table. Additions first: a subscriber
// torn down right after it was added has both in the same inbox. One that
// joins after the drain was carried out is drained at once.
func (s *Shard) applyInbox() {
	s.mu.Lock()
	adds, removes := s.adds, s.removes
	s.adds, s.removes = s.spareAdds[:0], s.spareRemoves[:0]
	s.mu.Unlock()
	for _, sub := range adds {
		sub.HubSlot().idx = int32(len(s.subs))
		s.subs = append(s.subs, sub)
	}
	// Counted before they join: a client that has its 101 (Join sends
	// it) finds itself in Len.
	s.count.Store(int64(len(s.subs)))
	for _, sub := range adds {
		sub.Join()
		if s.drain.started {
			sub.Drain()
		}
	}
	for _, sub := range removes {
		s.unlink(sub)
	}
	clear(adds)
	clear(removes)
	s.spareAdds, s.spareRemoves = adds, removes
	s.count.Store(int64(len(s.subs)))
}

func (s *Shard) unlink(sub Subscriber) {
	slot := sub.HubSlot()
	i := int(slot.idx)
	if i < 0 || i >= len(s.subs) || s.subs[i] != sub {
		return // already gone
	}
	last := len(s.subs) - 1
	s.subs[i] = s.subs[last]
	s.subs[i].HubSlot().idx = int32(i)
	s.subs[last] = nil
	s.subs = s.subs[:last]
	slot.idx = -1
}

// fanOut delivers the batch just taken to every subscriber of the shard.
func (s *Shard) fanOut() {
	start := time.Now()
	delivered, dropped := FanOut(s.subs, s.batch, &s.scratch)
	clear(s.batch)
	s.deliveries.Add(delivered)
	s.dropped.Add(dropped)
	s.fanoutHist.Observe(time.Since(start).Seconds())
}

// Scratch is the reusable memory of FanOut: the batch's frames per
// encoding and the iovecs of one writev.
type Scratch struct {
	frames [numEncodings][][]byte
	sizes  [numEncodings]int
	iov    []unix.Iovec
}

// FanOut writes batch, in order, to every subscriber: the list of frames
// is built once per encoding and the same bytes go to each of them. It
// allocates nothing once sc has grown to the batch size. It is the
// shard's fan-out step, exported for benchmarks and tests.
func FanOut(subs []Subscriber, batch []Message, sc *Scratch) (delivered, dropped uint64) {
	for e := range sc.frames {
		sc.frames[e], sc.sizes[e] = sc.frames[e][:0], 0
		for i := range batch {
			if b := batch[i].enc[e]; b != nil {
				sc.frames[e] = append(sc.frames[e], b)
				sc.sizes[e] += len(b)
			}
		}
	}
	for _, sub := range subs {
		e := sub.Encoding()
		d, x := sub.Deliver(sc.frames[e], sc.sizes[e], &sc.iov)
		delivered += uint64(d)
		dropped += uint64(x)
	}
	for e := range sc.frames {
		clear(sc.frames[e]) // the ring let go of these messages: so do we
	}
	return delivered, dropped
}

// sweep runs every subscriber's timers and samples its queue, at the
// hub's sweep number tick. Pings are spread: a subscriber is pinged in the
// sweeps of its phase only, so each sweep pings 1/pingPhases of the table
// (a flat load instead of every client at once, every interval). Sweeps
// this shard missed while busy ping their phases now.
func (s *Shard) sweep(now int64, tick uint64) {
	phases := s.hub.pingPhases
	span := tick - s.lastSweep
	first := (s.lastSweep + 1) % max(phases, 1)
	s.lastSweep = tick
	for _, sub := range s.subs {
		ping := false
		if phases > 0 {
			ping = span >= phases || (uint64(sub.HubSlot().phase)+phases-first)%phases < span
		}
		if q := sub.Sweep(now, ping); q > 0 {
			s.queueHist.Observe(float64(q))
		}
	}
}

// shutdownStep carries out a Force, or a Drain once the shard has
// delivered every message broadcast before it. It reports whether the ring
// still holds messages for the shard (the drain waits for them).
func (s *Shard) shutdownStep() (pending bool) {
	switch {
	case s.forcing.Load():
		for _, sub := range s.subs {
			sub.Kill()
		}
	case s.draining.Load() && !s.drain.done:
		// Drain closed the hub before it set draining: whatever the ring
		// holds now is all there will ever be.
		if s.hub.pending(s) {
			return true
		}
		s.drainStep()
	}
	return false
}

// drainState is a shard's progress through Drain: subscribers say goodbye
// in a random order, spread over Config.DrainSpread.
type drainState struct {
	started, done bool
	start         time.Time
	order         []Subscriber // the table when the drain started, shuffled
	next          int          // order[:next] were drained
}

// drainStep drains the subscribers whose turn has come, and sets a timer
// for the next turn. Subscribers that join meanwhile are drained as they
// join (applyInbox).
func (s *Shard) drainStep() {
	d := &s.drain
	spread := s.hub.cfg.DrainSpread
	if !d.started {
		d.started, d.start = true, time.Now()
		d.order = append([]Subscriber(nil), s.subs...)
		rand.Shuffle(len(d.order), func(i, j int) { d.order[i], d.order[j] = d.order[j], d.order[i] })
	}
	due := len(d.order)
	if elapsed := time.Since(d.start); spread > 0 && elapsed < spread {
		due = int(int64(len(d.order)) * int64(elapsed) / int64(spread))
	}
	for ; d.next < due; d.next++ {
		d.order[d.next].Drain()
		d.order[d.next] = nil
	}
	if d.next == len(d.order) {
		d.done, d.order = true, nil
		return
	}
	step := max(spread/time.Duration(len(d.order)), 5*time.Millisecond)
	time.AfterFunc(step, s.notify)
}
