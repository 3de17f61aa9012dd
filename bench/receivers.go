package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/netpoll"
)

// maxServerFrame bounds a message the bench accepts from a server.
const maxServerFrame = 16 << 20

// receiver is one client connection that reads (and, in the rooms
// scenario, publishes to its own room: see rooms.go): a WebSocket or an
// SSE stream (see transport.go). While idle it owns no goroutine and no
// buffer: netpoll tells a worker when it has bytes.
type receiver struct {
	pool   *recvPool
	idx    int
	room   uint32 // the receiver's index over all procs: its room (scenario rooms)
	spread int32  // its spread channel (Config.Channels), or -1: on Channel
	nc     net.Conn
	rc     syscall.RawConn
	watch  *netpoll.Watch
	slow   bool // never reads (scenario slow)
	churn  bool // may be replaced (scenario churn): not counted for loss
	stable bool // connected at the start and counted for loss
	slot   int  // index in pool.recvs, set under pool.mu before it is shared

	// Read side: touched only by the worker holding the read event.
	parser  frame.Parser // WebSocket
	events  sseParser    // SSE
	buf     []byte
	scratch []byte     // envelopes' decoded payloads, during a parse (from pool.scratch)
	tracks  []seqTrack // by publisher; a spread receiver's one track is its channel's publisher's
	lastSeq uint64     // json format: the highest seq of a message seen (0: none yet)
	now     int64
	frames  uint64
	wire    uint64 // bytes read while counting (stable receivers), since the last flush
	rdst    []byte
	rn      int
	rerr    error
	readFn  func(uintptr) bool
	reading chan struct{} // a TLS receiver's: closed when readTLS returns (nil: read by netpoll)

	// Pusher (Config.Protocol): the server's activity_timeout, set before
	// r is watched (0: not Pusher), and when r last read (unix ns, set by
	// the read worker): keepAlive pings a receiver silent for that long.
	activity time.Duration
	lastRead atomic.Int64

	tmu  sync.Mutex    // held by the read worker while parsing; guards tracks and lastSeq for snapshot
	warm atomic.Bool   // a warm-up message arrived (set by the read worker)
	sent atomic.Uint64 // scenario rooms: own messages written (seq 0 … sent-1)

	mu        sync.Mutex
	done      bool          // guarded by mu: closed, by either side
	closeCode ws.StatusCode // guarded by mu: how the server ended it (0: it did not)
}

// recvPool holds one process's receivers.
type recvPool struct {
	cfg    Config
	poller *netpoll.Poller
	offset int // spreads source addresses across processes

	lat       Histogram // delivery latency, whole run
	tick      Histogram // delivery latency, current second
	handshake Histogram
	frames    atomic.Uint64 // bench messages received by stable receivers
	lastAt    atomic.Int64  // when the latest of them was read (unix ns)
	unique    atomic.Uint64
	foreign   atomic.Uint64 // messages without the bench header
	misrouted atomic.Uint64 // messages from another room (rooms) or another channel's publisher (spread channels)
	// outOfOrder counts, in the json format, messages whose seq was not
	// above the last one their stable receiver saw: the server's order
	// broken, whoever published (per publisher, see seqTrack.reorder).
	outOfOrder atomic.Uint64
	errs       atomic.Uint64
	alive      atomic.Int64
	warm       atomic.Int64  // receivers that have seen a warm-up message
	counting   atomic.Bool   // receivers record latency only once publishing started
	rooms      bool          // scenario rooms: receivers publish, and take only their room's messages
	sse        bool          // receivers are SSE streams (Transport sse)
	envelopes  bool          // messages come in their JSON envelope (json format, SSE)
	pusher     bool          // receivers speak Pusher (Config.Protocol): messages are app events' data
	joined     atomic.Uint64 // Pusher receivers whose subscription succeeded
	stopPing   chan struct{} // Pusher: closed to stop keepAlive
	pinging    sync.WaitGroup
	expect     []byte        // what a message holds after its header (newPayload)
	corrupt    atomic.Uint64 // bench messages whose bytes after the header are not what was published
	wire       atomic.Uint64 // bytes stable receivers read while counting
	deflated   atomic.Uint64 // connections that negotiated permessage-deflate
	scratch    sync.Pool     // *[]byte: envelopes' decoded payloads

	// Scenario rooms: the receivers' own publishing (rooms.go).
	sent      atomic.Uint64 // messages written, over all receivers
	writeErrs atomic.Uint64 // messages a write failed for (not sent)
	warmSent  atomic.Uint64 // warm-up messages written
	published atomic.Bool   // every receiver has published all it will

	attempted, connected, failed, retries atomic.Uint64
	firstErr                              firstError // why the first receiver that failed to connect failed
	firstRunErr                           firstError // the first of errs: a receiver's stream broken

	mu     sync.Mutex
	recvs  []*receiver   // guarded by mu
	closes map[int]int64 // guarded by mu: close code (1006: no close frame) -> count
}

func newRecvPool(cfg Config, offset int) (*recvPool, error) {
	// The bench's own pool queueing under load is expected: only errors.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	p, err := netpoll.New(netpoll.Config{Workers: cfg.Workers, Logger: quiet})
	if err != nil {
		return nil, err
	}
	pool := &recvPool{cfg: cfg, poller: p, offset: offset, rooms: cfg.Scenario == ScenarioRooms,
		sse: cfg.Transport == TransportSSE, envelopes: cfg.envelopes(), expect: newPayload(cfg),
		pusher: cfg.Protocol == ProtocolPusher, closes: make(map[int]int64)}
	if pool.pusher {
		pool.stopPing = make(chan struct{})
		pool.pinging.Add(1)
		go pool.keepAlive()
	}
	return pool, nil
}

// connectAll opens n receivers at the configured rate, with retries.
func (p *recvPool) connectAll(ctx context.Context, n int, slowEvery, churnEvery int, connectRate float64) {
	lim := rate.NewLimiter(rate.Inf, 1)
	if connectRate > 0 {
		lim = rate.NewLimiter(rate.Limit(connectRate), max(1, int(connectRate/100)))
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < p.cfg.ConnectWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := &receiver{pool: p, idx: i, room: uint32(p.offset + i), spread: int32(p.cfg.spreadOf(p.offset + i))}
				r.slow = slowEvery > 0 && i%slowEvery == slowEvery-1
				r.churn = churnEvery > 0 && i%churnEvery == churnEvery-1
				r.stable = !r.slow && !r.churn
				if p.open(ctx, r) == nil {
					p.mu.Lock()
					r.slot = len(p.recvs)
					p.recvs = append(p.recvs, r)
					p.mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		if lim.Wait(ctx) != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

// open connects r (with retries) and starts watching it.
func (p *recvPool) open(ctx context.Context, r *receiver) error {
	var err error
	for attempt := 0; attempt <= p.cfg.ConnectRetries; attempt++ {
		if attempt > 0 {
			p.retries.Add(1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
			}
		}
		p.attempted.Add(1)
		start := time.Now()
		var extra []byte
		var deflate bool
		if p.pusher {
			var s pusherSession
			r.nc, extra, deflate, s, err = dialPusher(ctx, p.cfg, r.idx+p.offset, p.cfg.channelFor(r.idx+p.offset), p.cfg.Compression)
			if err != nil {
				continue
			}
			p.handshake.Record(s.established.Sub(start)) // to connection_established, as a 101 for the others
			p.joined.Add(1)
			r.activity = s.activity
			r.lastRead.Store(time.Now().UnixNano())
		} else {
			r.nc, extra, deflate, err = dialReceiver(ctx, p.cfg, r.idx+p.offset)
			if err != nil {
				continue
			}
			p.handshake.Record(time.Since(start))
		}
		var ended error
		if ended, err = r.start(extra, deflate); err != nil {
			r.nc.Close()
			continue
		}
		p.connected.Add(1)
		if deflate {
			p.deflated.Add(1)
		}
		p.alive.Add(1)
		if ended != nil {
			r.stopped(ended) // in the bytes that came with the 101
		}
		return nil
	}
	p.failed.Add(1)
	p.firstErr.note(err)
	return err
}

// firstError keeps the first error noted, for the result: of many
// connections that fail alike, the first says why.
type firstError struct{ p atomic.Pointer[string] }

func (f *firstError) note(err error) {
	if err != nil {
		s := err.Error()
		f.p.CompareAndSwap(nil, &s)
	}
}

func (f *firstError) text() string {
	if s := f.p.Load(); s != nil {
		return *s
	}
	return ""
}

// start prepares a connected r (deflate: it negotiated permessage-deflate)
// and starts watching it. Frames (or events) that came with the handshake
// (extra) are parsed first: the socket will not report them. If they end
// the stream, start returns why as ended, and r is not watched.
func (r *receiver) start(extra []byte, deflate bool) (ended, err error) {
	_, secure := r.nc.(tlsConn)
	var fd int
	if !secure {
		if r.rc, fd, err = rawFD(r.nc); err != nil {
			return nil, err
		}
		r.readFn = r.rawRead
	}
	r.done, r.closeCode = false, 0
	r.parser = frame.Parser{MaxMessage: maxServerFrame, Deflate: deflate}
	r.events = sseParser{}
	if len(extra) > 0 {
		r.buf = append(r.buf[:0], extra...)
	}
	if r.slow {
		return nil, nil // a slow receiver never reads; readSlow starts at r.buf
	}
	if len(r.buf) > 0 {
		r.now = time.Now().UnixNano()
		ended = r.parse()
		r.flushFrames()
		if ended != nil {
			return ended, nil
		}
	}
	if secure {
		r.reading = make(chan struct{})
		go r.readTLS()
		return nil, nil
	}
	r.watch = r.pool.poller.Watch(fd, r.onRead, func(netpoll.Event) {})
	return nil, r.watch.Start()
}

// parse consumes the complete frames (or events) in r.buf, keeping the
// tail, and returns the error that ended the stream, if one did: a
// *frame.CloseError (for an event stream too: one the bench cannot parse
// is a protocol error, as a frame would be).
func (r *receiver) parse() error {
	r.tmu.Lock()
	if r.pool.envelopes || r.pool.pusher {
		sp, _ := r.pool.scratch.Get().(*[]byte)
		if sp == nil {
			sp = new([]byte)
		}
		r.scratch = *sp
		defer func() {
			*sp, r.scratch = r.scratch[:0], nil
			r.pool.scratch.Put(sp)
		}()
	}
	var used int
	var err error
	if r.pool.sse {
		used, err = r.events.parse(r.buf, r.envelope)
		if err != nil {
			err = &frame.CloseError{Code: ws.StatusProtocolError, Reason: err.Error()}
		}
	} else {
		used, err = r.parser.ParseServer(r.buf, r)
	}
	r.tmu.Unlock()
	r.buf = r.buf[:copy(r.buf, r.buf[used:])]
	return err
}

func (r *receiver) rawRead(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), r.rdst)
		if err == unix.EINTR {
			continue
		}
		r.rn, r.rerr = n, err
		return true
	}
}

// onRead reads what is there, parses, and re-arms. One clock read per
// read(2): frames that arrived together arrived at the same time.
func (r *receiver) onRead(ev netpoll.Event) {
	if netpoll.Closed(ev) {
		r.finish(ws.StatusAbnormalClosure)
		return
	}
	for {
		if r.buf == nil {
			r.buf = make([]byte, 0, 16<<10)
		}
		if len(r.buf) == cap(r.buf) {
			r.buf = append(r.buf, make([]byte, cap(r.buf))...)[:len(r.buf)]
		}
		r.rdst = r.buf[len(r.buf):cap(r.buf)]
		err := r.rc.Read(r.readFn)
		r.rdst = nil
		if err != nil || (r.rerr != nil && r.rerr != unix.EAGAIN) || (r.rerr == nil && r.rn == 0) {
			r.finish(ws.StatusAbnormalClosure) // EOF or reset without a close frame
			return
		}
		if r.rerr == unix.EAGAIN {
			break
		}
		r.now = time.Now().UnixNano()
		if r.activity > 0 {
			r.lastRead.Store(r.now)
		}
		r.buf = r.buf[:len(r.buf)+r.rn]
		if r.stable && r.pool.counting.Load() {
			r.wire += uint64(r.rn)
		}
		if err := r.parse(); err != nil {
			r.stopped(err)
			return
		}
	}
	if len(r.buf) == 0 {
		r.buf = nil // an idle receiver keeps no buffer
	}
	r.flushFrames()
	if r.watch.ResumeRead() != nil {
		r.finish(ws.StatusAbnormalClosure)
	}
}

// Message accounts for one message from the server (frame.Handler, called
// by ParseServer with r.tmu held): as published, or in its JSON envelope
// (json format). It never stops the parse.
func (r *receiver) Message(_ ws.OpCode, p []byte) error {
	switch {
	case r.pool.envelopes:
		return r.envelope(p)
	case r.pool.pusher:
		return r.pusherEvent(p)
	}
	r.count(p)
	return nil
}

// envelope accounts for one JSON envelope (a json-format frame, an SSE
// event's data; called with r.tmu held): a message is counted by its
// payload, recovered as published; the welcome is not counted; anything
// else, or what is not an envelope, is foreign. It never stops the parse.
func (r *receiver) envelope(b []byte) error {
	typ, seq, payload, scratch, err := decodeEnvelope(b, r.scratch)
	r.scratch = scratch
	switch {
	case err != nil || typ == envOther || (typ == envMessage && payload == nil):
		r.pool.foreign.Add(1)
	case typ == envMessage:
		r.order(seq)
		r.count(payload)
	}
	return nil
}

// pusherEvent accounts for one Pusher event (called with r.tmu held): an
// app event's data is a message, counted by its payload; pusher:ping is
// answered; a pusher:error is a receiver error (counted, the first one
// kept; the connection stays, as pusher-js's does); the protocol's other
// events are not counted; what is not an event is foreign. It never stops
// the parse.
func (r *receiver) pusherEvent(b []byte) error {
	kind, data, scratch, err := decodePusherEvent(b, r.scratch)
	r.scratch = scratch
	switch {
	case err != nil:
		r.pool.foreign.Add(1)
	case kind == pusherApp:
		r.count(data)
	case kind == pusherPingKind:
		r.sendEvent(pusherPong)
	case kind == pusherError:
		r.pool.errs.Add(1)
		r.pool.firstRunErr.note(fmt.Errorf("receiver %d: pusher:error %s", r.idx+r.pool.offset, data))
	}
	return nil
}

// sendEvent writes one text message to the server (a Pusher event), unless r
// is closed.
func (r *receiver) sendEvent(msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(frame.CompileMasked(ws.OpText, msg))
}

// keepAlive does for the pool's Pusher receivers what pusher-js does: one
// that has read nothing for its server's activity_timeout sends
// pusher:ping (and waits as long again before the next). It checks every
// second, until stopPing closes. Slow receivers, which never read, send
// nothing: they do not answer a native server's pings either.
func (p *recvPool) keepAlive() {
	defer p.pinging.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var due []*receiver
	for {
		select {
		case <-p.stopPing:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		due = due[:0]
		p.mu.Lock()
		for _, r := range p.recvs {
			if !r.slow && r.activity > 0 && now-r.lastRead.Load() >= int64(r.activity) {
				due = append(due, r)
			}
		}
		p.mu.Unlock()
		for _, r := range due {
			r.lastRead.Store(now)
			r.sendEvent(pusherPing)
		}
	}
}

// order checks a message's seq (json format: the server's order, the
// same on every node of a tier) against the last one r saw: each must be
// above it. A stable receiver counts one that is not (warm-ups are
// messages too: the order is the stream's).
func (r *receiver) order(seq uint64) {
	if seq <= r.lastSeq && r.stable {
		r.pool.outOfOrder.Add(1)
	}
	r.lastSeq = max(r.lastSeq, seq)
}

// count accounts for one message's payload, as its publisher sent it.
func (r *receiver) count(p []byte) {
	track, seq, sent, ok := r.classify(p)
	if !ok || !r.stable || !r.pool.counting.Load() {
		return
	}
	for track >= len(r.tracks) {
		r.tracks = append(r.tracks, seqTrack{})
	}
	t := &r.tracks[track]
	before := t.unique
	t.see(seq)
	r.frames++
	if t.unique == before {
		return // a duplicate: its latency would count one delivery twice
	}
	r.pool.unique.Add(1)
	d := time.Duration(r.now - sent)
	r.pool.lat.Record(d)
	r.pool.tick.Record(d)
}

// classify reads a message's header: which of r.tracks it counts in (its
// publisher's; in rooms, the one of r's own messages), its sequence and
// send time. Messages that do not count are counted here instead, and ok
// is false: a warm-up, one without the bench header (foreign), in rooms
// one from another room (misrouted), and one whose other bytes are not
// what was published (corrupt: not delivered intact, so lost).
func (r *receiver) classify(p []byte) (track int, seq uint64, sent int64, ok bool) {
	warm := false
	if r.pool.rooms {
		room, q, at, err := parseRoomPayload(p)
		switch {
		case err != nil:
			r.pool.foreign.Add(1)
			return 0, 0, 0, false
		case room != r.room:
			r.pool.misrouted.Add(1)
			return 0, 0, 0, false
		}
		track, seq, sent, warm = 0, q, at, q == roomWarmSeq
	} else {
		pub, q, at, err := parsePayload(p)
		if err != nil {
			r.pool.foreign.Add(1)
			return 0, 0, 0, false
		}
		track, seq, sent, warm = int(pub), q, at, pub == warmPub
		if r.pool.cfg.Channels > 0 && !warm {
			own, spreadPub := r.pool.cfg.Publishers+int(r.spread), int(pub) >= r.pool.cfg.Publishers
			switch {
			case r.spread >= 0 && int(pub) == own:
				track = 0 // its one publisher
			case r.spread >= 0 || spreadPub:
				r.pool.misrouted.Add(1)
				return 0, 0, 0, false
			}
		}
	}
	if warm {
		if !r.warm.Load() {
			r.warm.Store(true)
			r.pool.warm.Add(1)
		}
		return 0, 0, 0, false
	}
	if h, want := payloadHeaderLen(p), r.pool.expect; len(p) != len(want) || !bytes.Equal(p[h:], want[h:]) {
		r.pool.corrupt.Add(1)
		return 0, 0, 0, false
	}
	return track, seq, sent, true
}

// Ping answers the server's ping (frame.Handler).
func (r *receiver) Ping(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(frame.CompileMasked(ws.OpPong, p))
}

// Pong ignores a pong: the bench sends no pings (frame.Handler).
func (r *receiver) Pong([]byte) {}

// flushFrames adds the messages and bytes counted since the last flush to
// the pool's, read at r.now.
func (r *receiver) flushFrames() {
	if r.wire > 0 {
		r.pool.wire.Add(r.wire)
		r.wire = 0
	}
	if r.frames == 0 {
		return
	}
	r.pool.frames.Add(r.frames)
	r.frames = 0
	// Bounded: each failed swap means another worker stored a later time.
	for last := r.pool.lastAt.Load(); r.now > last && !r.pool.lastAt.CompareAndSwap(last, r.now); {
		last = r.pool.lastAt.Load()
	}
}

// stopped ends a receiver whose stream ParseServer stopped: the server
// closed it (the close is echoed), or broke the protocol (counted).
func (r *receiver) stopped(err error) {
	if ce, ok := frame.AsClose(err); ok && ce.Peer {
		r.closed(ce.Code)
		return
	}
	r.pool.errs.Add(1)
	r.pool.firstRunErr.note(fmt.Errorf("receiver %d: %w", r.idx+r.pool.offset, err))
	r.finish(ws.StatusProtocolError)
}

func (r *receiver) closed(code ws.StatusCode) {
	r.mu.Lock()
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(frame.CloseMasked(code, ""))
	r.mu.Unlock()
	r.finish(code)
}

// finish records how the connection ended and releases it. Idempotent.
func (r *receiver) finish(code ws.StatusCode) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done, r.closeCode = true, code
	if r.watch != nil {
		r.watch.Stop()
	}
	r.nc.Close()
	r.pool.alive.Add(-1)
	r.pool.mu.Lock()
	r.pool.closes[int(code)]++
	r.pool.mu.Unlock()
}

// hangUp closes a receiver from our side (end of run, churn): with a
// close frame, or, an SSE stream, by closing the socket.
func (r *receiver) hangUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	if !r.pool.sse {
		_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = r.nc.Write(frame.CloseMasked(ws.StatusNormalClosure, ""))
	}
	r.releaseLocked()
}

// releaseLocked ends r from our side: not counted as a server close.
// r.mu must be held, and r not done.
func (r *receiver) releaseLocked() {
	r.done = true
	if r.watch != nil {
		r.watch.Stop()
	}
	r.nc.Close()
	r.pool.alive.Add(-1)
}

// readSlow lets a slow receiver read at last, to learn how the server
// treated it: the close code it sent, 1006 if it just hung up (an SSE
// stream always does: it has no close frame), or 0 if the connection is
// still open after the grace period.
func (r *receiver) readSlow(grace time.Duration) {
	_ = r.nc.SetReadDeadline(time.Now().Add(grace))
	buf := r.buf // what came with the handshake: the stream starts there
	r.buf = nil
	var err error
	if r.pool.sse {
		err = readEvents(r.nc, buf)
	} else {
		err = readFrames(r.nc, buf, frame.Parser{MaxMessage: maxServerFrame, Deflate: r.parser.Deflate}, ignoreFrames{})
	}
	var ne net.Error
	switch ce, ok := frame.AsClose(err); {
	case ok && ce.Peer:
		r.finish(ce.Code)
	case ok:
		r.finish(ws.StatusProtocolError)
	case errors.As(err, &ne) && ne.Timeout():
		// still open
	default:
		r.finish(ws.StatusAbnormalClosure)
	}
}

// readFrames reads nc, from the bytes already in buf on, with p, until
// ParseServer stops or a read fails, and returns why: a *frame.CloseError
// (the server closed, or broke the protocol) or the read error. For the
// connections that have a goroutine to block in read: publishers and, at
// the end, slow receivers.
func readFrames(nc net.Conn, buf []byte, p frame.Parser, h frame.Handler) error {
	var rerr error
	for {
		used, err := p.ParseServer(buf, h)
		buf = buf[:copy(buf, buf[used:])]
		if err != nil {
			return err
		}
		if rerr != nil {
			return rerr
		}
		// Room for the frame in progress, and for a read worth its syscall.
		buf = slices.Grow(buf, max(p.Need()-len(buf), 4<<10))
		var n int
		n, rerr = nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
	}
}

// readEvents is readFrames for an SSE stream, its events ignored: it
// returns the read error, or a *frame.CloseError (1002) for a stream that
// does not parse.
func readEvents(nc net.Conn, buf []byte) error {
	var p sseParser
	for {
		used, err := p.parse(buf, func([]byte) error { return nil })
		if err != nil {
			return &frame.CloseError{Code: ws.StatusProtocolError, Reason: err.Error()}
		}
		buf = buf[:copy(buf, buf[used:])]
		buf = slices.Grow(buf, 4<<10)
		n, rerr := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr != nil {
			return rerr
		}
	}
}

// ignoreFrames is a frame.Handler that ignores everything.
type ignoreFrames struct{}

func (ignoreFrames) Message(ws.OpCode, []byte) error { return nil }
func (ignoreFrames) Ping([]byte)                     {}
func (ignoreFrames) Pong([]byte)                     {}

// filter returns the receivers for which keep is true.
func (p *recvPool) filter(keep func(*receiver) bool) []*receiver {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*receiver
	for _, r := range p.recvs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// pubCounts is one publisher's messages as all stable receivers saw them.
type pubCounts struct {
	Unique  uint64 `json:"unique"`
	Dups    uint64 `json:"dups"`
	Reorder uint64 `json:"reorder"`
}

// snapshot collects the run's accounting over stable receivers, per
// publisher (a spread receiver's one track is its channel's publisher's).
func (p *recvPool) snapshot(publishers int) (perPub []pubCounts, stable int) {
	perPub = make([]pubCounts, publishers)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.recvs {
		if !r.stable {
			continue
		}
		stable++
		r.tmu.Lock()
		for i, t := range r.tracks {
			if r.spread >= 0 {
				i = p.cfg.Publishers + int(r.spread)
			}
			if i < publishers {
				perPub[i].Unique += t.unique
				perPub[i].Dups += t.dups
				perPub[i].Reorder += t.reorder
			}
		}
		r.tmu.Unlock()
	}
	return perPub, stable
}

func (p *recvPool) close() {
	if p.stopPing != nil {
		close(p.stopPing)
		p.pinging.Wait()
	}
	p.mu.Lock()
	recvs := append([]*receiver(nil), p.recvs...)
	p.mu.Unlock()
	for _, r := range recvs {
		r.hangUp()
	}
	for _, r := range recvs {
		if r.reading != nil {
			<-r.reading
		}
	}
	_ = p.poller.Close()
}

func (p *recvPool) closeCodes() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.closes))
	for code, n := range p.closes {
		out[fmt.Sprint(code)] = n
	}
	return out
}
