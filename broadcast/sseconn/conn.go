// Package sseconn is the Server-Sent Events codec over the outbound core:
// a client that asked GET /sse receives its channels' messages as events,
// the same JSON envelope as WebSocket's json format, each event encoded
// once per message and shared (hub.EncodingSSE). The client sends nothing
// after its request: the read side only notices that it left.
//
// A Conn is an outbound.Conn plus its channels and its place in the hub.
// An idle Conn owns no buffer and no goroutine, as a WebSocket one.
package sseconn

import (
	"errors"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/netpoll"
)

// maxJunk is how much a client may send after its request before it is
// closed: EventSource and curl send nothing, and what is read is dropped.
const maxJunk = 4096

// ping is the comment that keeps a quiet stream alive (and lets the
// server notice a dead peer), every ping interval.
var ping = []byte(": ping\n\n")

// Node is what a connection needs of its server.
type Node interface {
	// Closed accounts for a connection that ended: once each, with the
	// connection's lock held.
	Closed(c *Conn, reason outbound.CloseReason, err error)
}

// Env is the state SSE connections of one server share.
type Env struct {
	log    *slog.Logger
	out    *outbound.Env
	hub    *hub.Hub
	poller *netpoll.Poller
	node   Node
}

// NewEnv returns the shared state of SSE connections that write through
// out, subscribe to h, are read on p's pool and belong to node.
func NewEnv(log *slog.Logger, out *outbound.Env, h *hub.Hub, p *netpoll.Poller, node Node) *Env {
	if log == nil {
		log = slog.Default()
	}
	return &Env{log: log, out: out, hub: h, poller: p, node: node}
}

// Conn is one SSE client.
type Conn struct {
	outbound.Conn
	hub.Slot
	env    *Env
	resume bool // it asked to resume: its welcome says whether it did
	junk   int  // bytes read after the request; read side only

	// Ticket is the admission the connection holds; its Node releases it
	// when the connection ends.
	Ticket admit.Ticket
}

// New makes the socket fd, whose request was answered, SSE connection
// id. Nothing reaches it until Start, which says on which channels.
func New(env *Env, id uint64, fd int) *Conn {
	c := &Conn{env: env}
	c.Init(env.out, c, env.poller, id, fd)
	// It sees every seq: a slow one is closed and resumes with
	// Last-Event-ID, never dropped for.
	c.NeverDrop()
	return c
}

// errTornDown: the connection ended before Start could arm it.
var errTornDown = errors.New("sseconn: connection torn down before its watch was armed")

// Start puts the connection in the hub, on req's channels, and arms its
// read watch; first (the 200 and its headers) goes out when its shard
// takes it in, then the welcome (Join). On failure the connection is torn
// down (and counted) and the error returned.
func (c *Conn) Start(first []byte, req hub.Subscription) error {
	c.Lock()
	defer c.Unlock()
	c.QueueLocked(first)
	if c.State() == outbound.StateDead {
		return errTornDown
	}
	c.resume = req.Resume
	c.env.hub.Add(c, c.ID(), req)
	if err := c.Watch().Start(); err != nil {
		c.env.log.Error("register: epoll", "conn", c.ID(), "err", err)
		c.TeardownLocked(outbound.ReasonReadError, err)
		return err
	}
	return nil
}

// Join implements hub.Subscriber: the answer's head goes out now, then
// the welcome event and what the client missed, when it resumed, ahead of
// every message the shard delivers from here on, written as far as the
// socket takes them and queued behind. A replay over the socket's buffer
// and QueueBytes closes the stream after what fitted: the client resumes
// from there.
func (c *Conn) Join(j hub.Joined) {
	c.Lock()
	defer c.Unlock()
	epoch := j.Epoch
	// The welcome's id is where the client has everything up to: its
	// cursor when it is recovered (the replay follows, each event moving
	// it on), the welcome's seq otherwise. A client that drops in the
	// middle of its replay resumes from the last event it got.
	id := j.Seq
	if c.resume && j.Recovered && len(j.Replay) > 0 {
		id = j.Replay[0].Seq - 1
	}
	w := hub.AppendSSEID(make([]byte, 0, 128+len(j.Channels)*16), epoch, id)
	w = append(w, "data: "...)
	w = hub.AppendWelcome(w, epoch, j.Channels, j, c.resume)
	w = append(w, "\n\n"...)
	c.JoinLocked()
	frames, size := hub.JoinFrames(w, j.Replay, hub.EncodingSSE)
	var iov []unix.Iovec
	c.SendLocked(frames, size, &iov)
	if j.More {
		// Part of the replay only: the stream ends after it, and the
		// client resumes from its last event for the next part.
		c.CloseLocked(nil, outbound.ReasonReplayPart, false)
	}
}

// Encoding implements hub.Subscriber: the SSE event.
func (c *Conn) Encoding() hub.Encoding { return hub.EncodingSSE }

// Sweep implements hub.Subscriber: the token's expiry, the ping comment,
// and giving up on a closing client that never took what was queued.
// There is no idle timeout: the client never sends; a peer that is gone
// shows when a write fails or the queue fills.
func (c *Conn) Sweep(now int64, doPing bool) (queued int) {
	c.Lock()
	defer c.Unlock()
	queued = c.QueuedLocked()
	switch c.State() {
	case outbound.StateOpen:
		if exp := c.Ticket.Expires(); exp != 0 && now >= exp {
			c.CloseLocked(nil, outbound.ReasonTokenExpired, false)
			return queued
		}
		if doPing {
			c.SendControlLocked(ping)
		}
	case outbound.StateClosing:
		c.EndLingerLocked(now)
	}
	return queued
}

// Drain implements hub.Subscriber: the stream ends after everything
// queued; EventSource reconnects (to another node) by itself.
func (c *Conn) Drain() {
	c.Lock()
	c.CloseLocked(nil, outbound.ReasonShutdown, false)
	c.Unlock()
}

// Goodbye implements outbound.Owner: an SSE stream ends without a word
// (its last event's id is where the client resumes).
func (c *Conn) Goodbye(outbound.CloseReason) []byte { return nil }

// TornDown implements outbound.Owner.
func (c *Conn) TornDown(reason outbound.CloseReason, err error) {
	c.env.node.Closed(c, reason, err)
	c.env.hub.Remove(c)
}

// OnRead implements netpoll.Handler: the client sent something, or left.
// What it sends is read and dropped, up to maxJunk; its EOF ends the
// connection (or, when the server is closing it, the closing).
func (c *Conn) OnRead(ev netpoll.Event) {
	defer c.Recover("read")
	if netpoll.Closed(ev) {
		c.Teardown(outbound.ReasonShutdown, nil)
		return
	}
	if !c.AcquireFD() {
		return
	}
	defer c.ReleaseFD()
	var buf [512]byte
	for {
		n, err := unix.Read(c.FD(), buf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := c.ResumeRead(); err != nil {
				c.Teardown(outbound.ReasonReadError, err)
			}
			return
		case err != nil:
			if outbound.IsGone(err) {
				c.Teardown(outbound.ReasonClientGone, err)
			} else {
				c.Teardown(outbound.ReasonReadError, err)
			}
			return
		case n == 0:
			c.Teardown(outbound.ReasonClientGone, nil)
			return
		}
		if c.junk += n; c.junk > maxJunk {
			c.Teardown(outbound.ReasonPolicy, errors.New("sseconn: client sent data after its request"))
			return
		}
	}
}
