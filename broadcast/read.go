package broadcast

import (
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/netpoll"
)

// readBudget is how many bytes one read event may consume before the
// worker re-arms the connection and lets others run (epoll fires again at
// once if more is waiting).
const readBudget = 64 << 10

// onRead runs on a worker after epoll reports the connection readable. It
// reads what is there without blocking, parses every complete frame, keeps
// an incomplete tail (and only then a buffer), and re-arms the connection.
func (c *conn) onRead(ev netpoll.Event) {
	if netpoll.Closed(ev) {
		c.teardown(ReasonShutdown, nil)
		return
	}
	if !c.acquireFD() {
		c.releaseRead()
		return
	}
	defer c.releaseFD() // after ResumeRead below: fd stays valid until then
	for budget := readBudget; budget > 0; {
		buf := c.rbuf
		if buf == nil {
			buf = c.srv.getBuf()
		}
		if len(buf) == cap(buf) {
			// Full, and the frame at its start is still incomplete: grow
			// towards what that frame needs, as bytes arrive, never past
			// MaxMessage plus a header (the parser checked that).
			size := min(2*cap(buf), c.parser.Need())
			if size <= cap(buf) { // cannot happen: a full buffer holds less than the frame needs
				size = 2 * cap(buf)
			}
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			c.srv.putBuf(buf)
			buf = grown
		}
		n, rerr := unix.Read(c.fd, buf[len(buf):cap(buf)])
		for rerr == unix.EINTR {
			n, rerr = unix.Read(c.fd, buf[len(buf):cap(buf)])
		}
		c.rbuf = buf
		switch {
		case rerr == unix.EAGAIN:
			budget = 0
			continue
		case rerr != nil:
			c.releaseRead()
			if isGone(rerr) {
				c.teardown(ReasonClientGone, rerr)
			} else {
				c.teardown(ReasonReadError, rerr)
			}
			return
		case n == 0:
			c.releaseRead()
			c.teardown(ReasonClientGone, nil)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		budget -= n
		buf = buf[:len(buf)+n]
		used, perr := c.parser.Parse(buf, c)
		c.rbuf = buf[:copy(buf, buf[used:])]
		if perr != nil {
			// After an error the stream has no known frame boundary left:
			// drop the tail. A closing connection keeps parsing what comes
			// next only to see the client's answering close frame.
			c.rbuf = c.rbuf[:0]
			c.parseFailed(perr)
			if c.getState() == stateDead {
				c.releaseRead()
				return
			}
		}
	}
	if len(c.rbuf) == 0 {
		c.srv.putBuf(c.rbuf)
		c.rbuf = nil
	}
	if err := c.watch.ResumeRead(); err != nil {
		c.releaseRead()
		c.teardown(ReasonReadError, err)
	}
}

// releaseRead gives the read buffer back and forgets any partial message.
// Only the read worker calls it.
func (c *conn) releaseRead() {
	if c.rbuf != nil {
		c.srv.putBuf(c.rbuf)
		c.rbuf = nil
	}
	c.parser.Reset()
}

// parseFailed starts the close a frame.CloseError asks for.
func (c *conn) parseFailed(err error) {
	c.parser.Reset()
	ce, ok := frame.AsClose(err)
	if !ok {
		ce = &frame.CloseError{Code: ws.StatusInternalServerError, Reason: "internal error"}
		c.srv.log.Error("read: unexpected error", "conn", c.id, "err", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.getState() != stateOpen {
		// We had sent our close frame: this is the client's answer (or
		// more garbage). Either way the closing handshake is over.
		c.teardownLocked(c.reason, nil)
		return
	}
	if ce.Peer {
		// Echo the client's code (or an empty close if it sent none) and
		// close the socket once it is out: the server closes first.
		c.closeLocked(ce.Code, "", ReasonClientClose, true)
		return
	}
	c.srv.logProto.warn(c.srv.log, "closing connection", "conn", c.id, "remote", c.remote(), "code", int(ce.Code), "reason", ce.Reason)
	reason := reasonFor(ce.Code)
	if ce == errRateLimit {
		reason = ReasonRateLimit
	}
	c.closeLocked(ce.Code, ce.Reason, reason, false)
}

// errRateLimit closes a client over Config.ClientRate.
var errRateLimit = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "message rate limit exceeded"}

// Message implements frame.Handler: a complete message from the client.
func (c *conn) Message(op ws.OpCode, payload []byte) error {
	if c.getState() != stateOpen {
		return nil // closing: nothing more from this client is published
	}
	if c.srv.cfg.ReceiveOnly {
		return &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "clients may not publish"}
	}
	c.srv.messagesIn.Add(1)
	if c.limiter != nil && !c.limiter.Allow() {
		return errRateLimit
	}
	if _, err := c.srv.publish(op, payload); err != nil {
		c.srv.logRefused.warn(c.srv.log, "client message refused", "conn", c.id, "err", err)
	}
	return nil
}

// Ping implements frame.Handler: answer with a pong, same payload.
func (c *conn) Ping(payload []byte) {
	pong := frame.Compile(ws.OpPong, payload)
	c.mu.Lock()
	c.sendControlLocked(pong)
	c.mu.Unlock()
}

// Pong implements frame.Handler. Reading it already refreshed lastRead.
func (c *conn) Pong([]byte) {}
