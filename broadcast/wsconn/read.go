package wsconn

import (
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/netpoll"
)

// readBudget is how many bytes one read event may consume before the
// worker re-arms the connection and lets others run (epoll fires again at
// once if more is waiting).
const readBudget = 64 << 10

// OnRead implements netpoll.Handler: it runs on a worker after epoll
// reports the connection readable. It reads what is there without
// blocking, parses every complete frame, keeps an incomplete tail (and
// only then a buffer), and re-arms the connection.
func (c *Conn) OnRead(ev netpoll.Event) {
	defer c.Recover("read")
	if netpoll.Closed(ev) {
		c.Teardown(outbound.ReasonShutdown, nil)
		return
	}
	if !c.AcquireFD() {
		c.releaseRead()
		return
	}
	defer c.ReleaseFD() // after ResumeRead below: fd stays valid until then
	for budget := readBudget; budget > 0; {
		n, alive := c.readOnce()
		if !alive {
			return
		}
		if n == 0 {
			break // nothing more for now
		}
		budget -= n
		if !c.parse() {
			c.releaseRead()
			return
		}
	}
	c.flushPong()
	if len(c.rbuf) == 0 {
		c.env.out.PutBuf(c.rbuf)
		c.rbuf = nil
	}
	if !c.holdPartial() {
		return
	}
	if err := c.ResumeRead(); err != nil {
		c.releaseRead()
		c.Teardown(outbound.ReasonReadError, err)
	}
}

// readOnce appends what the socket has to the read buffer. It returns the
// bytes read (0: nothing now), and alive false when the connection was
// torn down (the peer left, or the read failed).
func (c *Conn) readOnce() (n int, alive bool) {
	buf := c.readBuffer()
	n, err := unix.Read(c.FD(), buf[len(buf):cap(buf)])
	for err == unix.EINTR {
		n, err = unix.Read(c.FD(), buf[len(buf):cap(buf)])
	}
	c.rbuf = buf
	switch {
	case err == unix.EAGAIN:
		return 0, true
	case err != nil:
		c.releaseRead()
		if outbound.IsGone(err) {
			c.Teardown(outbound.ReasonClientGone, err)
		} else {
			c.Teardown(outbound.ReasonReadError, err)
		}
		return 0, false
	case n == 0:
		c.releaseRead()
		c.Teardown(outbound.ReasonClientGone, nil)
		return 0, false
	}
	c.rbuf = buf[:len(buf)+n]
	c.env.bytesIn.Add(uint64(n))
	return n, true
}

// holdPartial accounts for the buffers the connection keeps until its next
// read event (an incomplete frame's bytes, a fragmented message's), and starts (or ends) its incomplete-message clock. Over
// MaxPartialBytes server-wide, the connection is closed instead: false.
func (c *Conn) holdPartial() bool {
	if len(c.rbuf) > 0 || c.parser.Pending() {
		if c.partial.Load() == 0 {
			c.partial.Store(time.Now().UnixNano())
		}
	} else if c.partial.Load() != 0 {
		c.partial.Store(0)
	}
	keep := int64(cap(c.rbuf) + c.parser.Held()) // the tail, and a fragmented message's start
	delta := keep - c.held.Swap(keep)
	total := c.env.partialBytes.Add(delta)
	if limit := c.env.cfg.MaxPartialBytes; delta > 0 && limit > 0 && total > limit {
		c.env.logBusy.Warn(c.env.log, "closing connection: partial reads over their cap", "conn", c.ID(), "partial_bytes", total, "limit", limit)
		c.releaseRead()
		c.Lock()
		defer c.Unlock()
		c.CloseLocked(goodbyeBusy, outbound.ReasonPartialLimit, false)
		// Closing: it reads on only to see the client's answering close.
		if err := c.ResumeRead(); err != nil {
			c.TeardownLocked(outbound.ReasonPartialLimit, err)
		}
		return false
	}
	return true
}

// readBuffer returns the buffer to read into: the pending tail, a pooled
// buffer when there is none, or a bigger one when the tail fills it.
func (c *Conn) readBuffer() []byte {
	buf := c.rbuf
	if buf == nil {
		buf = c.env.out.GetBuf()
	}
	if len(buf) < cap(buf) {
		return buf
	}
	// Full, and the frame at its start is still incomplete: grow towards
	// what that frame needs, as bytes arrive, never past MaxMessage plus a
	// header (the parser checked that).
	size := min(2*cap(buf), c.parser.Need())
	if size <= cap(buf) { // cannot happen: a full buffer holds less than the frame needs
		size = 2 * cap(buf)
	}
	grown := make([]byte, len(buf), size)
	copy(grown, buf)
	c.env.out.PutBuf(buf)
	return grown
}

// parse hands every complete frame of the buffer to the parser and keeps
// the incomplete tail. It returns false once the connection is dead.
func (c *Conn) parse() bool {
	used, err := c.parser.Parse(c.rbuf, c)
	if used > 0 {
		// Only complete frames are liveness: a client that trickles
		// half a frame is idle.
		c.lastRead.Store(time.Now().UnixNano())
	}
	c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[used:])]
	if err == nil {
		return true
	}
	// After an error the stream has no known frame boundary left: drop
	// the tail. A closing connection keeps parsing what comes next only
	// to see the client's answering close frame.
	c.rbuf = c.rbuf[:0]
	c.parseFailed(err)
	return c.State() != outbound.StateDead
}

// releaseRead gives the read buffer back and forgets any partial message.
// Only the read worker calls it.
func (c *Conn) releaseRead() {
	if c.rbuf != nil {
		c.env.out.PutBuf(c.rbuf)
		c.rbuf = nil
	}
	c.unholdPartial()
	c.parser.Reset()
}

// unholdPartial takes the connection's buffer out of Env.partialBytes. The
// read side and the teardown both may; each add is matched by one swap.
func (c *Conn) unholdPartial() {
	if old := c.held.Swap(0); old != 0 {
		c.env.partialBytes.Add(-old)
	}
}

// parseFailed starts the close a frame.CloseError asks for.
func (c *Conn) parseFailed(err error) {
	c.parser.Reset()
	ce, ok := frame.AsClose(err)
	if !ok {
		ce = &frame.CloseError{Code: ws.StatusInternalServerError, Reason: "internal error"}
		c.env.log.Error("read: unexpected error", "conn", c.ID(), "err", err)
	}
	c.Lock()
	defer c.Unlock()
	if c.State() != outbound.StateOpen {
		// We had sent our close frame: this is the client's answer (or
		// more garbage). Either way the closing handshake is over.
		c.TeardownLocked(c.ReasonLocked(), nil)
		return
	}
	if ce.Peer {
		// Echo the client's code (or an empty close if it sent none) and
		// close the socket once it is out: the server closes first.
		c.CloseLocked(frame.Close(ce.Code, ""), outbound.ReasonClientClose, true)
		return
	}
	c.env.logProto.Warn(c.env.log, "closing connection", "conn", c.ID(), "remote", c.Remote(), "code", int(ce.Code), "reason", ce.Reason)
	f, reason := closeFor(ce)
	c.CloseLocked(f, reason, false)
}

// Message implements frame.Handler: a complete message from the client.
func (c *Conn) Message(op ws.OpCode, payload []byte) error {
	if c.State() != outbound.StateOpen {
		return nil // closing: nothing more from this client is published
	}
	if c.sub != nil && c.sub.format == FormatPusher {
		// Its protocol's own messages (subscribe, ping) are not
		// publishes: the protocol applies ReceiveOnly to client events.
		c.env.messagesIn.Add(1)
		if c.limiter != nil && !c.limiter.Allow() {
			return errRateLimit
		}
		return c.env.proto.Message(c, op, payload)
	}
	if c.env.cfg.ReceiveOnly {
		return errReceiveOnly
	}
	c.env.messagesIn.Add(1)
	if c.limiter != nil && !c.limiter.Allow() {
		return errRateLimit
	}
	channel, kind, data := "", hub.KindText, payload
	switch {
	case c.sub == nil:
	case c.sub.format == FormatJSON:
		var err error
		on := func(ch string) bool { return c.env.hub.On(c, ch) }
		if channel, kind, data, err = c.sub.parseClientMessage(on, op, payload); err != nil {
			return err
		}
	default:
		channel = c.env.hub.FirstChannel(c) // raw: its one channel
	}
	if c.sub == nil || c.sub.format == FormatRaw {
		if op == ws.OpBinary {
			kind = hub.KindBinary
		}
	}
	if err := c.env.node.Accept(channel, kind, data); err != nil {
		c.env.logRefused.Warn(c.env.log, "client message refused", "conn", c.ID(), "err", err)
	}
	return nil
}

// Ping implements frame.Handler: answer with a pong, same payload. The
// pong is queued, and one flush after the read event's frames are parsed
// sends it; a later ping of the same read event replaces it (flushPong).
func (c *Conn) Ping(payload []byte) {
	pong := frame.Compile(ws.OpPong, payload)
	c.Lock()
	defer c.Unlock()
	c.QueuePongLocked(pong, c.ponged)
	c.ponged = true
}

// flushPong sends the pong the read event queued, if any.
func (c *Conn) flushPong() {
	if !c.ponged {
		return
	}
	c.ponged = false
	c.Lock()
	defer c.Unlock()
	c.FlushLocked()
}

// Pong implements frame.Handler. Reading it already refreshed lastRead.
func (c *Conn) Pong([]byte) {}
