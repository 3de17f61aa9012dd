package outbound

import (
	"fmt"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// CloseLocked starts closing: it queues goodbye (the codec's last bytes,
// nil for none) behind the frame being written; other queued frames are
// dropped unless reason is ReasonShutdown or ReasonReplayPart, which
// deliver what was queued first. reason is counted once the connection is torn down. The
// socket closes when goodbye is out: at once if peerClosed (the peer
// already said goodbye), otherwise after the peer answers or hangs up, or
// after CloseTimeout. Calling it on a closing or dead connection does
// nothing. c.mu must be held.
func (c *Conn) CloseLocked(goodbye []byte, reason CloseReason, peerClosed bool) {
	if c.State() != StateOpen {
		return
	}
	c.state.Store(uint32(StateClosing))
	c.reason = reason
	c.closeAtFlush = peerClosed
	c.lingerUntil = c.closeLingerFromNow()
	if reason != ReasonShutdown && reason != ReasonReplayPart && len(c.outq) > 0 {
		keep := 0
		if c.outOff > 0 || !c.joined {
			keep = 1 // a half-written frame, or the 101 not yet sent
		}
		clear(c.outq[keep:])
		c.outq = c.outq[:keep]
		c.addOutLocked(-c.outBytes)
		if keep == 1 {
			c.addOutLocked(len(c.outq[0]) - c.outOff)
		}
	}
	if len(goodbye) > 0 {
		c.outq = append(c.outq, goodbye)
		c.addOutLocked(len(goodbye))
	}
	if !c.writeArmed {
		iov := c.env.getIov()
		c.flushLocked(iov)
		c.env.putIov(iov)
	}
}

// afterGoodbyeLocked runs when a closing connection's queue is out.
func (c *Conn) afterGoodbyeLocked() {
	if c.closeAtFlush {
		c.TeardownLocked(c.reason, nil)
		return
	}
	// Half-close: the peer sees our goodbye then EOF; the reader keeps
	// draining until it answers or hangs up (or CloseTimeout).
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		c.TeardownLocked(c.reason, nil)
	}
}

// Teardown is TeardownLocked for callers without the lock.
func (c *Conn) Teardown(reason CloseReason, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.TeardownLocked(reason, err)
}

// Recover is deferred first by every handler that runs on the pool for
// the connection. A panic there is a bug, and it must cost that one
// connection only: every lock a handler takes is released by a defer, so
// after the unwinding nothing is held, and the connection is torn down,
// counted as ReasonInternalError and logged with the stack. The process,
// and every other connection, goes on.
func (c *Conn) Recover(handler string) {
	r := recover()
	if r == nil {
		return
	}
	c.env.log.Error("handler panic; closing the connection", "handler", handler, "conn", c.id,
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	c.Teardown(ReasonInternalError, fmt.Errorf("outbound: %s panicked: %v", handler, r))
}

// TeardownLocked is the one exit of every connection: it removes the fd
// from epoll, then closes it (in that order: the fd number is reused as
// soon as it is closed), drops the queue and tells the owner, which counts
// the reason. A connection that was closing ends for the reason it started
// closing. Idempotent. c.mu must be held.
func (c *Conn) TeardownLocked(reason CloseReason, err error) {
	switch c.State() {
	case StateDead:
		return
	case StateClosing:
		reason = c.reason
	}
	c.state.Store(uint32(StateDead))
	c.reason = reason
	if c.watch != nil {
		c.watch.Stop()
	}
	c.closeFDLocked()
	clear(c.outq)
	c.addOutLocked(-c.outBytes)
	c.outq, c.outOff = nil, 0
	c.owner().TornDown(reason, err)
}
