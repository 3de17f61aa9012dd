package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// publisher is one publishing connection. It also reads: the server sends
// every message back to it (the sender is a client like any other), which
// closes the loop for Rate 0 and keeps it from being a slow consumer.
type publisher struct {
	id   uint16
	cfg  Config
	nc   net.Conn
	br   *bufio.Reader
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
	p.br = bufio.NewReaderSize(io.MultiReader(bytesReader(extra), nc), 64<<10)
	go p.read()
	return p, nil
}

type byteSliceReader struct{ b []byte }

func (r *byteSliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteSliceReader{b} }

// read drains the publisher's own incoming stream.
func (p *publisher) read() {
	defer close(p.done)
	buf := make([]byte, 0, 4096)
	for {
		h, err := ws.ReadHeader(p.br)
		if err != nil {
			p.err = err
			return
		}
		if h.Length > maxServerFrame {
			p.err = errors.New("bench: oversized frame")
			return
		}
		buf = append(buf[:0], make([]byte, h.Length)...)
		if _, err := io.ReadFull(p.br, buf); err != nil {
			p.err = err
			return
		}
		switch h.OpCode {
		case ws.OpPing:
			p.write(clientFrame(ws.OpPong, buf))
		case ws.OpClose:
			p.write(clientFrame(ws.OpClose, buf))
			p.err = errors.New("bench: server closed a publisher")
			return
		case ws.OpBinary, ws.OpText:
			if pub, _, _, err := parsePayload(buf); err == nil && pub == p.id && p.cfg.Rate == 0 {
				select {
				case p.acks <- struct{}{}:
				default:
				}
			}
		}
	}
}

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
			if err := p.write(clientFrame(ws.OpBinary, payload)); err != nil {
				return err
			}
			p.sent.Add(1)
			inflight++
		}
		return nil
	}
	perPub := p.cfg.Rate / float64(p.cfg.Publishers)
	interval := time.Duration(float64(time.Second) / perPub)
	var batch []byte
	seq := uint64(0)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !over(seq) {
		due := uint64(time.Since(t0)/interval) + 1
		batch = batch[:0]
		for ; seq < due && !(limit > 0 && seq >= limit); seq++ {
			putPayload(payload, p.id, seq, t0.Add(time.Duration(seq)*interval).UnixNano())
			batch = append(batch, clientFrame(ws.OpBinary, payload)...)
		}
		if len(batch) > 0 {
			if err := p.write(batch); err != nil {
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
	_ = p.write(clientFrame(ws.OpClose, closeFrameBody(ws.StatusNormalClosure, "")))
	_ = p.nc.Close()
	<-p.done
}
