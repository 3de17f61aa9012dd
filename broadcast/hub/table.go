package hub

import (
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Slot is the hub's bookkeeping inside a subscriber: which shard, where in
// its table, and its place in each of its channels' member lists. Embed
// it; the zero value is "in no hub". Everything but phase is owned by the
// shard goroutine.
type Slot struct {
	shard *Shard
	idx   int32       // in Table.subs
	phase uint32      // the sweep, of every Hub.pingPhases, that pings it
	first link        // its first channel (every subscriber has one)
	more  *extraLinks // the others, for a subscriber of several; nil for one (most: 8 bytes, not 32)
}

// extraLinks are the channels of a subscriber of several beyond its
// first, and the fan-out's mark for it.
type extraLinks struct {
	links []link
	mark  uint64 // the batch (Table.batchNo) that last put it in Table.multi
}

// HubSlot implements Subscriber.
func (s *Slot) HubSlot() *Slot { return s }

// link is a subscriber's membership of one channel: which, and where in
// its member list.
type link struct {
	ch  *channel
	idx int32
}

// linkAt returns the subscriber's i-th link.
func (s *Slot) linkAt(i int32) *link {
	if i == 0 {
		return &s.first
	}
	return &s.more.links[i-1]
}

// links is the number of channels the subscriber is on.
func (s *Slot) links() int32 {
	if s.more == nil {
		return 1
	}
	return int32(1 + len(s.more.links))
}

// on reports whether the subscriber is a member of ch.
func (s *Slot) on(ch *channel) bool {
	if s.first.ch == ch {
		return true
	}
	if s.more == nil {
		return false
	}
	for i := range s.more.links {
		if s.more.links[i].ch == ch {
			return true
		}
	}
	return false
}

// onLocked reports whether the subscriber is on the channel called name;
// its table's mu must be held (read).
func (s *Slot) onLocked(name string) bool {
	for li := int32(0); li < s.links(); li++ {
		if ch := s.linkAt(li).ch; ch != nil && ch.name == name {
			return true
		}
	}
	return false
}

// channel is one channel's members in one shard. It exists while it has
// some: a publish to a channel nobody in the shard is on costs one map
// lookup.
type channel struct {
	name    string
	members []member
	enc     [numEncodings]int32 // members by the encoding they write
	mark    uint64              // the batch (Table.batchNo) that last grouped it
	grp     int32               // its group in that batch
}

// member is one subscriber in a channel's list, and which of its links
// points back here.
type member struct {
	sub  Subscriber
	link int32
}

// Table is one shard's subscribers, indexed by channel, and the fan-out
// step over them. It has no goroutine: its owner (the shard goroutine, or
// a benchmark) is the only one that changes it or fans out through it;
// others may only ask how many are on a channel (Members, Channels).
type Table struct {
	subs []Subscriber // every subscriber, for sweeps and shutdown

	// mu is held by the owner while it changes channels, and by the
	// other goroutines while they read it; the owner reads it without.
	mu            sync.RWMutex
	channels      map[string]*channel
	subscriptions atomic.Int64 // memberships, for readers outside

	// counted, if set, gets each subscriber's deliveries and drops as its
	// Deliver returns (the shard's counters): what a client has, the
	// counters already say, not only once the whole batch went out.
	counted *Counters

	// The fan-out's scratch, reused batch after batch.
	batchNo uint64
	groups  []group      // channels of this batch that have members here
	msgCh   []*channel   // per batch message: its channel here, or nil
	multi   []Subscriber // subscribers of several of this batch's channels
	frames  [][]byte     // one multi subscriber's frames
	iov     []unix.Iovec
}

// group is one channel's messages in a batch: their frames, per encoding
// its members write.
type group struct {
	ch     *channel
	frames [numEncodings][][]byte
	sizes  [numEncodings]int
	// excl are the subscribers some of the group's messages leave out
	// (Meta.Exclude): rare, and only then do members get looked at.
	excl []uint64
}

// Link puts sub in the table, on channels (names distinct; none is the
// default channel, ""). The owner calls it.
func (t *Table) Link(sub Subscriber, channels []string) {
	slot := sub.HubSlot()
	slot.idx = int32(len(t.subs))
	t.subs = append(t.subs, sub)
	if len(channels) == 0 {
		channels = defaultChannel
	}
	if len(channels) > 1 && hasRepeats(channels) {
		channels = Distinct(channels) // linked twice, it would get everything twice
	}
	e := sub.Encoding()
	t.mu.Lock() // the links too are read by others (Hub.On), under it
	defer t.mu.Unlock()
	if len(channels) > 1 {
		slot.more = &extraLinks{links: make([]link, len(channels)-1)}
	}
	if t.channels == nil {
		t.channels = make(map[string]*channel)
	}
	for i, name := range channels {
		ch := t.channels[name]
		if ch == nil {
			ch = &channel{name: name}
			t.channels[name] = ch
		}
		*slot.linkAt(int32(i)) = link{ch: ch, idx: int32(len(ch.members))}
		ch.members = append(ch.members, member{sub: sub, link: int32(i)})
		ch.enc[e]++
	}
	if channels[0] != Nowhere { // on none: no subscription
		t.subscriptions.Add(int64(len(channels)))
	}
}

var defaultChannel = []string{""}

// Nowhere is the channel of a subscriber that is, for now, on none: a
// Pusher connection before its first subscribe, or after its last
// unsubscribe. Nothing is published to it (ValidChannel refuses the
// name), and its first real channel takes its place (AddLink), so such a
// subscriber costs what one on a channel does.
const Nowhere = "\x00"

// AddLink puts sub, in the table, on one more channel; false if it is on
// it already, or not in the table. The owner calls it.
func (t *Table) AddLink(sub Subscriber, name string) bool {
	slot := sub.HubSlot()
	if i := int(slot.idx); i < 0 || i >= len(t.subs) || t.subs[i] != sub {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if slot.onLocked(name) {
		return false
	}
	e := sub.Encoding()
	ch := t.channels[name]
	if ch == nil {
		ch = &channel{name: name}
		t.channels[name] = ch
	}
	li := slot.links()
	if slot.first.ch.name == Nowhere {
		t.dropMemberLocked(slot, 0, e)
		li = 0
	} else {
		if slot.more == nil {
			slot.more = &extraLinks{}
		}
		slot.more.links = append(slot.more.links, link{})
	}
	*slot.linkAt(li) = link{ch: ch, idx: int32(len(ch.members))}
	ch.members = append(ch.members, member{sub: sub, link: li})
	ch.enc[e]++
	t.subscriptions.Add(1)
	return true
}

// DropLink takes sub off one channel, staying in the table (on Nowhere
// when it was its last); false if it was not on it. The owner calls it.
func (t *Table) DropLink(sub Subscriber, name string) bool {
	slot := sub.HubSlot()
	if i := int(slot.idx); i < 0 || i >= len(t.subs) || t.subs[i] != sub || name == Nowhere {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := slot.links()
	li := int32(-1)
	for i := int32(0); i < n; i++ {
		if slot.linkAt(i).ch.name == name {
			li = i
			break
		}
	}
	if li < 0 {
		return false
	}
	e := sub.Encoding()
	t.dropMemberLocked(slot, li, e)
	t.subscriptions.Add(-1)
	if n == 1 { // its last channel: back to Nowhere
		ch := t.channels[Nowhere]
		if ch == nil {
			ch = &channel{name: Nowhere}
			t.channels[Nowhere] = ch
		}
		slot.first = link{ch: ch, idx: int32(len(ch.members))}
		ch.members = append(ch.members, member{sub: sub, link: 0})
		ch.enc[e]++
		return true
	}
	if last := n - 1; li != last {
		// The last link fills the gap; its member entry learns where.
		moved := *slot.linkAt(last)
		*slot.linkAt(li) = moved
		moved.ch.members[moved.idx].link = li
	}
	slot.more.links = slot.more.links[:len(slot.more.links)-1]
	if len(slot.more.links) == 0 {
		slot.more = nil
	}
	return true
}

// dropMemberLocked takes the subscriber out of the member list of its
// li-th link's channel (dropping the channel when it empties) and clears
// the link.
func (t *Table) dropMemberLocked(slot *Slot, li int32, e Encoding) {
	l := slot.linkAt(li)
	ch := l.ch
	end := len(ch.members) - 1
	moved := ch.members[end]
	ch.members[l.idx] = moved
	moved.sub.HubSlot().linkAt(moved.link).idx = l.idx
	ch.members[end] = member{}
	ch.members = ch.members[:end]
	ch.enc[e]--
	if end == 0 {
		delete(t.channels, ch.name)
	}
	*l = link{}
}

func hasRepeats(names []string) bool {
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			return true
		}
	}
	return false
}

// Distinct returns names without repeats, in their order.
func Distinct(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Unlink takes sub out of the table; a subscriber not in it is left
// alone. The owner calls it.
func (t *Table) Unlink(sub Subscriber) {
	slot := sub.HubSlot()
	i := int(slot.idx)
	if i < 0 || i >= len(t.subs) || t.subs[i] != sub {
		return // already gone
	}
	last := len(t.subs) - 1
	t.subs[i] = t.subs[last]
	t.subs[i].HubSlot().idx = int32(i)
	t.subs[last] = nil
	t.subs = t.subs[:last]
	slot.idx = -1

	e := sub.Encoding()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := slot.links()
	if slot.first.ch.name != Nowhere {
		t.subscriptions.Add(-int64(n))
	}
	for li := int32(0); li < n; li++ {
		t.dropMemberLocked(slot, li, e)
	}
	slot.more = nil
}

// Subscriptions is the number of channel memberships in the table, a
// subscriber on Nowhere counting none; any goroutine may ask.
func (t *Table) Subscriptions() int64 { return t.subscriptions.Load() }

// Len is the number of subscribers in the table. The owner calls it.
func (t *Table) Len() int { return len(t.subs) }

// Members is how many of the table's subscribers are on channel; any
// goroutine may ask.
func (t *Table) Members(channel string) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if ch := t.channels[channel]; ch != nil {
		return len(ch.members)
	}
	return 0
}

// eachChannel calls fn with every channel that has members here and
// their number; any goroutine may ask. fn must not call back into t.
func (t *Table) eachChannel(fn func(name string, members int)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for name, ch := range t.channels {
		fn(name, len(ch.members))
	}
}

// FanOut writes batch, in order, to every subscriber on each message's
// channel. Per channel of the batch, the list of its frames is built once
// per encoding its members write, and the same bytes go to each of them,
// one Deliver (one writev) per subscriber and batch. A subscriber on
// several of the batch's channels gets their messages merged, in batch
// order. It allocates nothing once the scratch has grown to the batch.
// The owner calls it.
func (t *Table) FanOut(batch []Message) (delivered, dropped uint64) {
	t.batchNo++
	t.group(batch)
	several := len(t.groups) > 1
	for g := range t.groups {
		grp := &t.groups[g]
		for _, mb := range grp.ch.members {
			sub := mb.sub
			if several {
				if more := sub.HubSlot().more; more != nil {
					// On several channels, maybe several of this
					// batch's: merged below, in one Deliver.
					if more.mark != t.batchNo {
						more.mark = t.batchNo
						t.multi = append(t.multi, sub)
					}
					continue
				}
			}
			if len(grp.excl) > 0 && excluded(sub, grp.excl) {
				d, x := t.deliverFiltered(sub, batch, grp.ch)
				t.count(d, x)
				delivered += uint64(d)
				dropped += uint64(x)
				continue
			}
			e := sub.Encoding()
			d, x := sub.Deliver(grp.frames[e], grp.sizes[e], &t.iov)
			t.count(d, x)
			delivered += uint64(d)
			dropped += uint64(x)
		}
	}
	for _, sub := range t.multi {
		d, x := t.deliverMerged(sub, batch)
		t.count(d, x)
		delivered += uint64(d)
		dropped += uint64(x)
	}
	t.release()
	return delivered, dropped
}

// Counters are a table's running deliveries and drops.
type Counters struct {
	Deliveries, Dropped atomic.Uint64
}

func (t *Table) count(delivered, dropped int) {
	if t.counted != nil {
		t.counted.Deliveries.Add(uint64(delivered))
		if dropped > 0 {
			t.counted.Dropped.Add(uint64(dropped))
		}
	}
}

// group sorts the batch's messages into the groups of the channels that
// have members here, and builds each group's frames for the encodings its
// members write (building an encoding the first time any shard needs it).
func (t *Table) group(batch []Message) {
	t.msgCh = t.msgCh[:0]
	for i := range batch {
		m := &batch[i]
		ch := t.channels[m.Channel]
		t.msgCh = append(t.msgCh, ch)
		if ch == nil {
			continue
		}
		if ch.mark != t.batchNo {
			ch.mark, ch.grp = t.batchNo, int32(len(t.groups))
			if len(t.groups) < cap(t.groups) {
				t.groups = t.groups[:len(t.groups)+1]
			} else {
				t.groups = append(t.groups, group{})
			}
			t.groups[ch.grp].ch = ch
		}
		grp := &t.groups[ch.grp]
		if ex := m.lazy.meta.Exclude; ex != 0 {
			grp.excl = append(grp.excl, ex)
		}
		for e := range numEncodings {
			if ch.enc[e] > 0 {
				b := m.Bytes(e)
				grp.frames[e] = append(grp.frames[e], b)
				grp.sizes[e] += len(b)
			}
		}
	}
}

// deliverMerged delivers to sub, a subscriber of several channels, the
// batch's messages on any of them, in batch order.
func (t *Table) deliverMerged(sub Subscriber, batch []Message) (int, int) {
	slot, e := sub.HubSlot(), sub.Encoding()
	frames, size := t.frames[:0], 0
	// Which of the batch's groups are its channels: a bit each, so that a
	// message is checked in one step, not against every link (O(links +
	// batch), not O(links × batch)). A batch has at most maxBatch (64)
	// messages, so as many groups; a longer one (FanOut from a benchmark)
	// checks the links.
	var mine uint64
	bits := len(t.groups) <= 64
	if bits {
		for li := int32(0); li < slot.links(); li++ {
			if ch := slot.linkAt(li).ch; ch.mark == t.batchNo {
				mine |= 1 << ch.grp
			}
		}
	}
	for i, ch := range t.msgCh {
		if ch != nil && (bits && mine&(1<<ch.grp) != 0 || !bits && slot.on(ch)) {
			if ex := batch[i].lazy.meta.Exclude; ex != 0 && excluded(sub, []uint64{ex}) {
				continue
			}
			b := batch[i].Bytes(e)
			frames = append(frames, b)
			size += len(b)
		}
	}
	t.frames = frames
	if len(frames) == 0 { // everything it was on left it out
		return 0, 0
	}
	return sub.Deliver(frames, size, &t.iov)
}

// excluded reports whether sub is one of ids (Meta.Exclude).
func excluded(sub Subscriber, ids []uint64) bool {
	is, ok := sub.(Identified)
	return ok && slices.Contains(ids, is.ID())
}

// deliverFiltered delivers to sub the batch's messages on ch that do not
// exclude it, in batch order.
func (t *Table) deliverFiltered(sub Subscriber, batch []Message, ch *channel) (int, int) {
	id, e := sub.(Identified).ID(), sub.Encoding()
	frames, size := t.frames[:0], 0
	for i, c := range t.msgCh {
		if c == ch && batch[i].lazy.meta.Exclude != id {
			b := batch[i].Bytes(e)
			frames = append(frames, b)
			size += len(b)
		}
	}
	t.frames = frames
	if len(frames) == 0 {
		return 0, 0
	}
	return sub.Deliver(frames, size, &t.iov)
}

// release lets go of the batch's frames: the ring let go of these
// messages, and so does the scratch.
func (t *Table) release() {
	for g := range t.groups {
		grp := &t.groups[g]
		for e := range grp.frames {
			clear(grp.frames[e])
			grp.frames[e], grp.sizes[e] = grp.frames[e][:0], 0
		}
		grp.ch, grp.excl = nil, grp.excl[:0]
	}
	t.groups = t.groups[:0]
	clear(t.msgCh)
	clear(t.multi)
	clear(t.frames)
	t.multi, t.frames = t.multi[:0], t.frames[:0]
}
