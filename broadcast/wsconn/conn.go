// Package wsconn is the WebSocket codec over the outbound core: an
// upgraded client's frames read and parsed on the netpoll pool, pings and
// pongs, the closing handshake, and its place in the hub as a subscriber
// that receives every message as a WebSocket frame.
//
// A Conn is an outbound.Conn (the socket, the queue, the close path) plus
// what WebSocket adds. An idle Conn owns no buffer and no goroutine.
//
// The read side (parser, rbuf, ponged) is touched only by the worker that
// holds the connection's read event; netpoll guarantees there is at most
// one (the one-shot registration, and a flag that drops stale events). Everything about writing and closing is guarded by
// the core's lock.
package wsconn

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/internal/lograte"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/netpoll"
)

// Config is what WebSocket connections of one server share. The zero value
// works: each field says what zero means.
type Config struct {
	// MaxMessage is the largest message a client may send, in bytes, all
	// fragments together; larger closes with 1009. Zero means
	// frame.DefaultMaxMessage.
	MaxMessage int
	// ReceiveOnly closes (1008) a client that sends a data frame. Zero
	// (false): clients may publish.
	ReceiveOnly bool
	// IdleTimeout closes (1001) a client from which nothing was read for
	// that long; pongs count. Zero or negative: never.
	IdleTimeout time.Duration
	// MessageTimeout closes (1008) a client whose frame or fragmented
	// message stays incomplete that long: a client that trickles bytes
	// holds a buffer, and only complete frames count as liveness. Zero
	// means 5s; negative: never.
	MessageTimeout time.Duration
	// MaxPartialBytes caps, server-wide, the read buffers held by
	// connections between read events for an incomplete frame or a
	// fragmented message. A
	// connection whose buffer would take the total over it is closed
	// (1008). Zero means 64 MiB; negative: no cap.
	MaxPartialBytes int64
	// ClientRate limits each client's messages per second, with bursts
	// of ClientBurst; over it closes with 1008. Zero: no limit.
	ClientRate float64
	// ClientBurst is the token bucket size for ClientRate. Zero means
	// max(1, ClientRate).
	ClientBurst int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Node is what a connection needs of its server.
type Node interface {
	// Accept takes a complete message a client sent, for publishing to
	// channel ("" is the default one). An error is logged; the client
	// stays.
	Accept(channel string, kind hub.Kind, payload []byte) error
	// Closed accounts for a connection that ended: once each, with the
	// connection's lock held.
	Closed(c *Conn, reason outbound.CloseReason, err error)
}

// Env is the state WebSocket connections of one server share.
type Env struct {
	cfg    Config
	log    *slog.Logger
	out    *outbound.Env
	hub    *hub.Hub
	poller *netpoll.Poller
	node   Node
	proto  Protocol // FormatPusher's (SetProtocol)

	logProto, logRefused, logBusy *lograte.Limiter
	messagesIn                    atomic.Uint64
	bytesIn                       atomic.Uint64 // bytes read from clients
	partialBytes                  atomic.Int64  // read buffers held between events, all connections
	resumed, notRecovered         atomic.Uint64 // resumes (since=) by outcome
}

// NewEnv returns the shared state of connections that write through out,
// subscribe to h, are read on p's pool and belong to node.
func NewEnv(cfg Config, out *outbound.Env, h *hub.Hub, p *netpoll.Poller, node Node) *Env {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = frame.DefaultMaxMessage
	}
	if cfg.MessageTimeout == 0 {
		cfg.MessageTimeout = 5 * time.Second
	}
	if cfg.MaxPartialBytes == 0 {
		cfg.MaxPartialBytes = 64 << 20
	}
	if cfg.ClientRate > 0 && cfg.ClientBurst <= 0 {
		cfg.ClientBurst = max(1, int(cfg.ClientRate))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Env{
		cfg: cfg, log: cfg.Logger, out: out, hub: h, poller: p, node: node,
		logProto:   lograte.New(5, 10),
		logRefused: lograte.New(5, 10),
		logBusy:    lograte.New(1, 5),
	}
}

// SetProtocol sets the Protocol FormatPusher connections speak. Call it
// before the first such connection.
func (e *Env) SetProtocol(p Protocol) { e.proto = p }

// MessagesIn is the count of complete data messages read from clients.
func (e *Env) MessagesIn() uint64 { return e.messagesIn.Load() }

// BytesIn is the count of bytes read from clients.
func (e *Env) BytesIn() uint64 { return e.bytesIn.Load() }

// Resumed is the count of connections that resumed with everything they
// missed; NotRecovered of those told recovered:false.
func (e *Env) Resumed() uint64      { return e.resumed.Load() }
func (e *Env) NotRecovered() uint64 { return e.notRecovered.Load() }

// PartialBytes is the read buffer capacity connections hold now for
// incomplete frames (bounded by Config.MaxPartialBytes).
func (e *Env) PartialBytes() int64 { return e.partialBytes.Load() }

// Conn is one upgraded WebSocket client.
type Conn struct {
	outbound.Conn
	hub.Slot
	env *Env

	parser   frame.Parser
	rbuf     []byte        // unparsed tail; nil unless a frame is incomplete
	held     atomic.Int64  // cap(rbuf) + parser.Held() counted in Env.partialBytes
	lastRead atomic.Int64  // unix nanoseconds of the last complete frame
	partial  atomic.Int64  // unix ns since which a frame or message is incomplete; 0: none
	limiter  *rate.Limiter // ClientRate; nil without one
	sub      *subscription // channels and format; nil: the default channel, raw
	pstate   any           // the Protocol's state (FormatPusher); it fits the Conn's size class
	ponged   bool          // a pong was queued during this read event; read side only
	deflate  bool          // permessage-deflate negotiated; set by New

	// Ticket is the admission the connection holds; its Node releases it
	// when the connection ends.
	Ticket admit.Ticket
}

// Options are what an upgrade decided about a connection.
type Options struct {
	Format   Format
	Channels []string // none: the default channel
	// Deflate: permessage-deflate was negotiated (without context
	// takeover): messages go out compressed when that pays, and the
	// client's compressed ones are inflated.
	Deflate bool
	// ProtoState is the state of the Env's Protocol for a FormatPusher
	// connection (Conn.ProtoState).
	ProtoState any
}

// New makes the upgraded socket fd connection id, as o says. Nothing
// reaches it until Start.
func New(env *Env, id uint64, fd int, o Options) *Conn {
	c := &Conn{env: env, deflate: o.Deflate}
	c.Init(env.out, c, env.poller, id, fd)
	c.parser.Deflate = o.Deflate
	format := o.Format
	switch {
	case format == FormatPusher:
		c.sub, c.pstate = pusherSub, o.ProtoState
	case format != FormatRaw || len(o.Channels) > 0:
		c.sub = &subscription{format: format}
	}
	if format == FormatPusher {
		// No compression: one Pusher encoding serves every client.
		c.deflate, c.parser.Deflate = false, false
	}
	if format == FormatJSON || format == FormatPusher {
		// It sees every seq: it never misses one silently, it is
		// closed instead and resumes (CloseSlowJSON).
		c.NeverDrop()
	}
	c.parser.MaxMessage = env.cfg.MaxMessage
	if env.cfg.ClientRate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(env.cfg.ClientRate), env.cfg.ClientBurst)
	}
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// Start puts the connection in the hub, on req's channels, and arms its
// read watch. first (the upgrade's 101) is queued as its first bytes and
// goes out when its shard takes it in (Join): a client can only publish
// once it saw the 101, and by then it is in the table, so it receives
// every message published from that moment on, its own first one
// included. On failure the connection is torn down (and counted) and the
// error returned.
func (c *Conn) Start(first []byte, req hub.Subscription) error {
	c.Lock()
	defer c.Unlock()
	c.QueueLocked(first)
	if c.State() == outbound.StateDead {
		// Torn down already (its 101 could not be written, or a close
		// ran its course): counted, and its fd is closed, so its number
		// may be another descriptor's. Nothing to add or arm.
		return errTornDown
	}
	// Under the lock: a teardown, which holds it too, comes before (seen
	// above) or after the connection is in the hub and armed, never
	// between.
	if c.sub != nil && c.sub != pusherSub {
		c.sub.resume = req.Resume
	}
	c.env.hub.Add(c, c.ID(), req)
	if err := c.Watch().Start(); err != nil {
		c.env.log.Error("register: epoll", "conn", c.ID(), "err", err)
		c.TeardownLocked(outbound.ReasonReadError, err)
		return err
	}
	return nil
}

// RefuseEarlyData closes, with 1002 after its 101, a connection whose
// client sent bytes after its upgrade request without waiting for the
// answer (RFC 6455 4.1: it MUST wait). Those bytes were read into the
// upgrader's buffer and are gone: closing says so, where carrying on
// would parse the stream from a wrong frame boundary.
func (c *Conn) RefuseEarlyData() {
	c.Lock()
	defer c.Unlock()
	c.env.logProto.Warn(c.env.log, "closing connection: data before the handshake completed", "conn", c.ID(), "remote", c.Remote())
	c.CloseLocked(goodbyeEarly, outbound.ReasonProtocolError, false)
}

// errTornDown: the connection ended before Start could arm it.
var errTornDown = errors.New("wsconn: connection torn down before its watch was armed")

// Join implements hub.Subscriber: the 101 goes out now, ahead of every
// message the shard delivers from here on; in json format, followed by
// the welcome and what the client missed, when it resumed, written as far
// as the socket takes them and queued behind. A replay over the socket's
// buffer and QueueBytes closes the client (CloseSlowJSON) after what
// fitted: it resumes from there.
func (c *Conn) Join(j hub.Joined) {
	c.Lock()
	defer c.Unlock()
	c.JoinLocked()
	if c.sub != nil && c.sub.format == FormatPusher {
		w := c.env.proto.Welcome(c)
		var iov []unix.Iovec
		c.SendLocked([][]byte{w}, len(w), &iov)
		return
	}
	if c.sub == nil || c.sub.format != FormatJSON {
		return
	}
	switch {
	case c.sub.resume && j.Recovered:
		c.env.resumed.Add(1)
	case c.sub.resume:
		c.env.notRecovered.Add(1)
	}
	frames, size := hub.JoinFrames(welcome(j.Epoch, j.Channels, j, c.sub.resume), j.Replay, c.Encoding())
	var iov []unix.Iovec
	c.SendLocked(frames, size, &iov)
	if j.More {
		c.CloseLocked(goodbyeReplay, outbound.ReasonReplayPart, false)
	}
}

// Encoding implements hub.Subscriber: the raw frame, or the JSON envelope;
// compressed when the client negotiated permessage-deflate.
func (c *Conn) Encoding() hub.Encoding {
	if c.sub != nil && c.sub.format == FormatPusher {
		return hub.EncodingPusher
	}
	switch json := c.sub != nil && c.sub.format == FormatJSON; {
	case json && c.deflate:
		return hub.EncodingJSONDeflate
	case json:
		return hub.EncodingJSON
	case c.deflate:
		return hub.EncodingFrameDeflate
	}
	return hub.EncodingFrame
}

// Sweep implements hub.Subscriber: the idle timeout, the token's expiry,
// the incomplete-message timeout, pings, and giving up on a closing client
// that never took its close frame.
func (c *Conn) Sweep(now int64, ping bool) (queued int) {
	c.Lock()
	defer c.Unlock()
	queued = c.QueuedLocked()
	switch c.State() {
	case outbound.StateOpen:
		if idle := int64(c.env.cfg.IdleTimeout); idle > 0 && now-c.lastRead.Load() > idle {
			c.CloseLocked(goodbyeIdle, outbound.ReasonIdleTimeout, false)
			return queued
		}
		if exp := c.Ticket.Expires(); exp != 0 && now >= exp {
			c.CloseLocked(goodbyeExpired, outbound.ReasonTokenExpired, false)
			return queued
		}
		if mt, since := int64(c.env.cfg.MessageTimeout), c.partial.Load(); mt > 0 && since != 0 && now-since > mt {
			c.env.logProto.Warn(c.env.log, "closing connection: incomplete message too long", "conn", c.ID(), "remote", c.Remote(), "timeout", c.env.cfg.MessageTimeout)
			c.CloseLocked(goodbyeTimeout, outbound.ReasonMessageTimeout, false)
			return queued
		}
		if ping {
			c.SendControlLocked(ws.CompiledPing)
		}
	case outbound.StateClosing:
		c.EndLingerLocked(now)
	}
	return queued
}

// Drain implements hub.Subscriber: 1001 after everything queued.
func (c *Conn) Drain() {
	c.Lock()
	c.CloseLocked(goodbyeShutdown, outbound.ReasonShutdown, false)
	c.Unlock()
}

// Goodbye implements outbound.Owner.
func (c *Conn) Goodbye(reason outbound.CloseReason) []byte {
	if reason == outbound.ReasonSlowConsumer {
		if c.sub != nil && c.sub.format == FormatJSON {
			return goodbyeSlowJSON
		}
		if c.sub != nil && c.sub.format == FormatPusher {
			return goodbyeSlowPusher
		}
		return goodbyeSlow
	}
	return nil
}

// TornDown implements outbound.Owner.
func (c *Conn) TornDown(reason outbound.CloseReason, err error) {
	c.unholdPartial() // no read event may come to do it
	if c.sub == pusherSub {
		c.env.proto.Closed(c)
	}
	// Counted before it leaves the hub's count: whoever waits for the
	// connections to go (tests, Shutdown) then finds the reason counted.
	c.env.node.Closed(c, reason, err)
	c.env.hub.Remove(c)
}

// goodbyeSlowPusher closes a Pusher client the server would otherwise
// have to drop a message for: 4100 tells pusher-js to reconnect in a
// second (and subscribe again).
var goodbyeSlowPusher = frame.Close(4100, "slow consumer")

// Send writes one frame to the client, or queues it behind what waits;
// nothing once the connection is closing. Over the queue's bound the
// connection is closed as a slow consumer, like for any message.
func (c *Conn) Send(f []byte) {
	c.Lock()
	defer c.Unlock()
	if c.State() != outbound.StateOpen {
		return
	}
	var iov []unix.Iovec
	c.SendLocked([][]byte{f}, len(f), &iov)
}

// SendThenClose sends f, then closes with code and reason: how a
// protocol refuses a client after its handshake.
func (c *Conn) SendThenClose(f []byte, code ws.StatusCode, reason string) {
	c.Lock()
	defer c.Unlock()
	if c.State() != outbound.StateOpen {
		return
	}
	if f != nil {
		var iov []unix.Iovec
		c.SendLocked([][]byte{f}, len(f), &iov)
	}
	c.CloseLocked(frame.Close(code, reason), outbound.ReasonPolicy, false)
}

// ProtoState is the per-connection state of its Protocol
// (Options.ProtoState).
func (c *Conn) ProtoState() any { return c.pstate }
