// Package outbound is a connection's socket after the upgrade, whatever
// protocol it speaks: a bare file descriptor with a reference count, a
// bounded queue of shared frames written with writev, EPOLLOUT when the
// socket is full, and one close path. A protocol codec (package wsconn for
// WebSocket) embeds Conn and adds reading and its own frames.
//
// # fd safety
//
// fd numbers are reused as soon as they are closed, so no syscall may run
// on fd after close(2). Writes and the close both happen with the Conn's
// lock held; the read worker, which runs without it, holds a reference
// (AcquireFD) for the duration of its reads, and a close that finds one
// held leaves the close(2) to the reader's ReleaseFD. The fd leaves epoll
// before it is closed.
package outbound

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/netpoll"
)

// State is where a connection is in its life.
type State uint32

const (
	StateOpen    State = iota
	StateClosing       // goodbye queued; waiting for it to drain and for the peer
	StateDead          // torn down: out of epoll, socket closed
)

// maxIov bounds the iovecs of one writev (the kernel's IOV_MAX is 1024).
const maxIov = 1024

// Codec is the protocol around a Conn: it reads (netpoll.Handler's
// OnRead; OnWrite it gets by embedding Conn) and is its Owner.
type Codec interface {
	netpoll.Handler
	Owner
}

// Owner is what the core tells the codec around it.
type Owner interface {
	// Goodbye returns the bytes that end the connection when the core
	// itself ends it for reason (ReasonSlowConsumer); nil sends nothing.
	Goodbye(reason CloseReason) []byte
	// TornDown runs once per connection, with its lock held, after the fd
	// left epoll and was closed (or handed to the reader to close).
	TornDown(reason CloseReason, err error)
}

// Conn is the outbound core of one connection. It owns its socket as a
// bare file descriptor: after the upgrade the socket leaves Go's net
// package (whose netFD, addresses and runtime poll descriptor cost about
// 600 bytes a connection), and fd is all that is kept. Reads and writes
// are plain non-blocking syscalls. Embed it and call Init.
type Conn struct {
	// Fields are ordered for packing: this struct is paid once per
	// connection, idle or not.
	env    *Env
	id     uint64
	fd     int
	watch  *netpoll.Watch
	remote *netip.AddrPort // the client's address when the socket's peer is a proxy (SetRemote); nil: the peer's
	fdref  atomic.Int32    // readers holding fd, plus fdClosed once close was asked
	state  atomic.Uint32   // State; written with mu held, read anywhere

	mu           sync.Mutex
	outq         [][]byte    // guarded by mu: frames not fully written; nil when empty
	outOff       int         // guarded by mu: bytes of outq[0] already written
	outBytes     int         // guarded by mu: bytes in outq not yet written
	lingerUntil  int64       // guarded by mu: closing: unix ns after which the socket is closed anyway
	reason       CloseReason // guarded by mu: why it is closing
	writeArmed   bool        // guarded by mu: waiting for EPOLLOUT
	closeAtFlush bool        // guarded by mu: closing: close the socket once the queue drains
	dropLogged   bool        // guarded by mu: this drop episode has been logged
	joined       bool        // guarded by mu: JoinLocked ran; before it, only the first bytes (the 101) are queued, and held
	noDrop       bool        // set before the connection is shared: never drop a frame (SlowDrop closes it instead)
}

// Init sets up the core for fd, with codec around it, before anything else
// can reach it, and makes its Watch on p (not added to epoll until the
// Watch's Start).
// The codec's OnRead runs on the pool after each read event; it gets the
// core's OnWrite by embedding Conn. The Watch keeps the codec, which is
// also how the core reaches its Owner (one interface less per connection).
func (c *Conn) Init(env *Env, codec Codec, p *netpoll.Poller, id uint64, fd int) *netpoll.Watch {
	c.env, c.id, c.fd = env, id, fd
	c.watch = p.WatchHandler(fd, codec)
	return c.watch
}

func (c *Conn) owner() Owner { return c.watch.Handler().(Owner) }

// NeverDrop makes the slow-consumer policy close the connection rather
// than drop a frame for it, whatever Config.SlowPolicy says: for clients
// that must never miss a message silently (they resume instead). Call it
// before the connection is shared.
func (c *Conn) NeverDrop() { c.noDrop = true }

// Watch is the connection's epoll registration.
func (c *Conn) Watch() *netpoll.Watch { return c.watch }

// ID is the connection's number, unique in its server.
func (c *Conn) ID() uint64 { return c.id }

// FD is the socket; only while a reference is held (AcquireFD) or with
// the lock held and the connection not dead.
func (c *Conn) FD() int { return c.fd }

// Env is what the connection shares with the others of its server.
func (c *Conn) Env() *Env { return c.env }

// State returns the connection's state; any goroutine may ask.
func (c *Conn) State() State { return State(c.state.Load()) }

// Lock and Unlock guard the outbound queue and the close state.
func (c *Conn) Lock()   { c.mu.Lock() }
func (c *Conn) Unlock() { c.mu.Unlock() }

// ReasonLocked is why the connection is closing or closed. c.mu must be held.
func (c *Conn) ReasonLocked() CloseReason { return c.reason }

// QueuedLocked is the bytes waiting for the socket. c.mu must be held.
func (c *Conn) QueuedLocked() int { return c.outBytes }

// LingerOverLocked reports whether a closing connection's peer had its
// CloseTimeout to take the goodbye. c.mu must be held.
func (c *Conn) LingerOverLocked(now int64) bool {
	return c.State() == StateClosing && now > c.lingerUntil
}

// EndLingerLocked tears down a closing connection whose peer had its
// CloseTimeout to take the goodbye and did not: every codec's sweep does
// it. c.mu must be held.
func (c *Conn) EndLingerLocked(now int64) {
	if c.LingerOverLocked(now) {
		c.TeardownLocked(c.reason, nil)
	}
}

// Kill is hub.Subscriber's Kill for every codec: the connection ends at
// once (the shutdown ran out of time).
func (c *Conn) Kill() { c.Teardown(ReasonShutdown, nil) }

const fdClosed = 1 << 30

// AcquireFD takes a reader's reference on fd; false once it is closing.
func (c *Conn) AcquireFD() bool {
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

// ReleaseFD drops the reader's reference, closing fd if a close came in
// meanwhile.
func (c *Conn) ReleaseFD() {
	if c.fdref.Add(-1) == fdClosed {
		_ = unix.Close(c.fd)
	}
}

// closeFDLocked closes fd now, or as soon as the reader releases it.
// c.mu must be held (so no write is in flight).
func (c *Conn) closeFDLocked() {
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

// ResumeRead re-arms the read registration after a read event.
func (c *Conn) ResumeRead() error { return c.watch.ResumeRead() }

// SetRemote names the client's address when the socket's peer is not
// the client but a load balancer that said who is (a PROXY protocol
// header): Remote returns it. Call it before the connection is shared.
func (c *Conn) SetRemote(ap netip.AddrPort) { c.remote = &ap }

// Remote is the client's address, for logs: SetRemote's, else the
// socket's peer (then c.mu must be held, the fd open).
func (c *Conn) Remote() string {
	if c.remote != nil {
		return c.remote.String()
	}
	if c.State() == StateDead {
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

// IsGone reports whether a read or write error means the peer went away.
func IsGone(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ETIMEDOUT)
}

// closeLingerFromNow is when a connection starting to close now gives up.
func (c *Conn) closeLingerFromNow() int64 {
	return time.Now().Add(c.env.cfg.CloseTimeout).UnixNano()
}
