// Package history keeps recent messages per channel, for subscribers that
// resume after a disconnect: Memory, the in-memory hub.History of one node.
//
// What it keeps is bounded three ways: messages per channel (Size), age
// (TTL) and bytes over the whole node (Bytes; the oldest go first, on any
// channel). What it forgot it still knows about: each channel remembers
// the latest seq it forgot, so a resume from before it is refused rather
// than replayed with a hole (hub.History.Replay).
package history

import (
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanout/fanout/broadcast/hub"
)

// Config bounds a Memory. The zero value works: each field says what zero
// means.
type Config struct {
	// Size is how many messages each channel keeps. Zero means 1024.
	Size int
	// TTL is how long a message is kept. Zero means 5 minutes.
	TTL time.Duration
	// Bytes bounds what the whole history holds (hub.Message.Size: the
	// raw frame and the JSON envelope), over every channel; beyond it the
	// oldest messages, on any channel, are forgotten. Zero means 64 MiB.
	Bytes int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig is the Config a zero value stands for.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.Size <= 0 {
		c.Size = 1024
	}
	if c.TTL <= 0 {
		c.TTL = 5 * time.Minute
	}
	if c.Bytes <= 0 {
		c.Bytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Why a message was forgotten.
const (
	forgotSize  = iota // its channel had Size newer ones
	forgotTTL          // older than TTL
	forgotBytes        // the node's history was over Bytes
	forgotEpoch        // a new epoch began (a tier's log was recreated)
	numForgot
)

// Memory is the in-memory history of one node. Create one with New.
type Memory struct {
	cfg Config

	mu      sync.Mutex
	streams map[string]*stream // guarded by mu: channels with messages kept
	order   []entry            // guarded by mu: every kept message, oldest first (and some forgotten: see compact)
	orderAt int                // guarded by mu: order[:orderAt] are gone
	kept    int                // guarded by mu: messages kept
	bytes   int64              // guarded by mu: their hub.Message.Size
	// forgotTop is the latest seq forgotten from a channel whose record
	// went with its last message: a resume from before it, on a channel
	// without a record, may have missed it.
	forgotTop  uint64 // guarded by mu
	epoch      string // guarded by mu: the run of seqs kept (Skip)
	fullLogged bool   // guarded by mu: the budget was reached and said so

	forgot [numForgot]atomic.Uint64
}

// stream is one channel's kept messages, oldest first.
type stream struct {
	name  string
	msgs  []kept
	at    int    // msgs[:at] are forgotten
	floor uint64 // the latest seq forgotten from this channel
}

type kept struct {
	msg  hub.Message
	at   int64 // unix ns appended
	size int64
}

// entry is one kept message in the node-wide order.
type entry struct {
	st  *stream
	seq uint64
}

// New returns an empty history bounded by cfg.
func New(cfg Config) *Memory {
	cfg = cfg.withDefaults()
	return &Memory{cfg: cfg, streams: make(map[string]*stream)}
}

// Append implements hub.History.
func (h *Memory) Append(m *hub.Message) {
	now := h.cfg.Now().UnixNano()
	size := int64(m.Size())
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.streams[m.Channel]
	if st == nil {
		st = &stream{name: m.Channel, floor: h.forgotTop}
		h.streams[m.Channel] = st
	}
	st.msgs = append(st.msgs, kept{msg: *m, at: now, size: size})
	h.order = append(h.order, entry{st: st, seq: m.Seq})
	h.kept++
	h.bytes += size
	for len(st.msgs)-st.at > h.cfg.Size {
		h.forgetLocked(st, forgotSize)
	}
	h.expireLocked(now)
	for h.bytes > h.cfg.Bytes && h.kept > 0 {
		if h.forgetOldestLocked(forgotBytes) && !h.fullLogged {
			// A full history is its normal state on a busy node: said
			// once, counted always (ForgotBytes).
			h.fullLogged = true
			h.cfg.Logger.Info("history: at its byte budget; the oldest messages are forgotten from now on (fanout_history_forgotten_total{bound=\"bytes\"})",
				"limit", h.cfg.Bytes, "kept", h.kept)
		}
	}
	h.compactLocked()
}

// Skip implements hub.History: a resume from before seq, on any channel,
// is not whole from here on; a new epoch forgets everything first.
func (h *Memory) Skip(epoch string, seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if epoch != h.epoch {
		for _, st := range h.streams {
			h.forgot[forgotEpoch].Add(uint64(len(st.msgs) - st.at))
		}
		clear(h.order)
		h.streams, h.order, h.orderAt, h.kept, h.bytes, h.forgotTop = make(map[string]*stream), h.order[:0], 0, 0, 0, 0
		h.epoch = epoch
	}
	h.forgotTop = max(h.forgotTop, seq)
	for _, st := range h.streams {
		st.floor = max(st.floor, seq)
	}
}

// Replay implements hub.History: the channels' streams, each in seq
// order already, merged; it stops at maxBytes, so that what a resume
// costs (here, under the lock, and on the shard that encodes it) is
// bounded, whatever the client asks.
func (h *Memory) Replay(dst []hub.Message, channels []string, since hub.Cursor, upto uint64, maxBytes int) ([]hub.Message, bool, bool) {
	now := h.cfg.Now().UnixNano()
	after := since.Seq
	h.mu.Lock()
	defer h.mu.Unlock()
	if since.Epoch != h.epoch {
		return dst, false, false
	}
	h.expireLocked(now)
	var stack [8][]kept
	heads := stack[:0] // per channel, what is left to replay
	for _, name := range channels {
		st := h.streams[name]
		if st == nil {
			if h.forgotTop > after {
				return dst, false, false // it may have had messages since, forgotten with its record
			}
			continue
		}
		if st.floor > after {
			return dst, false, false
		}
		msgs := st.msgs[st.at:]
		i := sort.Search(len(msgs), func(i int) bool { return msgs[i].msg.Seq > after })
		j := sort.Search(len(msgs), func(j int) bool { return msgs[j].msg.Seq > upto })
		if i < j {
			heads = append(heads, msgs[i:j])
		}
	}
	size := 0
	for len(heads) > 0 {
		if size >= maxBytes {
			return dst, false, true
		}
		low := 0
		for k := range heads {
			if heads[k][0].msg.Seq < heads[low][0].msg.Seq {
				low = k
			}
		}
		dst = append(dst, heads[low][0].msg)
		size += int(heads[low][0].size)
		if heads[low] = heads[low][1:]; len(heads[low]) == 0 {
			heads[low] = heads[len(heads)-1]
			heads = heads[:len(heads)-1]
		}
	}
	return dst, true, true
}

// Top is the latest seq kept on channel; 0 if none is.
func (h *Memory) Top(channel string) uint64 {
	now := h.cfg.Now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expireLocked(now)
	if st := h.streams[channel]; st != nil && st.at < len(st.msgs) {
		return st.msgs[len(st.msgs)-1].msg.Seq
	}
	return 0
}

// Tops returns the latest seq kept on every channel that has messages.
func (h *Memory) Tops() map[string]uint64 {
	now := h.cfg.Now().UnixNano()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.expireLocked(now)
	out := make(map[string]uint64, len(h.streams))
	for name, st := range h.streams {
		out[name] = st.msgs[len(st.msgs)-1].msg.Seq
	}
	return out
}

// Stats are a history's gauges and counters.
type Stats struct {
	Messages    int    // kept now
	Bytes       int64  // their size
	Channels    int    // channels with messages kept
	ForgotSize  uint64 // forgotten: their channel had Size newer ones
	ForgotTTL   uint64 // forgotten: older than TTL
	ForgotBytes uint64 // forgotten: the history was over Bytes
	ForgotEpoch uint64 // forgotten: a new epoch began
}

// Stats returns the history's gauges and counters.
func (h *Memory) Stats() Stats {
	now := h.cfg.Now().UnixNano()
	h.mu.Lock()
	h.expireLocked(now)
	st := Stats{Messages: h.kept, Bytes: h.bytes, Channels: len(h.streams)}
	h.mu.Unlock()
	st.ForgotSize, st.ForgotTTL, st.ForgotBytes = h.forgot[forgotSize].Load(), h.forgot[forgotTTL].Load(), h.forgot[forgotBytes].Load()
	st.ForgotEpoch = h.forgot[forgotEpoch].Load()
	return st
}

// Config returns the history's bounds, defaults filled in.
func (h *Memory) Config() Config { return h.cfg }

// forgetLocked forgets st's oldest message. A channel left with none loses
// its record; what it forgot is then remembered node-wide (forgotTop).
func (h *Memory) forgetLocked(st *stream, why int) {
	k := &st.msgs[st.at]
	st.floor = k.msg.Seq
	h.bytes -= k.size
	h.kept--
	*k = kept{}
	st.at++
	h.forgot[why].Add(1)
	switch {
	case st.at == len(st.msgs):
		if h.streams[st.name] == st {
			delete(h.streams, st.name)
		}
		h.forgotTop = max(h.forgotTop, st.floor)
		st.msgs, st.at = nil, 0
	case st.at > 64 && st.at*2 > len(st.msgs):
		st.msgs = append(st.msgs[:0], st.msgs[st.at:]...)
		clear(st.msgs[len(st.msgs):cap(st.msgs)])
		st.at = 0
	}
}

// forgetOldestLocked forgets the oldest message kept, on any channel; it
// reports whether one was.
func (h *Memory) forgetOldestLocked(why int) bool {
	for h.orderAt < len(h.order) {
		e := h.order[h.orderAt]
		h.order[h.orderAt] = entry{}
		h.orderAt++
		if st := e.st; st.at < len(st.msgs) && st.msgs[st.at].msg.Seq == e.seq {
			h.forgetLocked(st, why)
			return true
		}
		// Forgotten already (its channel's Size): skip it.
	}
	return false
}

// expireLocked forgets the messages older than TTL, oldest first.
func (h *Memory) expireLocked(now int64) {
	limit := now - int64(h.cfg.TTL)
	for h.orderAt < len(h.order) {
		e := h.order[h.orderAt]
		st := e.st
		if st.at >= len(st.msgs) || st.msgs[st.at].msg.Seq != e.seq {
			h.order[h.orderAt] = entry{}
			h.orderAt++ // forgotten already
			continue
		}
		if st.msgs[st.at].at > limit {
			return
		}
		h.forgetOldestLocked(forgotTTL)
	}
}

// compactLocked keeps the order's memory proportional to what is kept:
// entries of messages forgotten by their channel's Size stay in it until
// they reach its front, and on a busy channel they would pile up.
func (h *Memory) compactLocked() {
	live := len(h.order) - h.orderAt
	if live < 1024 || live < 2*h.kept {
		if h.orderAt > 1024 && h.orderAt*2 > len(h.order) {
			h.order = append(h.order[:0], h.order[h.orderAt:]...)
			clear(h.order[len(h.order):cap(h.order)])
			h.orderAt = 0
		}
		return
	}
	out := h.order[:0]
	for _, e := range h.order[h.orderAt:] {
		st := e.st
		if st.at < len(st.msgs) && e.seq >= st.msgs[st.at].msg.Seq {
			out = append(out, e)
		}
	}
	clear(h.order[len(out):])
	h.order, h.orderAt = out, 0
}
