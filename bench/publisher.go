package bench

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// publisher is one publishing connection. It also reads: the server sends
// every message back to it (the sender is a client like any other), which
// closes the loop for Rate 0 and keeps it from being a slow consumer.
type publisher struct {
	id   uint16
	cfg  Config
	nc   net.Conn
	wmu  sync.Mutex
	sent atomic.Uint64
	// acks carries one token per own message seen back (Rate 0 only).
	acks     chan struct{}
	timeouts atomic.Uint64 // window slots given up on (own message never seen back)
	done     chan struct{}
	err      error
}

func connectPublisher(ctx context.Context, cfg Config, id int) (*publisher, error) {
	nc, extra, err := dial(ctx, cfg, id)
	if err != nil {
		return nil, err
	}
	p := &publisher{id: uint16(id), cfg: cfg, nc: nc, acks: make(chan struct{}, cfg.Window+1), done: make(chan struct{})}
	go p.read(append(make([]byte, 0, 64<<10), extra...))
	return p, nil
}

// read drains the publisher's own incoming stream, from the bytes that
// came with the handshake on.
func (p *publisher) read(buf []byte) {
	defer close(p.done)
	err := readFrames(p.nc, buf, p)
	if ce, ok := frame.AsClose(err); ok && ce.Peer {
		_ = p.write(frame.CloseMasked(ce.Code, ce.Reason))
		err = errors.New("bench: server closed a publisher")
	}
	p.err = err
}

// Message takes one own message seen back as an ack (Rate 0 only); the
// rest of the stream only needs draining (frame.Handler).
func (p *publisher) Message(_ ws.OpCode, b []byte) error {
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
	payload := make([]byte, p.cfg.Size)
	for i := payloadHeader; i < len(payload); i++ {
		payload[i] = 'x'
	}
	limit := uint64(p.cfg.Messages)
	over := func(seq uint64) bool {
		return ctx.Err() != nil || (limit > 0 && seq >= limit) || time.Since(t0) >= p.cfg.Duration
	}
	var out []byte // the frames of one write, masked into the same buffer each time
	if p.cfg.Rate == 0 {
		inflight := 0
		for seq := uint64(0); !over(seq); seq++ {
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
			putPayload(payload, p.id, seq, time.Now().UnixNano())
			out = frame.AppendMasked(out[:0], ws.OpBinary, payload, ws.NewMask())
			if err := p.write(out); err != nil {
				return err
			}
			p.sent.Add(1)
			inflight++
		}
		return nil
	}
	perPub := p.cfg.Rate / float64(p.cfg.Publishers)
	interval := time.Duration(float64(time.Second) / perPub)
	seq := uint64(0)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !over(seq) {
		due := uint64(time.Since(t0)/interval) + 1
		out = out[:0]
		for ; seq < due && !(limit > 0 && seq >= limit); seq++ {
			putPayload(payload, p.id, seq, t0.Add(time.Duration(seq)*interval).UnixNano())
			out = frame.AppendMasked(out, ws.OpBinary, payload, ws.NewMask())
		}
		if len(out) > 0 {
			if err := p.write(out); err != nil {
				return err
			}
			p.sent.Store(seq)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		case <-p.done:
			return p.err
		}
	}
	return nil
}

func (p *publisher) close() {
	_ = p.write(frame.CloseMasked(ws.StatusNormalClosure, ""))
	_ = p.nc.Close()
	<-p.done
}
