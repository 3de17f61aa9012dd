package outbound

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/netpoll"
)

// writev is one non-blocking writev(2). Hand-written rather than
// unix.Writev, which allocates its iovecs on every call: this is the
// per-recipient hot path.
func writev(fd int, iov []unix.Iovec) (int, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// writeLocked writes as much of frames (the first one from byte off) as
// the socket takes now, in one writev. It returns the bytes written;
// EAGAIN is not an error. c.mu must be held.
func (c *Conn) writeLocked(frames [][]byte, off int, iov *[]unix.Iovec) (int, error) {
	v := (*iov)[:0]
	for i, f := range frames {
		if i == 0 {
			f = f[off:]
		}
		if len(f) == 0 {
			continue
		}
		v = append(v, unix.Iovec{Base: &f[0], Len: uint64(len(f))})
		if len(v) == maxIov {
			break
		}
	}
	*iov = v
	if len(v) == 0 {
		return 0, nil
	}
	n, err := writev(c.fd, v)
	clear(v) // drop references to frames the scratch no longer needs
	if err == unix.EAGAIN {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	c.env.bytesOut.Add(uint64(n))
	c.env.writes.Add(1)
	return n, nil
}

// writeFailedLocked tears the connection down after a failed write: as
// ReasonClientGone when the peer reset or left (EPIPE, ECONNRESET: it went
// away while we wrote, a ping or a message, to it), as ReasonWriteError
// otherwise. c.mu must be held.
func (c *Conn) writeFailedLocked(err error) {
	if IsGone(err) {
		c.TeardownLocked(ReasonClientGone, err)
		return
	}
	c.TeardownLocked(ReasonWriteError, err)
}

// Deliver is hub.Subscriber's Deliver for every codec: frames (total
// size bytes) written or queued, as SendLocked does, while the connection
// is open; it returns how many it took and how many it dropped.
func (c *Conn) Deliver(frames [][]byte, size int, iov *[]unix.Iovec) (delivered, dropped int) {
	c.mu.Lock()
	if c.State() == StateOpen {
		dropped = c.SendLocked(frames, size, iov)
		delivered = len(frames) - dropped
	}
	c.mu.Unlock()
	return delivered, dropped
}

// SendLocked hands frames (total size bytes) to the connection: written now
// if the socket takes them, queued behind what is already waiting
// otherwise. It returns how many frames were dropped under SlowDrop.
// Frames may only be queued, never modified: they are shared with every
// other recipient. c.mu must be held.
func (c *Conn) SendLocked(frames [][]byte, size int, iov *[]unix.Iovec) (dropped int) {
	if c.State() != StateOpen {
		return 0
	}
	if c.outBytes > 0 {
		return c.queueLocked(frames, 0)
	}
	n, err := c.writeLocked(frames, 0, iov)
	if err != nil {
		c.writeFailedLocked(err)
		return 0
	}
	if n == size {
		return 0
	}
	// Short write: skip what went out, queue the rest, wait for EPOLLOUT.
	i := 0
	for n >= len(frames[i]) {
		n -= len(frames[i])
		i++
	}
	c.outOff = n
	dropped = c.queueLocked(frames[i:], n)
	c.armWriteLocked()
	return dropped
}

// queueLocked appends frames to the outbound queue; the first has off
// bytes already written (and must then be the new queue head). Frames that
// would take the queue over QueueBytes trigger the slow-consumer policy.
func (c *Conn) queueLocked(frames [][]byte, off int) (dropped int) {
	limit := c.env.cfg.QueueBytes
	for i, f := range frames {
		size := len(f)
		if i == 0 {
			size -= off
		}
		mustKeep := i == 0 && off > 0 // a half-written frame must be finished
		if !mustKeep && c.outBytes+size > limit {
			if c.env.cfg.SlowPolicy == SlowDrop && !c.noDrop {
				dropped++
				if !c.dropLogged {
					c.dropLogged = true
					c.env.logSlow.Warn(c.env.log, "slow consumer: dropping frames", "conn", c.id, "remote", c.Remote(), "queued_bytes", c.outBytes, "queue_limit", limit)
				}
				continue
			}
			c.env.logSlow.Warn(c.env.log, "slow consumer: closing", "conn", c.id, "remote", c.Remote(), "queued_bytes", c.outBytes, "queue_limit", limit)
			c.CloseLocked(c.owner().Goodbye(ReasonSlowConsumer), ReasonSlowConsumer, false)
			return dropped
		}
		c.outq = append(c.outq, f)
		c.addOutLocked(size)
	}
	return dropped
}

// addOutLocked changes the queued byte count, here and server-wide.
func (c *Conn) addOutLocked(n int) {
	c.outBytes += n
	c.env.queued.Add(int64(n))
}

// SendControlLocked sends a control frame (ping, pong) after what is
// queued. It counts against QueueBytes like any frame: a client that sends
// pings and never reads the pongs is a slow consumer too (otherwise a ping
// flood would grow its queue without bound). Whatever SlowPolicy says, a
// control frame is not dropped: the connection is closed.
func (c *Conn) SendControlLocked(f []byte) {
	if c.State() != StateOpen {
		return
	}
	if c.outBytes > 0 {
		c.queueControlLocked(f)
		return
	}
	var iov [1]unix.Iovec
	s := iov[:0]
	n, err := c.writeLocked([][]byte{f}, 0, &s)
	if err != nil {
		c.writeFailedLocked(err)
		return
	}
	if n < len(f) {
		c.outq = append(c.outq, f)
		c.outOff = n
		c.addOutLocked(len(f) - n)
		c.armWriteLocked()
	}
}

func (c *Conn) armWriteLocked() {
	if c.writeArmed {
		return
	}
	if err := c.watch.ArmWrite(); err != nil {
		c.TeardownLocked(ReasonWriteError, err)
		return
	}
	c.writeArmed = true
}

// QueueLocked queues b, the connection's first bytes (the 101 of an
// upgrade), to go out at JoinLocked, ahead of everything else. It counts
// in the queued bytes like any frame. c.mu must be held.
func (c *Conn) QueueLocked(b []byte) {
	if c.State() != StateOpen || len(b) == 0 {
		return
	}
	c.outq = append(c.outq, b)
	c.addOutLocked(len(b))
}

// JoinLocked lets the queue go: what QueueLocked held (and any control
// frame queued behind it) is written now, as far as the socket takes it.
// Call it when the connection enters the hub. c.mu must be held.
func (c *Conn) JoinLocked() {
	c.joined = true
	c.FlushLocked()
}

// FlushLocked writes what is queued, as far as the socket takes it now;
// nothing before JoinLocked. c.mu must be held.
func (c *Conn) FlushLocked() {
	if !c.joined || c.writeArmed || c.outBytes == 0 || c.State() == StateDead {
		return
	}
	iov := c.env.getIov()
	c.flushLocked(iov)
	c.env.putIov(iov)
}

// QueuePongLocked queues a pong for the next FlushLocked. With replace, a
// pong queued since the last flush and still unsent is replaced instead:
// RFC 6455 (5.5.3) lets a server answer only the most recent of several
// pings, so a burst of pings read at once costs one pong and one write.
// Like SendControlLocked, it counts against QueueBytes and closes a slow
// consumer rather than drop. c.mu must be held.
func (c *Conn) QueuePongLocked(f []byte, replace bool) {
	if c.State() != StateOpen {
		return
	}
	if n := len(c.outq); replace && n > 0 && isPong(c.outq[n-1]) && (n > 1 || c.outOff == 0) {
		c.addOutLocked(len(f) - len(c.outq[n-1]))
		c.outq[n-1] = f
		return
	}
	c.queueControlLocked(f)
}

// queueControlLocked queues a control frame behind what waits, or closes
// the connection as a slow consumer when it does not fit in QueueBytes. A
// control frame is never dropped. c.mu must be held.
func (c *Conn) queueControlLocked(f []byte) {
	if c.outBytes+len(f) > c.env.cfg.QueueBytes {
		c.env.logSlow.Warn(c.env.log, "slow consumer: closing (control frames)", "conn", c.id, "remote", c.Remote(), "queued_bytes", c.outBytes)
		c.CloseLocked(c.owner().Goodbye(ReasonSlowConsumer), ReasonSlowConsumer, false)
		return
	}
	c.outq = append(c.outq, f)
	c.addOutLocked(len(f))
}

// isPong reports whether f is a whole pong frame (FIN, opcode 0xA).
// Broadcast frames are text or binary, so a queued frame starting so is
// one of ours.
func isPong(f []byte) bool { return len(f) > 0 && f[0] == 0x8A }

// flushLocked writes queued frames until the queue is empty or the socket
// is full. c.mu must be held.
func (c *Conn) flushLocked(iov *[]unix.Iovec) {
	for c.outBytes > 0 {
		n, err := c.writeLocked(c.outq, c.outOff, iov)
		if err != nil {
			c.writeFailedLocked(err)
			return
		}
		if n == 0 {
			c.armWriteLocked()
			return
		}
		c.addOutLocked(-n)
		n += c.outOff
		i := 0
		for i < len(c.outq) && n >= len(c.outq[i]) {
			n -= len(c.outq[i])
			c.outq[i] = nil
			i++
		}
		c.outq = c.outq[i:]
		c.outOff = n
	}
	// Drained: an idle connection keeps no write buffer.
	c.outq, c.outOff, c.dropLogged = nil, 0, false
	if c.State() == StateClosing {
		c.afterGoodbyeLocked()
	}
}

// OnWrite implements netpoll.Handler's write side (the codec embedding
// Conn gets it): it runs on a worker when the socket, full before, can
// take more.
func (c *Conn) OnWrite(ev netpoll.Event) {
	defer c.Recover("write")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeArmed = false
	if netpoll.Closed(ev) {
		c.TeardownLocked(ReasonShutdown, nil)
		return
	}
	if c.State() == StateDead {
		return
	}
	iov := c.env.getIov()
	c.flushLocked(iov)
	c.env.putIov(iov)
}
