package hub

import (
	"context"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by Broadcast.
var (
	// ErrBacklog: Config.Backlog messages already wait for the slowest
	// shard; the hub is not keeping up with the publish rate.
	ErrBacklog = errors.New("hub: backlog full")
	// ErrClosed: Drain was called; the hub takes no more messages.
	ErrClosed = errors.New("hub: closed")
)

// Config configures a Hub. The zero value works: each field says what
// zero means.
type Config struct {
	// Shards is the number of subscriber table shards, each with one
	// goroutine. Zero means 16.
	Shards int
	// Backlog is how many messages may wait for the slowest shard; a
	// Broadcast beyond it fails with ErrBacklog. Zero means 4096.
	Backlog int
	// FlushDelay is a batching window: a shard woken by a message waits
	// this long before it writes, so that messages published meanwhile go
	// out together. Zero writes at once.
	FlushDelay time.Duration
	// SweepEvery is how often every subscriber is swept (Subscriber.Sweep).
	// Zero means 1s.
	SweepEvery time.Duration
	// PingInterval is how often each subscriber is asked to ping, each in
	// its own phase of the interval (in sweeps of SweepEvery), so a sweep
	// pings a share of them and never all at once. Zero or negative: never.
	PingInterval time.Duration
	// DrainSpread spreads Drain's goodbyes over this long, in a random
	// order, so that clients do not all reconnect in the same instant.
	// Zero drains every subscriber at once.
	DrainSpread time.Duration
	// History keeps recent messages for subscribers that resume (see
	// Subscription.Resume). Nil keeps none: a resume is recovered only if
	// nothing was published since its cursor.
	History History
	// Epoch names this hub's run of seqs (they start at 1 with every
	// hub, unless Begin or Append says otherwise): a cursor of another
	// epoch cannot be resumed. Empty means a random one.
	Epoch string
	// CompressMinBytes: a message (or JSON envelope) under this many
	// bytes goes to permessage-deflate clients uncompressed. Zero means
	// 256.
	CompressMinBytes int
	// ReplayBytes bounds one resume's replay (Message.Size): a client
	// that missed more gets it in parts, resuming again after each
	// (Joined.More). Set it under what a connection may queue. Zero means
	// 1 MiB.
	ReplayBytes int
	// PusherChannel names a channel as Pusher clients know it (the
	// front door's app prefix taken off), for EncodingPusher. Nil: the
	// channel's own name.
	PusherChannel func(channel string) string
}

// History is where the hub keeps recent messages for subscribers that
// resume. Package history has the in-memory one. The hub calls Append and
// Skip in seq order, with its lock held: they must not block and must not
// call back into the hub.
type History interface {
	// Append keeps m, the hub's latest message, before any shard can
	// take it.
	Append(m *Message)
	// Skip says that the next message appended is in epoch, after seq,
	// and that messages of epoch up to seq may exist that were never
	// appended (a tier node starts, or misses some): a replay from
	// before seq cannot be whole. A new epoch forgets what was kept.
	Skip(epoch string, seq uint64)
	// Replay appends to dst the messages kept on channels of since's
	// epoch with since.Seq < seq <= upto, in seq order, and reports
	// whether they are all there (ok false: some may have been
	// forgotten, or the epoch is not the history's, and what it appended
	// is to be ignored). It stops once what it appended reaches maxBytes
	// (Message.Size; one message at least): complete is false when more
	// follow.
	Replay(dst []Message, channels []string, since Cursor, upto uint64, maxBytes int) (msgs []Message, complete, ok bool)
}

// maxBatch bounds how many messages a shard takes from the ring at once;
// for each subscriber they go out together (one writev).
const maxBatch = 64

// Hub orders broadcast messages in a ring that every shard reads at its
// own pace. Create one with New; several may run in one process.
//
// A message has a place in the ring (a position, one after the other) and
// a cursor, its seq in an epoch: one and the same run standalone (seqs
// 1, 2, 3...), whatever a tier's log says in a tier (Append), where seqs
// may skip and an epoch may end.
type Hub struct {
	cfg Config

	mu       sync.Mutex
	ring     []Message     // guarded by mu: slot pos%len(ring)
	head     uint64        // guarded by mu: position of the next message (from 1)
	last     Cursor        // guarded by mu: the latest message's cursor (seq 0 before the first)
	closed   bool          // guarded by mu: no more broadcasts
	roomWait chan struct{} // guarded by mu: closed when the slowest shard frees a slot (AppendWait)
	hist     History       // Append and Skip called with mu held

	shards     []*Shard
	aheadWait  atomic.Int64  // ns: SetAheadWait
	waits      atomic.Uint64 // times AppendWait found the ring full
	pingPhases uint64        // sweeps per ping interval; 0: no pings
	nextPhase  atomic.Uint64 // phases handed out round robin, for an even spread
	shardWG    sync.WaitGroup
	stopSweep  chan struct{}
	sweepDone  chan struct{}
	stopped    atomic.Bool
}

// New starts a hub's shards and its sweep ticker.
func New(cfg Config) *Hub {
	if cfg.Shards <= 0 {
		cfg.Shards = 16
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = 4096
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Second
	}
	if cfg.Epoch == "" {
		cfg.Epoch = NewEpoch()
	}
	if cfg.CompressMinBytes <= 0 {
		cfg.CompressMinBytes = 256
	}
	if cfg.ReplayBytes <= 0 {
		cfg.ReplayBytes = 1 << 20
	}
	h := &Hub{
		cfg:       cfg,
		head:      1,
		last:      Cursor{Epoch: cfg.Epoch},
		hist:      cfg.History,
		ring:      make([]Message, cfg.Backlog),
		shards:    make([]*Shard, cfg.Shards),
		stopSweep: make(chan struct{}),
		sweepDone: make(chan struct{}),
	}
	if cfg.PingInterval > 0 {
		h.pingPhases = uint64(max(cfg.PingInterval/cfg.SweepEvery, 1))
	}
	if h.hist != nil {
		h.hist.Skip(cfg.Epoch, 0)
	}
	for i := range h.shards {
		h.shards[i] = newShard(h)
	}
	for _, s := range h.shards {
		h.shardWG.Add(1)
		go func() {
			defer h.shardWG.Done()
			s.run()
		}()
	}
	go h.sweeps()
	return h
}

// Broadcast gives m the next seq, keeps it in the history, appends it to
// the ring and wakes every shard. It never blocks.
func (h *Hub) Broadcast(m Message) (seq uint64, err error) {
	h.mu.Lock()
	if err := h.roomLocked(); err != nil {
		h.mu.Unlock()
		return 0, err
	}
	seq = h.last.Seq + 1
	h.appendLocked(m, Cursor{Epoch: h.last.Epoch, Seq: seq})
	return seq, nil
}

// ErrOrder: Append was given a cursor at or before the hub's latest in
// the same epoch (a message taken twice from a tier's log).
var ErrOrder = errors.New("hub: message at or before the latest seq")

// Append is Broadcast for a message whose cursor a tier's log gave: seqs
// rise within an epoch and may skip (the history learns that it cannot
// replay across the skip), and a new epoch starts over (the history
// forgets the old one). It never blocks: ErrBacklog when the ring is
// full (see AppendWait).
func (h *Hub) Append(m Message, at Cursor) error {
	h.mu.Lock()
	if err := h.roomLocked(); err != nil {
		h.mu.Unlock()
		return err
	}
	if at.Epoch == h.last.Epoch && at.Seq <= h.last.Seq {
		h.mu.Unlock()
		return ErrOrder
	}
	h.appendLocked(m, at)
	return nil
}

// AppendWait is Append that waits, while ctx lasts, for the slowest shard
// to free a slot instead of failing with ErrBacklog: how a tier's
// consumer holds back rather than drop what its log has acknowledged.
func (h *Hub) AppendWait(ctx context.Context, m Message, at Cursor) error {
	for {
		err := h.Append(m, at)
		if !errors.Is(err, ErrBacklog) {
			return err
		}
		h.mu.Lock()
		if h.roomLocked() == nil { // freed since
			h.mu.Unlock()
			continue
		}
		h.waits.Add(1)
		if h.roomWait == nil {
			h.roomWait = make(chan struct{})
		}
		room := h.roomWait
		h.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Begin sets where the hub's seqs continue before any message is
// broadcast: a tier node's first seq follows its log's. It fails once a
// message went into the ring.
func (h *Hub) Begin(at Cursor) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.head != 1 {
		return errors.New("hub: Begin after the first message")
	}
	h.last = at
	if h.hist != nil {
		h.hist.Skip(at.Epoch, at.Seq)
	}
	for _, s := range h.shards {
		s.last = at
	}
	return nil
}

func (h *Hub) roomLocked() error {
	if h.closed {
		return ErrClosed
	}
	if h.head-h.minCursorLocked() >= uint64(len(h.ring)) {
		return ErrBacklog
	}
	return nil
}

// Pass moves the hub's latest cursor on to at without a message: the
// tier's log holds, at that seq, nothing to deliver (a message fanout did
// not publish, refused), so the history stays whole across it.
func (h *Hub) Pass(at Cursor) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if at.Epoch == h.last.Epoch && at.Seq <= h.last.Seq {
		return
	}
	if h.hist != nil && (at.Epoch != h.last.Epoch || at.Seq != h.last.Seq+1) {
		h.hist.Skip(at.Epoch, at.Seq-1)
	}
	h.last = at
}

// appendLocked puts m, at its cursor, in the history and the ring, then
// unlocks and wakes every shard.
func (h *Hub) appendLocked(m Message, at Cursor) {
	if h.hist != nil && (at.Epoch != h.last.Epoch || at.Seq != h.last.Seq+1) {
		h.hist.Skip(at.Epoch, at.Seq-1)
	}
	h.last = at
	m.Seq = at.Seq
	m.lazy.epoch, m.lazy.compressMin, m.lazy.pusherName = at.Epoch, h.cfg.CompressMinBytes, h.cfg.PusherChannel
	if h.hist != nil {
		// Before any shard can take it: a subscriber joining once a
		// shard has passed it finds it there (Shard.joined).
		h.hist.Append(&m)
	}
	h.ring[h.head%uint64(len(h.ring))] = m
	h.head++
	h.mu.Unlock() // counted (head) before any shard can deliver it
	for _, s := range h.shards {
		s.notify()
	}
}

// minCursorLocked is the oldest sequence some shard has not taken yet.
// h.mu must be held.
func (h *Hub) minCursorLocked() uint64 {
	m := h.head
	for _, s := range h.shards {
		m = min(m, s.cursor.Load())
	}
	return m
}

// take copies the next messages for s into s.batch and advances its cursor.
func (h *Hub) take(s *Shard) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := s.cursor.Load()
	n := min(h.head-cur, maxBatch)
	s.batch = s.batch[:0]
	for i := uint64(0); i < n; i++ {
		s.batch = append(s.batch, h.ring[(cur+i)%uint64(len(h.ring))])
	}
	before := h.minCursorLocked()
	s.cursor.Store(cur + n)
	s.from = s.last.Epoch
	if n > 0 {
		m := &s.batch[n-1]
		s.last = Cursor{Epoch: m.lazy.epoch, Seq: m.Seq}
	}
	// Slots every shard has taken are dropped now, so the ring does not
	// keep up to Backlog messages alive after they went out.
	after := h.minCursorLocked()
	for q := before; q < after; q++ {
		h.ring[q%uint64(len(h.ring))] = Message{}
	}
	if h.roomWait != nil && after > before {
		close(h.roomWait)
		h.roomWait = nil
	}
	return int(n)
}

// pending reports whether s has messages to take.
func (h *Hub) pending(s *Shard) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head > s.cursor.Load()
}

// Last is the latest message's cursor (seq 0 before the first).
func (h *Hub) Last() Cursor {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Epoch names the hub's current run of seqs (Config.Epoch, or what
// Begin and Append set).
func (h *Hub) Epoch() string { return h.Last().Epoch }

// SetAheadWait lets a subscriber resuming from a seq of the current epoch
// that the hub has not reached yet wait up to d for it: in a tier, a
// client that comes from a node ahead of this one. Zero (the default)
// joins it at once, not recovered: standalone, such a cursor is bogus.
func (h *Hub) SetAheadWait(d time.Duration) { h.aheadWait.Store(int64(d)) }

// count is the number of messages broadcast so far.
func (h *Hub) count() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head - 1
}

// shardLast is s's position as a cursor: the last message it took, and the
// hub's latest.
func (h *Hub) shardLast(s *Shard) (shard, latest Cursor, head uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return s.last, h.last, h.head
}

// NewEpoch returns a fresh random epoch: 12 characters of base32.
func NewEpoch() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:12]
}

// Members is the number of subscribers on channel now, over every shard.
func (h *Hub) Members(channel string) int {
	n := 0
	for _, s := range h.shards {
		n += s.table.Members(channel)
	}
	return n
}

// On reports whether sub, in the hub, is on channel ("" the default
// one); any goroutine may ask (the subscriber's read side does, for what
// its client publishes). A subscriber keeps no list of its own.
func (h *Hub) On(sub Subscriber, channel string) bool {
	slot := sub.HubSlot()
	s := slot.shard
	if s == nil {
		return false
	}
	s.table.mu.RLock()
	defer s.table.mu.RUnlock()
	return slot.onLocked(channel)
}

// FirstChannel is the first channel sub joined ("" for the default one,
// or when it is in no table yet).
func (h *Hub) FirstChannel(sub Subscriber) string {
	slot := sub.HubSlot()
	s := slot.shard
	if s == nil {
		return ""
	}
	s.table.mu.RLock()
	defer s.table.mu.RUnlock()
	if ch := slot.first.ch; ch != nil {
		return ch.name
	}
	return ""
}

// Channels returns every channel that has subscribers, and how many.
func (h *Hub) Channels() map[string]int {
	out := make(map[string]int)
	for _, s := range h.shards {
		s.table.eachChannel(func(name string, n int) {
			if name != Nowhere {
				out[name] += n
			}
		})
	}
	return out
}

// Add puts sub in the shard that id picks, on the channels req names. Its
// first live delivery is the first message on them its shard takes after
// the addition; Join tells it which, and brings the replay req asked for.
func (h *Hub) Add(sub Subscriber, id uint64, req Subscription) {
	s := h.shards[id%uint64(len(h.shards))]
	slot := sub.HubSlot()
	slot.shard = s
	if h.pingPhases > 0 {
		slot.phase = uint32(h.nextPhase.Add(1) % h.pingPhases)
	}
	s.add(sub, req)
}

// Link puts sub, added already, on one more channel: its first message
// there is the first one its shard takes after the link, and done (if
// not nil) runs on the shard's goroutine just before, with ok false when
// sub was on the channel already or is gone. done must not block; what
// it sends sub goes out ahead of every message on the channel.
func (h *Hub) Link(sub Subscriber, channel string, done func(ok bool)) {
	h.linkOp(linkOp{sub: sub, channel: channel, add: true, done: done})
}

// Unlink takes sub off one channel (it stays in the hub, on Nowhere when
// that was its last); done as for Link, after its last message there.
func (h *Hub) Unlink(sub Subscriber, channel string, done func(ok bool)) {
	h.linkOp(linkOp{sub: sub, channel: channel, done: done})
}

func (h *Hub) linkOp(op linkOp) {
	s := op.sub.HubSlot().shard
	if s == nil {
		if op.done != nil {
			op.done(false)
		}
		return
	}
	s.link(op)
}

// Remove takes sub out of its shard; removing twice is harmless.
func (h *Hub) Remove(sub Subscriber) {
	if s := sub.HubSlot().shard; s != nil {
		s.remove(sub)
	}
}

// Len returns the number of subscribers in the hub's tables.
func (h *Hub) Len() int {
	n := 0
	for _, s := range h.shards {
		n += int(s.count.Load())
	}
	return n
}

// sweeps asks every shard to sweep its subscribers every SweepEvery; the
// sweep's number says whose turn it is to be pinged (Shard.sweep).
func (h *Hub) sweeps() {
	defer close(h.sweepDone)
	t := time.NewTicker(h.cfg.SweepEvery)
	defer t.Stop()
	var tick uint64
	for {
		select {
		case <-h.stopSweep:
			return
		case <-t.C:
			tick++
			for _, s := range h.shards {
				s.sweepTick.Store(tick)
				s.sweepDue.Store(true)
				s.notify()
			}
		}
	}
}

// Drain refuses further broadcasts; every shard delivers what it has not
// taken yet, then asks each of its subscribers to leave (Subscriber.Drain).
func (h *Hub) Drain() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	for _, s := range h.shards {
		s.draining.Store(true)
		s.notify()
	}
}

// Force ends every subscriber at once (Subscriber.Kill), now and as they
// are added: the drain ran out of time.
func (h *Hub) Force() {
	for _, s := range h.shards {
		s.forcing.Store(true)
		s.notify()
	}
}

// Stop ends the sweeps and the shard goroutines and waits for them. Call
// it once, after Drain, when the subscribers are gone.
func (h *Hub) Stop() {
	if !h.stopped.CompareAndSwap(false, true) {
		return
	}
	close(h.stopSweep)
	<-h.sweepDone
	for _, s := range h.shards {
		close(s.stop)
	}
	h.shardWG.Wait()
}

// Stats are the hub's counters, summed over its shards.
type Stats struct {
	Broadcasts     uint64       // messages accepted into the ring
	BacklogWaits   uint64       // times AppendWait found the ring full and waited
	Deliveries     uint64       // messages handed to subscribers (written or queued)
	Dropped        uint64       // messages subscribers dropped (slow, drop policy)
	FanoutDuration HistSnapshot // seconds per shard batch
	QueueSizes     HistSnapshot // bytes queued per backlogged subscriber, sampled each sweep
	Subscriptions  int64        // channel memberships in the tables
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	st := Stats{Broadcasts: h.count(), BacklogWaits: h.waits.Load()}
	for _, s := range h.shards {
		st.Deliveries += s.counters.Deliveries.Load()
		st.Dropped += s.counters.Dropped.Load()
		st.Subscriptions += s.table.subscriptions.Load()
		s.fanoutHist.Snapshot(&st.FanoutDuration)
		s.queueHist.Snapshot(&st.QueueSizes)
	}
	return st
}
