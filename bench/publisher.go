package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// publisher is one publisher. It holds a WebSocket connection and reads on
// it: the server sends every message back to it (the sender is a client
// like any other), which closes the loop for Rate 0 and keeps it from
// being a slow consumer. Its messages go out on that connection as
// frames, or, with Config.PublishURL, as POSTs to the publish API (api).
type publisher struct {
	id      uint16
	cfg     Config // the run's, or its spread channel's (Config.channelPublisher)
	nc      net.Conn
	api     *apiClient    // nil: messages go out as frames on nc
	postURL string        // with api: where its POSTs go
	offset  time.Duration // at a fixed Rate: its messages are scheduled this much after the run's
	wmu     sync.Mutex
	sent    atomic.Uint64 // messages the server took, in order: seq 0 … sent-1
	// acks carries one token per own message seen back (Rate 0 only).
	acks chan struct{}
	// Pusher (Config.Protocol): the server's activity_timeout (0: not
	// Pusher), when the read goroutine last read (unix ns), and its
	// buffer for events' decoded data.
	activity time.Duration
	lastRead atomic.Int64
	scratch  []byte
	timeouts atomic.Uint64 // window slots given up on (own message never seen back)
	done     chan struct{}
	err      error

	// Owned by run (and warmUp, before run starts).
	payload   []byte // one message, refilled for each (newPayload)
	out       []byte // one write's frames, or one request's body
	key       []byte // with IdempotencyKeys: the key of one request, from its prefix (keyPrefix bytes) on
	keyPrefix int
}

// connectPublisher connects publisher i (its id), publishing as cfg says
// (on cfg.Channel), through api if set. Its connection's source address
// and server are those of connection 1,000,000+i, apart from the
// receivers'.
func connectPublisher(ctx context.Context, cfg Config, i int, api *apiClient) (*publisher, error) {
	conn := 1_000_000 + i
	var (
		nc    net.Conn
		extra []byte
		s     pusherSession
		err   error
	)
	if cfg.Protocol == ProtocolPusher {
		nc, extra, _, s, err = dialPusher(ctx, cfg, conn, cfg.Channel, false)
	} else {
		nc, extra, _, err = dial(ctx, cfg, conn, cfg.urlFor(conn, cfg.Channel), false)
	}
	if err != nil {
		return nil, err
	}
	p := &publisher{id: uint16(i), cfg: cfg, nc: nc, api: api, acks: make(chan struct{}, cfg.Window+1),
		done: make(chan struct{}), payload: newPayload(cfg), activity: s.activity}
	if api != nil {
		p.postURL = cfg.publishURLFor(i, cfg.Channel)
	}
	if api != nil && cfg.IdempotencyKeys {
		p.key = fmt.Appendf(nil, "%s-%d-", api.run, i) // RUN-PUBLISHER-SEQ
		p.keyPrefix = len(p.key)
	}
	go p.read(append(make([]byte, 0, 64<<10), extra...))
	if p.activity > 0 {
		p.lastRead.Store(time.Now().UnixNano())
		go p.keepAlive()
	}
	return p, nil
}

// keepAlive sends pusher:ping when the publisher has read nothing for
// the server's activity_timeout, as pusher-js does, until its stream ends.
func (p *publisher) keepAlive() {
	t := time.NewTicker(max(p.activity/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		if now := time.Now().UnixNano(); now-p.lastRead.Load() >= int64(p.activity) {
			p.lastRead.Store(now)
			_ = p.write(frame.CompileMasked(ws.OpText, pusherPing))
		}
	}
}

// interval is the time between two of the publisher's messages at a
// fixed Rate (0 at Rate max).
func (p *publisher) interval() time.Duration {
	if p.cfg.Rate == 0 {
		return 0
	}
	return time.Duration(float64(time.Second) / (p.cfg.Rate / float64(p.cfg.Publishers)))
}

// read drains the publisher's own incoming stream, from the bytes that
// came with the handshake on.
func (p *publisher) read(buf []byte) {
	defer close(p.done)
	err := readFrames(p.nc, buf, frame.Parser{MaxMessage: maxServerFrame}, p)
	if ce, ok := frame.AsClose(err); ok && ce.Peer {
		_ = p.write(frame.CloseMasked(ce.Code, ce.Reason))
		err = errors.New("bench: server closed a publisher")
	}
	p.err = err
}

// Message takes one own message seen back as an ack (Rate 0 only); the
// rest of the stream only needs draining, but for a Pusher server's
// pusher:ping, answered (frame.Handler).
func (p *publisher) Message(_ ws.OpCode, b []byte) error {
	if p.activity > 0 { // a Pusher event: its data, if an app event's
		p.lastRead.Store(time.Now().UnixNano())
		kind, data, scratch, err := decodePusherEvent(b, p.scratch)
		p.scratch = scratch
		switch {
		case err == nil && kind == pusherPingKind:
			_ = p.write(frame.CompileMasked(ws.OpText, pusherPong))
			return nil
		case err != nil || kind != pusherApp:
			return nil
		}
		b = data
	}
	if pub, _, _, err := parsePayload(b); err == nil && pub == p.id && p.cfg.Rate == 0 {
		select {
		case p.acks <- struct{}{}:
		default: // a full window has one token per slot already
		}
	}
	return nil
}

// Ping answers the server's ping (frame.Handler).
func (p *publisher) Ping(b []byte) { _ = p.write(frame.CompileMasked(ws.OpPong, b)) }

// Pong ignores a pong: the bench sends no pings (frame.Handler).
func (p *publisher) Pong([]byte) {}

func (p *publisher) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := p.nc.Write(b)
	return err
}

// run publishes until Duration passes, Messages are sent or ctx ends.
// At a fixed rate, each message carries its scheduled send time, not the
// time it actually left: a publisher that falls behind shows up as
// latency instead of hiding it (no coordinated omission).
func (p *publisher) run(ctx context.Context, t0 time.Time) error {
	if p.cfg.Rate == 0 {
		return p.runClosed(ctx, t0)
	}
	return p.runRate(ctx, t0)
}

// over reports whether the publisher is done at sequence seq.
func (p *publisher) over(ctx context.Context, t0 time.Time, seq uint64) bool {
	limit := uint64(p.cfg.Messages)
	return ctx.Err() != nil || (limit > 0 && seq >= limit) || time.Since(t0) >= p.cfg.Duration
}

// runClosed is Rate 0: Window messages in flight, a slot freed by each own
// message seen back (or given up on after a second). Frames go one per
// write; through the publish API, a request carries as many messages as
// the window has room for, up to PublishBatch.
func (p *publisher) runClosed(ctx context.Context, t0 time.Time) error {
	deadline := t0.Add(p.cfg.Duration)
	inflight := 0
	for seq := uint64(0); !p.over(ctx, t0, seq); {
		for inflight >= p.cfg.Window {
			select {
			case <-p.acks:
				inflight--
			case <-time.After(time.Second):
				p.timeouts.Add(1) // lost or very late: free the slot
				inflight--
			case <-p.done:
				return p.err
			}
		}
		n := 1
		if p.cfg.PublishBatch > 1 {
		free:
			for inflight > 0 {
				select {
				case <-p.acks:
					inflight--
				default:
					break free
				}
			}
			n = min(p.cfg.Window-inflight, p.cfg.PublishBatch)
		}
		if limit := uint64(p.cfg.Messages); limit > 0 {
			n = int(min(uint64(n), limit-seq))
		}
		now := time.Now().UnixNano()
		got, err := p.send(ctx, seq, n, func(uint64) int64 { return now }, deadline)
		seq += uint64(got)
		p.sent.Add(uint64(got))
		inflight += got
		if err != nil {
			return err
		}
	}
	return nil
}

// runRate is a fixed Rate: what is due goes out (in one write, or in
// requests of up to PublishBatch messages), then the publisher sleeps
// until its next message is due, a millisecond at least (faster rates go
// in batches of what a millisecond makes due). Not a millisecond ticker:
// a thousand publishers (one a channel, Config.Channels) would wake a
// million times a second on the cores the server runs on.
func (p *publisher) runRate(ctx context.Context, t0 time.Time) error {
	deadline := t0.Add(p.cfg.Duration)
	interval := p.interval()
	first := t0.Add(p.offset)
	scheduled := func(seq uint64) int64 { return first.Add(time.Duration(seq) * interval).UnixNano() }
	limit := uint64(p.cfg.Messages)
	seq := uint64(0)
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	for !p.over(ctx, t0, seq) {
		var due uint64
		if since := time.Since(first); since >= 0 {
			due = uint64(since/interval) + 1
		}
		if limit > 0 {
			due = min(due, limit)
		}
		if due > seq {
			got, err := p.send(ctx, seq, int(due-seq), scheduled, deadline)
			seq += uint64(got)
			p.sent.Add(uint64(got))
			if err != nil {
				return err
			}
		}
		next := time.Until(time.Unix(0, scheduled(seq)))
		wait.Reset(max(min(next, time.Until(deadline)), time.Millisecond))
		select {
		case <-wait.C:
		case <-ctx.Done():
		case <-p.done:
			return p.err
		}
	}
	// A publisher woken late for its last message, due just before the
	// deadline (a channel's publisher starts up to an interval late, see
	// connectPublishers), still sends it; one further behind stops at the deadline and
	// is reported behind.
	if ctx.Err() == nil && (limit == 0 || seq < limit) && time.Unix(0, scheduled(seq)).Before(deadline) && !time.Unix(0, scheduled(seq+1)).Before(deadline) {
		got, err := p.send(ctx, seq, 1, scheduled, deadline.Add(time.Second))
		p.sent.Add(uint64(got))
		return err
	}
	return nil
}

// due is what the publisher's share of a fixed Rate calls for over the
// run: Duration at its rate, or Messages if fewer. 0 at Rate max. runRate
// sends one more when it keeps up (the first is due at once).
func (p *publisher) due() uint64 {
	if p.cfg.Rate == 0 {
		return 0
	}
	n := uint64(p.cfg.Duration.Seconds() * p.cfg.Rate / float64(p.cfg.Publishers))
	if limit := uint64(p.cfg.Messages); limit > 0 {
		n = min(n, limit)
	}
	return n
}

// behind is how many of due messages a publisher that sent sent did not
// send, if more than 1 % of them (at least one; see PublisherStats).
func behind(due, sent uint64) uint64 {
	if slack := max(1, due/100); sent+slack <= due {
		return due - sent
	}
	return 0
}

// send publishes messages seq … seq+n-1, message q sent at at(q): as
// frames in one write, or through the publish API in requests of up to
// PublishBatch messages. A request the server refuses for now (503) is
// sent again from its first unpublished message after the server's
// Retry-After, unless that would pass deadline; no request starts after
// it. It returns how many were published, which are the first ones, in
// order.
func (p *publisher) send(ctx context.Context, seq uint64, n int, at func(uint64) int64, deadline time.Time) (int, error) {
	if p.api == nil {
		op := p.cfg.messageOp()
		p.out = p.out[:0]
		for q := seq; q < seq+uint64(n); q++ {
			putMessage(p.cfg, p.payload, p.id, q, at(q))
			p.out = frame.AppendMasked(p.out, op, p.payload, ws.NewMask())
		}
		if err := p.write(p.out); err != nil {
			return 0, err
		}
		return n, nil
	}
	done := 0
	for done < n {
		if done > 0 && time.Now().After(deadline) {
			return done, nil // a publisher far behind its rate stops with the run, not after what was due
		}
		k := min(n-done, p.cfg.PublishBatch)
		p.out = p.body(p.out[:0], seq+uint64(done), k, at)
		var key []byte
		if p.cfg.IdempotencyKeys { // one message per request
			p.key = strconv.AppendUint(p.key[:p.keyPrefix], seq+uint64(done), 10)
			key = p.key
		}
		got, wait, err := p.api.post(ctx, p.postURL, p.out, k, p.cfg.PublishBatch > 1, key)
		done += got
		if err != nil {
			return done, err
		}
		if got == k {
			continue
		}
		if time.Now().Add(wait).After(deadline) {
			return done, nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return done, nil
		case <-p.done:
			return done, p.err
		}
	}
	return done, nil
}

// body appends the body of one request carrying messages seq … seq+n-1 to
// dst: the message itself when requests carry one, else one text message
// per line (NDJSON); for the Pusher HTTP API, the event whose data it is.
func (p *publisher) body(dst []byte, seq uint64, n int, at func(uint64) int64) []byte {
	for q := seq; q < seq+uint64(n); q++ {
		putMessage(p.cfg, p.payload, p.id, q, at(q))
		if p.cfg.Protocol == ProtocolPusher { // one event, its data the message (fillPusher: no batches)
			dst = appendPusherEvent(dst, p.cfg.PusherEvent, p.cfg.Channel, p.payload)
			continue
		}
		dst = append(dst, p.payload...)
		if p.cfg.PublishBatch > 1 {
			dst = append(dst, '\n')
		}
	}
	return dst
}

// warm publishes one uncounted warm-up message (payload, from putMessage
// with warmPub) the way the publisher publishes: as a frame, or alone in
// a POST. A refused warm-up is not an error: the next one will do.
func (p *publisher) warm(ctx context.Context, payload []byte) error {
	if p.api == nil {
		return p.write(frame.CompileMasked(p.cfg.messageOp(), payload))
	}
	body := payload
	if p.cfg.Protocol == ProtocolPusher {
		body = appendPusherEvent(nil, p.cfg.PusherEvent, p.cfg.Channel, payload)
	}
	_, _, err := p.api.post(ctx, p.postURL, body, 1, false, nil)
	return err
}

func (p *publisher) close() {
	_ = p.write(frame.CloseMasked(ws.StatusNormalClosure, ""))
	_ = p.nc.Close()
	<-p.done
}
