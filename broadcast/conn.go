package broadcast

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/netpoll"
)

type connState uint32

const (
	stateOpen    connState = iota
	stateClosing           // close frame queued; waiting for it to drain and for the peer
	stateDead              // torn down: out of epoll, socket closed
)

// maxIov bounds the iovecs of one writev (the kernel's IOV_MAX is 1024).
const maxIov = 1024

// conn is one upgraded client.
//
// It owns its socket as a bare file descriptor: after the upgrade the
// socket leaves Go's net package (whose netFD, addresses and runtime poll
// descriptor cost about 600 bytes a connection), and fd is all that is
// kept. Reads and writes are plain non-blocking syscalls.
//
// fd safety: fd numbers are reused as soon as they are closed, so no
// syscall may run on fd after close(2). Writes and the close both happen
// with mu held; the read worker, which runs without mu, holds a reference
// (fdref) for the duration of its reads, and a close that finds it held
// leaves the close(2) to the reader's release.
//
// The read side (parser, rbuf) is touched only by the worker that holds
// the connection's read event; the one-shot epoll registration guarantees
// there is at most one. Everything about writing and closing is guarded
// by mu.
type conn struct {
	id    uint64
	srv   *Server
	sh    *shard
	fd    int
	fdref atomic.Int32 // readers holding fd, plus fdClosed once close was asked
	watch *netpoll.Watch

	parser frame.Parser
	rbuf   []byte // unparsed tail; nil unless a frame is incomplete

	lastRead atomic.Int64  // unix nanoseconds of the last bytes read
	state    atomic.Uint32 // connState; written with mu held, read anywhere

	mu           sync.Mutex
	reason       CloseReason   // guarded by mu: why it is closing
	outq         [][]byte      // guarded by mu: frames not fully written; nil when empty
	outOff       int           // guarded by mu: bytes of outq[0] already written
	outBytes     int           // guarded by mu: bytes in outq not yet written
	writeArmed   bool          // guarded by mu: waiting for EPOLLOUT
	closeAtFlush bool          // guarded by mu: closing: close the socket once the queue drains
	lingerUntil  int64         // guarded by mu: closing: unix ns after which the socket is closed anyway
	dropLogged   bool          // guarded by mu: this drop episode has been logged
	shardIdx     int           // owned by the shard goroutine
	ip           netip.Addr    // client address, kept only for MaxConnsPerIP
	limiter      *rate.Limiter // ClientRate; nil without one
}

func (c *conn) getState() connState { return connState(c.state.Load()) }

const fdClosed = 1 << 30

// acquireFD takes a reader's reference on fd; false once it is closing.
func (c *conn) acquireFD() bool {
	for {
		r := c.fdref.Load()
		if r&fdClosed != 0 {
			return false
		}
		if c.fdref.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// releaseFD drops the reader's reference, closing fd if a close came in
// meanwhile.
func (c *conn) releaseFD() {
	if c.fdref.Add(-1) == fdClosed {
		_ = unix.Close(c.fd)
	}
}

// closeFDLocked closes fd now, or as soon as the reader releases it.
// c.mu must be held (so no write is in flight).
func (c *conn) closeFDLocked() {
	for {
		r := c.fdref.Load()
		if r&fdClosed != 0 {
			return
		}
		if c.fdref.CompareAndSwap(r, r|fdClosed) {
			if r == 0 {
				_ = unix.Close(c.fd)
			}
			return
		}
	}
}

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
func (c *conn) writeLocked(frames [][]byte, off int, iov *[]unix.Iovec) (int, error) {
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
	c.srv.bytesOut.Add(uint64(n))
	c.srv.writes.Add(1)
	return n, nil
}

// sendLocked hands frames (total size bytes) to the connection: written now
// if the socket takes them, queued behind what is already waiting
// otherwise. It returns how many frames were dropped under SlowDrop.
// Broadcast frames may only be queued, never modified. c.mu must be held.
func (c *conn) sendLocked(frames [][]byte, size int, iov *[]unix.Iovec) (dropped int) {
	if c.getState() != stateOpen {
		return 0
	}
	if c.outBytes > 0 {
		return c.queueLocked(frames, 0)
	}
	n, err := c.writeLocked(frames, 0, iov)
	if err != nil {
		c.teardownLocked(ReasonWriteError, err)
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
func (c *conn) queueLocked(frames [][]byte, off int) (dropped int) {
	limit := c.srv.cfg.QueueBytes
	for i, f := range frames {
		size := len(f)
		if i == 0 {
			size -= off
		}
		mustKeep := i == 0 && off > 0 // a half-written frame must be finished
		if !mustKeep && c.outBytes+size > limit {
			if c.srv.cfg.SlowPolicy == SlowDrop {
				dropped++
				if !c.dropLogged {
					c.dropLogged = true
					c.srv.logSlow.warn(c.srv.log, "slow consumer: dropping frames", "conn", c.id, "remote", c.remote(), "queued_bytes", c.outBytes, "queue_limit", limit)
				}
				continue
			}
			c.srv.logSlow.warn(c.srv.log, "slow consumer: closing", "conn", c.id, "remote", c.remote(), "queued_bytes", c.outBytes, "queue_limit", limit)
			c.closeLocked(ws.StatusPolicyViolation, "slow consumer", ReasonSlowConsumer, false)
			return dropped
		}
		c.outq = append(c.outq, f)
		c.addOutLocked(size)
	}
	return dropped
}

// addOutLocked changes the queued byte count, here and server-wide.
func (c *conn) addOutLocked(n int) {
	c.outBytes += n
	c.srv.queued.Add(int64(n))
}

// sendControlLocked sends a control frame (ping, pong) after what is
// queued. It counts against QueueBytes like any frame: a client that sends
// pings and never reads the pongs is a slow consumer too (otherwise a ping
// flood would grow its queue without bound). Whatever SlowPolicy says, a
// control frame is not dropped: the connection is closed.
func (c *conn) sendControlLocked(f []byte) {
	if c.getState() != stateOpen {
		return
	}
	if c.outBytes > 0 {
		if c.outBytes+len(f) > c.srv.cfg.QueueBytes {
			c.srv.logSlow.warn(c.srv.log, "slow consumer: closing (control frames)", "conn", c.id, "remote", c.remote(), "queued_bytes", c.outBytes)
			c.closeLocked(ws.StatusPolicyViolation, "slow consumer", ReasonSlowConsumer, false)
			return
		}
		c.outq = append(c.outq, f)
		c.addOutLocked(len(f))
		return
	}
	var iov [1]unix.Iovec
	s := iov[:0]
	n, err := c.writeLocked([][]byte{f}, 0, &s)
	if err != nil {
		c.teardownLocked(ReasonWriteError, err)
		return
	}
	if n < len(f) {
		c.outq = append(c.outq, f)
		c.outOff = n
		c.addOutLocked(len(f) - n)
		c.armWriteLocked()
	}
}

func (c *conn) armWriteLocked() {
	if c.writeArmed {
		return
	}
	if err := c.watch.ArmWrite(); err != nil {
		c.teardownLocked(ReasonWriteError, err)
		return
	}
	c.writeArmed = true
}

// flushLocked writes queued frames until the queue is empty or the socket
// is full. c.mu must be held.
func (c *conn) flushLocked(iov *[]unix.Iovec) {
	for c.outBytes > 0 {
		n, err := c.writeLocked(c.outq, c.outOff, iov)
		if err != nil {
			c.teardownLocked(ReasonWriteError, err)
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
	if c.getState() == stateClosing {
		c.afterCloseFrameLocked()
	}
}

// onWrite runs on a worker when the socket, full before, can take more.
func (c *conn) onWrite(ev netpoll.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeArmed = false
	if netpoll.Closed(ev) {
		c.teardownLocked(ReasonShutdown, nil)
		return
	}
	if c.getState() == stateDead {
		return
	}
	iov := c.srv.getIov()
	c.flushLocked(iov)
	c.srv.putIov(iov)
}

// closeLocked starts closing: it queues a close frame with code (behind
// the frame being written; other queued frames are dropped when
// dropQueued), and counts reason once the connection is torn down. The
// socket closes when the close frame is out: at once if peerClosed (the
// client already sent its close), otherwise after the client answers or
// hangs up, or after CloseTimeout. Calling it on a closing or dead
// connection does nothing. c.mu must be held.
func (c *conn) closeLocked(code ws.StatusCode, text string, reason CloseReason, peerClosed bool) {
	if c.getState() != stateOpen {
		return
	}
	c.state.Store(uint32(stateClosing))
	c.reason = reason
	c.closeAtFlush = peerClosed
	c.lingerUntil = time.Now().Add(c.srv.cfg.CloseTimeout).UnixNano()
	if reason != ReasonShutdown && len(c.outq) > 0 {
		keep := 0
		if c.outOff > 0 {
			keep = 1
		}
		clear(c.outq[keep:])
		c.outq = c.outq[:keep]
		c.addOutLocked(-c.outBytes)
		if keep == 1 {
			c.addOutLocked(len(c.outq[0]) - c.outOff)
		}
	}
	cf := c.srv.closeFrame(code, text)
	c.outq = append(c.outq, cf)
	c.addOutLocked(len(cf))
	if !c.writeArmed {
		iov := c.srv.getIov()
		c.flushLocked(iov)
		c.srv.putIov(iov)
	}
}

// afterCloseFrameLocked runs when the close frame has been written.
func (c *conn) afterCloseFrameLocked() {
	if c.closeAtFlush {
		c.teardownLocked(c.reason, nil)
		return
	}
	// Half-close: the client sees our close frame then EOF; the reader
	// keeps draining until it answers or hangs up (or CloseTimeout).
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		c.teardownLocked(c.reason, nil)
	}
}

// teardown is the one exit of every connection.
func (c *conn) teardown(reason CloseReason, err error) {
	c.mu.Lock()
	c.teardownLocked(reason, err)
	c.mu.Unlock()
}

// teardownLocked removes the connection from epoll, then closes the socket
// (in that order: the fd number is reused as soon as it is closed), drops
// its queue and counts the reason. Idempotent. c.mu must be held.
func (c *conn) teardownLocked(reason CloseReason, err error) {
	switch c.getState() {
	case stateDead:
		return
	case stateClosing:
		reason = c.reason // it ends for the reason it started closing
	}
	c.state.Store(uint32(stateDead))
	c.reason = reason
	if c.watch != nil {
		c.watch.Stop()
	}
	c.closeFDLocked()
	clear(c.outq)
	c.addOutLocked(-c.outBytes)
	c.outq, c.outOff = nil, 0
	c.srv.releaseIP(c.ip)
	c.srv.connClosed(c, reason, err)
	c.sh.remove(c)
}

// remote is the peer's address, for logs; c.mu must be held (fd open).
func (c *conn) remote() string {
	if c.getState() == stateDead {
		return ""
	}
	sa, err := unix.Getpeername(c.fd)
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

// Errors a read can end with that mean the client went away.
func isGone(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ETIMEDOUT)
}
