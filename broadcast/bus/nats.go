// Package bus joins fanout processes into one tier over NATS: a message
// published on any node reaches every client on every node exactly once,
// and each node's messages stay in order.
//
// Every message is published to the bus, never delivered locally first; a
// node delivers what comes back from its subscription, its own messages
// included, so all nodes deliver them the same way and none twice.
//
// Core NATS is at-most-once, so the bus adds a small reliability layer:
//   - each message carries (origin, seq); a node keeps what it published
//     in a log bounded by BufferBytes: until its own subscription echoes
//     it back, and after that while there is room;
//   - after a reconnect, and a ResumeDelay that lets the other nodes
//     re-subscribe first, it publishes again whatever was not echoed, and
//     what was echoed within ResendWindow before the bus went away (the
//     server may have died half-way through handing it out);
//   - receivers deliver each origin's messages once and in order: they drop
//     (origin, seq) already delivered, hold a message that arrives after a
//     gap until the resend fills it (HoldTimeout at most), and count and
//     log the gaps that never fill.
//
// What does not fit in BufferBytes is refused, counted and logged, never
// silently lost.
package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Config configures a NATS bus. The zero value needs only URL.
type Config struct {
	// URL of the NATS server(s), comma-separated.
	URL string
	// Subject messages travel on. Empty means "fanout.broadcast".
	Subject string
	// BufferBytes bounds the log of published messages: those not yet
	// seen back from the bus (while it is down, for instance) and, while
	// there is room, recent ones kept for a resend. Zero means 8 MiB.
	BufferBytes int
	// ResumeDelay is how long after a reconnect the node waits before it
	// publishes its unconfirmed messages again, so that the other nodes
	// are subscribed again when they arrive. Zero means 1s.
	ResumeDelay time.Duration
	// ResendWindow: after a reconnect, messages echoed this long before
	// the disconnect are sent again too. Zero means 2s.
	ResendWindow time.Duration
	// ReconnectWait is the first delay between reconnect attempts; it
	// doubles per failed attempt up to ResumeDelay/2 (with jitter), so all
	// nodes are back within the resume delay. Zero means 250ms.
	ReconnectWait time.Duration
	// HoldTimeout is how long a message that arrives after a gap waits for
	// the missing ones (a node resends after a reconnect, possibly after
	// newer messages got through) before the gap is given up, counted and
	// logged. Zero means 2×ResumeDelay.
	HoldTimeout time.Duration
	// Name identifies this node to the NATS server. Optional.
	Name string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// header: origin uint64 | seq uint64 | kind byte | channel length byte,
// then the channel's name and the payload.
const headerSize = 18

// Errors returned by Publish.
var (
	ErrBufferFull = errors.New("bus: buffer full of unconfirmed messages")
	ErrClosed     = errors.New("bus: closed")
	ErrChannel    = errors.New("bus: channel name over 255 bytes")
)

// Deliver receives every message from the bus, in bus order, once: its
// channel, the kind its publisher gave it and its payload.
type Deliver func(channel string, kind byte, payload []byte)

type pending struct {
	seq  uint64
	data []byte    // encoded, header included
	at   time.Time // first published
}

// NATS is a running bus connection.
type NATS struct {
	cfg     Config
	log     *slog.Logger
	nc      *nats.Conn // set once under mu, right after connecting
	sub     *nats.Subscription
	deliver Deliver
	origin  uint64

	mu        sync.Mutex
	seq       uint64    // guarded by mu: last sequence published
	sent      []pending // guarded by mu: published messages in order, oldest first
	logSize   int       // guarded by mu: bytes in log
	confirmed uint64    // guarded by mu: highest own seq seen back
	downAt    time.Time // guarded by mu: when the bus last went away
	resuming  bool      // guarded by mu: republishing after a reconnect
	closed    bool      // guarded by mu

	// Receive side: per origin, what was delivered and what waits for a
	// gap before it to fill (resent messages can arrive after newer ones).
	rmu     sync.Mutex
	origins map[uint64]*originState // guarded by rmu
	stop    chan struct{}

	connected    atomic.Bool
	published    atomic.Uint64
	refused      atomic.Uint64
	republished  atomic.Uint64
	received     atomic.Uint64
	duplicates   atomic.Uint64
	gaps         atomic.Uint64
	reconnects   atomic.Uint64
	disconnects  atomic.Uint64
	lagNanos     atomic.Int64 // last publish-to-echo time
	pendingBytes atomic.Int64
}

// DefaultConfig returns the Config a zero value stands for (URL aside),
// every default filled in: the one source of defaults for flags.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (cfg Config) withDefaults() Config {
	if cfg.Subject == "" {
		cfg.Subject = "fanout.broadcast"
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 8 << 20
	}
	if cfg.ResumeDelay <= 0 {
		cfg.ResumeDelay = time.Second
	}
	if cfg.ResendWindow <= 0 {
		cfg.ResendWindow = 2 * time.Second
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 250 * time.Millisecond
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 2 * cfg.ResumeDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// Connect joins the bus. It returns at once even if NATS is not reachable
// yet: the client keeps trying in the background (Connected says when).
func Connect(cfg Config, deliver Deliver) (*NATS, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: no NATS URL")
	}
	cfg = cfg.withDefaults()
	b := newNATS(cfg, deliver)
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// Exponential backoff with jitter, from ReconnectWait up to half
		// the ResumeDelay: nodes must not hammer a NATS server coming back,
		// but every node must be back (and subscribed) before any of them
		// sends what it held over the outage.
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := min(cfg.ReconnectWait<<min(attempts, 16), max(cfg.ResumeDelay/2, cfg.ReconnectWait))
			return d/2 + rand.N(d/2+1)
		}),
		// No client-side reconnect buffer: unconfirmed messages are ours
		// to resend, after ResumeDelay, not the client's to flush at once.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) { b.up(c, false) }),
		nats.ReconnectHandler(func(c *nats.Conn) { b.reconnects.Add(1); b.up(c, true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if b.connected.Swap(false) {
				b.mu.Lock()
				b.downAt = time.Now()
				b.mu.Unlock()
				b.disconnects.Add(1)
				b.log.Warn("bus: disconnected; local clients stay, messages are kept for resend", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Error("bus: error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	go b.expireHolds()
	b.mu.Lock()
	b.nc = nc // the handlers above use their own argument until now
	b.mu.Unlock()
	sub, err := nc.Subscribe(cfg.Subject, b.receive)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: subscribe: %w", err)
	}
	// A fan-out node must not drop bus messages for a slow subscription
	// goroutine; bound it by bytes, generously, and count what is lost.
	_ = sub.SetPendingLimits(-1, 256<<20)
	b.sub = sub
	if nc.IsConnected() {
		b.up(nc, false)
	}
	return b, nil
}

func (b *NATS) up(nc *nats.Conn, reconnect bool) {
	if b.connected.Swap(true) {
		return
	}
	b.log.Info("bus: connected", "url", nc.ConnectedUrl(), "subject", b.cfg.Subject, "reconnect", reconnect)
	// After a reconnect, hold every publish for ResumeDelay, not only the
	// resends: a node that reconnected first must not publish before the
	// others have subscribed again. A first connection holds only what
	// was published before it.
	b.mu.Lock()
	if b.resuming || (!reconnect && b.confirmed == b.seq) {
		b.mu.Unlock()
		return
	}
	b.resuming = true
	b.mu.Unlock()
	time.AfterFunc(b.cfg.ResumeDelay, b.resume)
}

// resume publishes again, in order, what was never echoed.
func (b *NATS) resume() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.resuming = false
	if b.closed {
		return
	}
	since := b.downAt.Add(-b.cfg.ResendWindow)
	sent := 0
	for _, p := range b.sent {
		if p.seq <= b.confirmed && p.at.Before(since) {
			continue
		}
		if err := b.nc.Publish(b.cfg.Subject, p.data); err != nil {
			return // down again: the next reconnect resumes
		}
		sent++
	}
	b.republished.Add(uint64(sent))
	if sent > 0 {
		b.log.Info("bus: sent messages held or possibly lost over the reconnect", "count", sent)
	}
}

// Publish sends a message to every node, this one included. It never
// blocks on the network; it fails only when the unconfirmed buffer is full
// or the bus is closed.
func (b *NATS) Publish(channel string, kind byte, payload []byte) error {
	if len(channel) > 255 {
		return ErrChannel
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	data := make([]byte, headerSize+len(channel)+len(payload))
	// Make room by forgetting the oldest confirmed messages; unconfirmed
	// ones are never forgotten.
	for len(b.sent) > 0 && b.sent[0].seq <= b.confirmed && b.logSize+len(data) > b.cfg.BufferBytes {
		b.logSize -= len(b.sent[0].data)
		b.sent[0] = pending{}
		b.sent = b.sent[1:]
	}
	if b.logSize+len(data) > b.cfg.BufferBytes {
		b.refused.Add(1)
		if n := b.refused.Load(); n&(n-1) == 0 {
			b.log.Warn("bus: unconfirmed buffer full, refusing messages", "refused", n, "buffer_bytes", b.cfg.BufferBytes, "connected", b.connected.Load())
		}
		return ErrBufferFull
	}
	b.seq++
	binary.BigEndian.PutUint64(data[0:], b.origin)
	binary.BigEndian.PutUint64(data[8:], b.seq)
	data[16], data[17] = kind, byte(len(channel))
	copy(data[headerSize+copy(data[headerSize:], channel):], payload)
	b.sent = append(b.sent, pending{seq: b.seq, data: data, at: time.Now()})
	b.logSize += len(data)
	b.pendingBytes.Store(b.unconfirmedBytesLocked())
	b.published.Add(1)
	if b.connected.Load() && !b.resuming {
		// Errors (disconnected right now) are fine: the message stays
		// unconfirmed and goes out again after the reconnect.
		_ = b.nc.Publish(b.cfg.Subject, data)
	}
	return nil
}

func newNATS(cfg Config, deliver Deliver) *NATS {
	return &NATS{cfg: cfg, log: cfg.Logger, deliver: deliver, origin: rand.Uint64(),
		origins: make(map[uint64]*originState), stop: make(chan struct{})}
}

// originState is one publishing node's stream as this node receives it.
type originState struct {
	last      uint64            // highest seq delivered, in order
	held      map[uint64][]byte // arrived after a gap: seq -> opcode + payload
	heldBytes int
	since     time.Time // when the current gap was first seen
}

// receive runs on the subscription's goroutine, in bus order.
func (b *NATS) receive(m *nats.Msg) {
	d := m.Data
	if len(d) < headerSize || len(d) < headerSize+int(d[17]) {
		b.log.Warn("bus: malformed message", "bytes", len(d))
		return
	}
	origin, seq := binary.BigEndian.Uint64(d), binary.BigEndian.Uint64(d[8:])
	if origin == b.origin {
		b.confirm(seq)
	}
	b.rmu.Lock()
	defer b.rmu.Unlock()
	o := b.origins[origin]
	if o == nil {
		// A node heard of for the first time: its stream starts here.
		o = &originState{last: seq - 1}
		b.origins[origin] = o
	}
	switch {
	case seq <= o.last:
		b.duplicates.Add(1)
	case seq == o.last+1:
		b.deliverLocked(o, seq, d[16:])
		b.drainLocked(o)
	default:
		// A gap: hold this one, in order, until the missing ones come
		// (a resend after a reconnect) or HoldTimeout gives up on them.
		if o.held == nil {
			o.held = make(map[uint64][]byte)
		}
		if _, ok := o.held[seq]; ok {
			b.duplicates.Add(1)
			return
		}
		if len(o.held) == 0 {
			o.since = time.Now()
		}
		o.held[seq] = append([]byte(nil), d[16:]...)
		o.heldBytes += len(d) - 16
		if o.heldBytes > b.cfg.BufferBytes {
			b.giveUpLocked(origin, o)
		}
	}
}

func (b *NATS) deliverLocked(o *originState, seq uint64, msg []byte) {
	o.last = seq
	b.received.Add(1)
	kind, n := msg[0], int(msg[1])
	b.deliver(string(msg[2:2+n]), kind, msg[2+n:])
}

// drainLocked delivers held messages that are next in line.
func (b *NATS) drainLocked(o *originState) {
	for {
		p, ok := o.held[o.last+1]
		if !ok {
			break
		}
		delete(o.held, o.last+1)
		o.heldBytes -= len(p)
		b.deliverLocked(o, o.last+1, p)
	}
	if len(o.held) > 0 {
		o.since = time.Now() // a newer gap is waiting now
	}
}

// giveUpLocked skips the missing messages before what is held: they are
// counted as gaps and logged, and what was held goes out in order.
func (b *NATS) giveUpLocked(origin uint64, o *originState) {
	for len(o.held) > 0 {
		next := uint64(0)
		for seq := range o.held {
			if next == 0 || seq < next {
				next = seq
			}
		}
		missing := next - o.last - 1
		b.gaps.Add(missing)
		b.log.Warn("bus: messages from a node never arrived", "origin", origin, "missing", missing)
		o.last = next - 1
		b.drainLocked(o)
	}
}

// expireHolds gives up on gaps older than HoldTimeout.
func (b *NATS) expireHolds() {
	t := time.NewTicker(max(b.cfg.HoldTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.rmu.Lock()
		for origin, o := range b.origins {
			if len(o.held) > 0 && time.Since(o.since) > b.cfg.HoldTimeout {
				b.giveUpLocked(origin, o)
			}
		}
		b.rmu.Unlock()
	}
}

// confirm records that own messages up to seq came back from the bus.
func (b *NATS) confirm(seq uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq <= b.confirmed {
		return
	}
	b.confirmed = seq
	// The log is in seq order: find seq from the end, where it usually is.
	for i := len(b.sent) - 1; i >= 0; i-- {
		if b.sent[i].seq == seq {
			b.lagNanos.Store(int64(time.Since(b.sent[i].at)))
			break
		}
	}
	b.pendingBytes.Store(b.unconfirmedBytesLocked())
}

func (b *NATS) unconfirmedBytesLocked() int64 {
	n := 0
	for i := len(b.sent) - 1; i >= 0 && b.sent[i].seq > b.confirmed; i-- {
		n += len(b.sent[i].data)
	}
	return int64(n)
}

// Connected reports whether the bus is up.
func (b *NATS) Connected() bool { return b.connected.Load() }

// Stats is the bus's counters.
type Stats struct {
	Connected    bool
	Published    uint64        // messages handed to the bus
	Refused      uint64        // refused: unconfirmed buffer full
	Republished  uint64        // sent again after a reconnect
	Received     uint64        // delivered from the bus (once each)
	Duplicates   uint64        // received again and dropped
	Gaps         uint64        // messages of other nodes that never arrived
	Reconnects   uint64        // successful reconnects
	Disconnects  uint64        // times the bus went away
	PendingBytes int64         // published, not yet seen back
	Lag          time.Duration // last publish-to-echo time seen
}

// Stats returns the counters.
func (b *NATS) Stats() Stats {
	return Stats{
		Connected: b.connected.Load(), Published: b.published.Load(), Refused: b.refused.Load(),
		Republished: b.republished.Load(), Received: b.received.Load(), Duplicates: b.duplicates.Load(),
		Gaps: b.gaps.Load(), Reconnects: b.reconnects.Load(), Disconnects: b.disconnects.Load(),
		PendingBytes: b.pendingBytes.Load(), Lag: time.Duration(b.lagNanos.Load()),
	}
}

// Close drains what it can and leaves the bus.
func (b *NATS) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	if b.nc.IsConnected() {
		_ = b.nc.Flush()
	}
	b.nc.Close()
	return nil
}
