package broadcast

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// maxBatch bounds how many messages a shard takes from the ring at once;
// for each connection they go out in one writev.
const maxBatch = 64

// hub orders published messages in a ring that every shard reads at its
// own pace. A message is encoded once; the ring holds the encoded frame,
// and every shard writes those same bytes to each of its connections.
type hub struct {
	mu     sync.Mutex
	ring   [][]byte // guarded by mu: encoded frames, slot seq%len(ring)
	head   uint64   // guarded by mu: sequence number of the next message
	closed bool     // guarded by mu: no more publishes

	shards []*shard
}

func newHub(srv *Server, backlog, shards int) *hub {
	h := &hub{ring: make([][]byte, backlog)}
	h.shards = make([]*shard, shards)
	for i := range h.shards {
		h.shards[i] = &shard{
			srv:        srv,
			hub:        h,
			wake:       make(chan struct{}, 1),
			stop:       make(chan struct{}),
			done:       make(chan struct{}),
			fanoutHist: newBucketHist(fanoutBounds...),
			queueHist:  newBucketHist(queueBounds...),
		}
	}
	return h
}

// minCursor is the oldest sequence some shard has not taken yet.
// h.mu must be held.
func (h *hub) minCursorLocked() uint64 {
	m := h.head
	for _, s := range h.shards {
		m = min(m, s.cursor.Load())
	}
	return m
}

// publish appends an encoded frame to the ring and wakes every shard.
func (h *hub) publish(f []byte) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrServerClosed
	}
	if h.head-h.minCursorLocked() >= uint64(len(h.ring)) {
		h.mu.Unlock()
		return ErrBacklog
	}
	h.ring[h.head%uint64(len(h.ring))] = f
	h.head++
	h.mu.Unlock()
	for _, s := range h.shards {
		s.notify()
	}
	return nil
}

// take copies the next frames for s into s.batch and advances its cursor.
func (h *hub) take(s *shard) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := s.cursor.Load()
	n := min(h.head-cur, maxBatch)
	s.batch = s.batch[:0]
	for i := uint64(0); i < n; i++ {
		s.batch = append(s.batch, h.ring[(cur+i)%uint64(len(h.ring))])
	}
	before := h.minCursorLocked()
	s.cursor.Store(cur + n)
	// Slots every shard has taken are dropped now, so the ring does not
	// keep up to Backlog frames alive after they went out.
	for q, after := before, h.minCursorLocked(); q < after; q++ {
		h.ring[q%uint64(len(h.ring))] = nil
	}
	return int(n)
}

// pending reports whether s has messages to take.
func (h *hub) pending(s *shard) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head > s.cursor.Load()
}

func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
}

// shard owns a slice of the connection table. Its goroutine is the only
// one that touches conns; additions and removals reach it through an inbox.
type shard struct {
	srv  *Server
	hub  *hub
	wake chan struct{} // capacity 1: "something to do"
	stop chan struct{}
	done chan struct{}

	cursor atomic.Uint64 // next sequence number to take from the ring
	count  atomic.Int64  // len(conns), for readers outside the goroutine

	sweepDue atomic.Bool
	pingDue  atomic.Bool
	draining atomic.Bool // shutdown: close every connection with 1001
	forcing  atomic.Bool // shutdown deadline passed: tear everything down

	mu      sync.Mutex
	adds    []*conn // guarded by mu
	removes []*conn // guarded by mu

	// Owned by the shard goroutine.
	conns   []*conn
	batch   [][]byte
	iov     []unix.Iovec
	drained bool

	deliveries atomic.Uint64
	dropped    atomic.Uint64
	fanoutHist *bucketHist // seconds per batch
	queueHist  *bucketHist // queued bytes per backlogged connection, per sweep
}

func (s *shard) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *shard) add(c *conn) {
	s.mu.Lock()
	s.adds = append(s.adds, c)
	s.mu.Unlock()
	s.notify()
}

func (s *shard) remove(c *conn) {
	s.mu.Lock()
	s.removes = append(s.removes, c)
	s.mu.Unlock()
	s.notify()
}

func (s *shard) run() {
	defer close(s.done)
	var adds, removes []*conn
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		s.mu.Lock()
		adds, s.adds = s.adds, adds[:0]
		removes, s.removes = s.removes, removes[:0]
		s.mu.Unlock()
		for _, c := range adds {
			c.shardIdx = len(s.conns)
			s.conns = append(s.conns, c)
		}
		// Additions first: a connection torn down right after it
		// registered has both in the same inbox.
		for _, c := range removes {
			s.unlink(c)
		}
		clear(adds)
		clear(removes)
		s.count.Store(int64(len(s.conns)))

		if d := s.srv.cfg.FlushDelay; d > 0 && s.hub.pending(s) {
			// Batching window: let more messages pile up for one writev.
			// Connections that register meanwhile join at the next wake.
			select {
			case <-time.After(d):
			case <-s.stop:
				return
			}
		}
		for s.hub.take(s) > 0 {
			s.fanout(s.batch)
			clear(s.batch)
		}
		if s.sweepDue.Swap(false) {
			s.sweep(time.Now().UnixNano(), s.pingDue.Swap(false))
		}
		if s.forcing.Load() {
			s.each(func(c *conn) { c.teardownLocked(ReasonShutdown, nil) })
		} else if s.draining.Load() && !s.drained {
			// The hub refuses publishes by now and this shard has sent
			// everything it took: what was accepted has been delivered.
			s.drained = true
			s.each(func(c *conn) {
				c.closeLocked(ws.StatusGoingAway, "server shutting down", ReasonShutdown, false)
			})
		}
	}
}

func (s *shard) unlink(c *conn) {
	i := c.shardIdx
	if i < 0 || i >= len(s.conns) || s.conns[i] != c {
		return // already gone
	}
	last := len(s.conns) - 1
	s.conns[i] = s.conns[last]
	s.conns[i].shardIdx = i
	s.conns[last] = nil
	s.conns = s.conns[:last]
	c.shardIdx = -1
}

// fanout writes frames, in order, to every connection of the shard: one
// writev each. The frames are shared and never modified.
func (s *shard) fanout(frames [][]byte) {
	start := time.Now()
	size := 0
	for _, f := range frames {
		size += len(f)
	}
	var delivered, dropped uint64
	for _, c := range s.conns {
		c.mu.Lock()
		if c.getState() == stateOpen {
			d := c.sendLocked(frames, size, &s.iov)
			dropped += uint64(d)
			delivered += uint64(len(frames) - d)
		}
		c.mu.Unlock()
	}
	s.deliveries.Add(delivered)
	s.dropped.Add(dropped)
	s.fanoutHist.observe(time.Since(start).Seconds())
}

// sweep closes idle connections, pings the others when a ping is due, and
// gives up on closing connections whose peer never took the close frame.
func (s *shard) sweep(now int64, ping bool) {
	idle := int64(s.srv.cfg.IdleTimeout)
	s.each(func(c *conn) {
		if c.outBytes > 0 {
			s.queueHist.observe(float64(c.outBytes))
		}
		switch c.getState() {
		case stateOpen:
			if idle > 0 && now-c.lastRead.Load() > idle {
				c.closeLocked(ws.StatusGoingAway, "idle timeout", ReasonIdleTimeout, false)
				return
			}
			if ping {
				c.sendControlLocked(ws.CompiledPing)
			}
		case stateClosing:
			if now > c.lingerUntil {
				c.teardownLocked(c.reason, nil)
			}
		}
	})
}

// each runs f on every connection with its lock held. Teardowns it causes
// only queue removals, so iterating a snapshot is safe.
func (s *shard) each(f func(c *conn)) {
	for _, c := range s.conns {
		c.mu.Lock()
		f(c)
		c.mu.Unlock()
	}
}

// Errors returned by publishing.
var (
	// ErrBacklog: Config.Backlog messages are already waiting for the
	// slowest shard; the server is not keeping up with the publish rate.
	ErrBacklog = errors.New("broadcast: publish backlog full")
	// ErrServerClosed: the server is shutting down or closed.
	ErrServerClosed = errors.New("broadcast: server closed")
	// ErrTooBig: the message is over Config.MaxMessage.
	ErrTooBig = errors.New("broadcast: message too big")
	// ErrInvalidUTF8: a text message that is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("broadcast: text message is not valid UTF-8")
)
