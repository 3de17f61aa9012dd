package hub

import (
	"math/rand/v2"
	"slices"
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
	// message on its channels the shard takes from now on is delivered
	// to it. j says where its live messages start, and holds what it
	// missed when it asked to resume (valid during the call only).
	Join(j Joined)
	// Encoding is the encoding the subscriber writes; it never changes.
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

// Subscription is what a subscriber asks for as it is added.
type Subscription struct {
	// Channels are the channels it receives, distinct names; none means
	// the default channel ("").
	Channels []string
	// Resume asks for the messages on Channels after Since, replayed
	// before the live ones (Joined.Recovered says whether they could be).
	Resume bool
	Since  Cursor
}

// Cursor is a position in the hub's order: a seq, in the run of seqs
// Epoch names. A client that has seen every message up to Seq resumes
// from it.
type Cursor struct {
	Epoch string
	Seq   uint64
}

// Joined is what a subscriber learns as it joins its shard.
type Joined struct {
	// Epoch and Seq are the latest cursor before its first live message
	// (Seq 0: none yet in Epoch): it receives
	// every message on its channels with a greater seq, live, and none
	// with a smaller one.
	Epoch string
	Seq   uint64
	// Recovered: Resume was asked and Replay holds every message on its
	// channels after Since, up to Seq, in seq order. False with Resume:
	// they are not all known (another epoch, history gone) and Replay is
	// empty; never part of them.
	Recovered bool
	Replay    []Message
	// Channels are the channels it joined, as it asked for them (none:
	// the default channel), valid during Join: a subscriber need not keep
	// them (Hub.On answers from the table).
	Channels []string
	// More: Replay is the first part of what the subscriber missed (it
	// was over Config.ReplayBytes). It must end after the replay, before
	// any live message, and resume from the replay's last seq.
	More bool
}

// Shard owns a slice of the subscriber table. Its goroutine is the only
// one that touches subs; additions and removals reach it through an inbox.
type Shard struct {
	hub  *Hub
	wake chan struct{} // capacity 1: "something to do"
	stop chan struct{}

	cursor atomic.Uint64 // next position to take from the ring
	last   Cursor        // guarded by hub.mu: the cursor of the last message taken
	from   string        // the epoch of the message before the batch just taken (take)
	count  atomic.Int64  // len(subs), for readers outside the goroutine

	sweepDue  atomic.Bool
	sweepTick atomic.Uint64 // the hub's sweep count when sweepDue was set
	draining  atomic.Bool   // Drain: deliver what was taken, then Subscriber.Drain
	forcing   atomic.Bool   // Force: Subscriber.Kill

	mu      sync.Mutex
	adds    []addition   // guarded by mu
	links   []linkOp     // guarded by mu
	removes []Subscriber // guarded by mu

	// Owned by the shard goroutine (table's channel counts excepted: see
	// Table).
	spareAdds    []addition   // the inbox's other buffers
	waiting      []addition   // resumes from a seq the shard has not taken yet (see applyInbox)
	spareRemoves []Subscriber //
	spareLinks   []linkOp     //
	table        Table
	lastSweep    uint64 // the hub tick of the last sweep
	batch        []Message
	replay       []Message // a joining subscriber's Joined.Replay
	drain        drainState

	counters   Counters // the table counts into them, subscriber by subscriber
	fanoutHist *Hist    // seconds per batch
	queueHist  *Hist    // queued bytes per backlogged subscriber, per sweep
}

// addition is a subscriber on its way into the table.
type addition struct {
	sub   Subscriber
	req   Subscription
	since int64 // unix ns it began to wait for a seq the hub has not reached
}

func newShard(h *Hub) *Shard {
	s := &Shard{
		hub:        h,
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		fanoutHist: NewHist(fanoutBounds...),
		queueHist:  NewHist(queueBounds...),
	}
	s.cursor.Store(1) // positions start at 1
	s.last = h.last
	s.table.counted = &s.counters
	return s
}

func (s *Shard) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Shard) add(sub Subscriber, req Subscription) {
	s.mu.Lock()
	s.adds = append(s.adds, addition{sub: sub, req: req})
	s.mu.Unlock()
	s.notify()
}

// linkOp puts a subscriber in the table on one more channel, or takes it
// off one (Hub.Link, Hub.Unlink).
type linkOp struct {
	sub     Subscriber
	channel string
	add     bool
	done    func(ok bool)
}

func (s *Shard) link(op linkOp) {
	s.mu.Lock()
	s.links = append(s.links, op)
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
//
// A joining subscriber's live messages start at the shard's cursor, which
// only this goroutine moves: what it missed before that is in the history
// (Hub.Broadcast keeps a message there before any shard can take it), so
// its replay ends exactly where its live messages begin.
func (s *Shard) applyInbox() {
	s.mu.Lock()
	adds, links, removes := s.adds, s.links, s.removes
	s.adds, s.links, s.removes = s.spareAdds[:0], s.spareLinks[:0], s.spareRemoves[:0]
	s.mu.Unlock()
	if len(adds) > 0 {
		s.catchUp()
	}
	adds = s.admitWaiting(adds)
	for _, a := range adds {
		s.table.Link(a.sub, a.req.Channels)
	}
	// Counted before they join: a client that has its 101 (Join sends
	// it) finds itself in Len.
	s.count.Store(int64(s.table.Len()))
	for _, a := range adds {
		a.sub.Join(s.joined(a.req))
		clear(s.replay)
		s.replay = s.replay[:0]
		if cap(s.replay) > 4096 {
			s.replay = nil // a big replay's buffer is not kept for the next
		}
		if s.drain.started {
			a.sub.Drain()
		}
	}
	if len(links) > 0 && len(adds) == 0 {
		s.catchUp() // as for a join: its first live message is the next one taken
	}
	for _, op := range links {
		// A subscriber removed in this same inbox is still in the table
		// here: what it is told no longer matters.
		var ok bool
		if op.add {
			ok = s.table.AddLink(op.sub, op.channel)
		} else {
			ok = s.table.DropLink(op.sub, op.channel)
		}
		if op.done != nil {
			op.done(ok)
		}
	}
	for _, sub := range removes {
		s.table.Unlink(sub)
		s.waiting = slices.DeleteFunc(s.waiting, func(a addition) bool { return a.sub == sub })
	}
	clear(adds)
	clear(links)
	clear(removes)
	s.spareAdds, s.spareLinks, s.spareRemoves = adds, links, removes
	s.count.Store(int64(s.table.Len()))
}

// catchUp delivers what the ring holds for the shard, up to the latest
// broadcast now, to its members, before subscribers join: a shard behind
// the others would otherwise deliver to a newcomer, as if live, messages
// published before its 101 (and its welcome's seq would be behind).
func (s *Shard) catchUp() {
	_, _, head := s.hub.shardLast(s)
	for s.cursor.Load() < head && s.hub.take(s) > 0 {
		s.fanOut()
	}
}

// admitWaiting returns the additions that join now: adds and those that
// waited, less those that must wait. A subscriber resuming from a seq this
// shard has not taken yet (another shard delivered it to the client's
// earlier connection) waits for the shard to pass it, a batch or two:
// joining now would deliver it, live, messages it already has. Its 101
// waits with it. In a tier, a seq the whole hub has not reached yet (the
// client comes from a node ahead of this one) waits too, up to
// Hub.SetAheadWait; then it joins, not recovered.
func (s *Shard) admitWaiting(adds []addition) []addition {
	last, latest, _ := s.hub.shardLast(s)
	if len(s.waiting) == 0 && !anyAhead(adds, last) {
		return adds
	}
	all := append(s.waiting, adds...)
	s.waiting = nil
	ready := adds[:0]
	now, ahead := time.Now().UnixNano(), s.hub.aheadWait.Load()
	for _, a := range all {
		r := a.req
		wait := r.Resume && r.Since.Epoch == latest.Epoch && (last.Epoch != latest.Epoch || r.Since.Seq > last.Seq)
		// A seq the hub has not reached waits (in a tier) up to the
		// ahead wait; so does one it passed with no message (Pass), which
		// the shard passes only with the next message.
		if wait && (r.Since.Seq > latest.Seq || ahead > 0) {
			if a.since == 0 {
				a.since = now
			}
			wait = now-a.since < ahead
		}
		if wait {
			s.waiting = append(s.waiting, a)
			continue
		}
		ready = append(ready, a)
	}
	return ready
}

// anyAhead reports whether some addition resumes from beyond last, the
// shard's cursor.
func anyAhead(adds []addition, last Cursor) bool {
	for _, a := range adds {
		if a.req.Resume && (a.req.Since.Epoch != last.Epoch || a.req.Since.Seq > last.Seq) {
			return true
		}
	}
	return false
}

// joined is where a subscriber asking for req starts: the cursor of the
// shard's last message and, if it asked to resume, what it missed.
func (s *Shard) joined(req Subscription) Joined {
	last, _, _ := s.hub.shardLast(s)
	j := Joined{Epoch: last.Epoch, Seq: last.Seq, Channels: req.Channels}
	if !req.Resume || req.Since.Epoch != j.Epoch || req.Since.Seq > j.Seq {
		return j // nothing asked, or a cursor of another run of seqs
	}
	if req.Since.Seq == j.Seq {
		j.Recovered = true // nothing published since
		return j
	}
	if s.hub.hist == nil {
		return j
	}
	channels := req.Channels
	if len(channels) == 0 {
		channels = defaultChannel
	}
	replay, complete, ok := s.hub.hist.Replay(s.replay[:0], channels, req.Since, j.Seq, s.hub.cfg.ReplayBytes)
	s.replay = replay
	if ok {
		j.Recovered, j.Replay, j.More = true, replay, !complete
	}
	return j
}

// fanOut delivers the batch just taken to every subscriber of the shard.
// Where the batch crosses into a new epoch (a tier's log was recreated),
// the subscribers that resume by cursor are asked to leave first (1001,
// as in a shutdown): their cursors name the old epoch, and they reconnect
// for a welcome in the new one. Raw ones carry on.
func (s *Shard) fanOut() {
	start := time.Now()
	batch := s.batch
	if n := len(batch); n > 0 && batch[n-1].lazy.epoch != s.from {
		i := slices.IndexFunc(batch, func(m Message) bool { return m.lazy.epoch != s.from })
		s.table.FanOut(batch[:i])
		for _, sub := range s.table.subs {
			if e := sub.Encoding(); e == EncodingJSON || e == EncodingSSE || e == EncodingJSONDeflate {
				sub.Drain()
			}
		}
		batch = batch[i:]
	}
	s.table.FanOut(batch) // counted in s.counters as it goes
	clear(s.batch)
	s.fanoutHist.Observe(time.Since(start).Seconds())
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
	for _, sub := range s.table.subs {
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
		for _, sub := range s.table.subs {
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
		d.order = append([]Subscriber(nil), s.table.subs...)
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
