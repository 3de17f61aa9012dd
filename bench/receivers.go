package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/netpoll"
)

// receiver is one client connection that only reads. While idle it owns no
// goroutine and no buffer: netpoll tells a worker when it has bytes.
type receiver struct {
	pool   *recvPool
	idx    int
	nc     net.Conn
	rc     syscall.RawConn
	watch  *netpoll.Watch
	slow   bool // never reads (scenario slow)
	churn  bool // may be replaced (scenario churn): not counted for loss
	stable bool // connected at the start and counted for loss

	// Read side: touched only by the worker holding the read event.
	buf    []byte
	tracks []seqTrack
	now    int64
	frames uint64
	rdst   []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

	tmu  sync.Mutex // held by the read worker while parsing; guards tracks for snapshot
	warm bool       // read worker only: a warm-up message arrived

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
	unique    atomic.Uint64
	foreign   atomic.Uint64 // messages without the bench header
	errs      atomic.Uint64
	alive     atomic.Int64
	warm      atomic.Int64 // receivers that have seen a warm-up message
	counting  atomic.Bool  // receivers record latency only once publishing started

	attempted, connected, failed, retries atomic.Uint64

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
	return &recvPool{cfg: cfg, poller: p, offset: offset, closes: make(map[int]int64)}, nil
}

// dial opens and upgrades one client connection, bound to the idx-th
// source address. It returns bytes the server sent right after the
// handshake, if any.
func dial(ctx context.Context, cfg Config, idx int) (net.Conn, []byte, error) {
	var laddr *net.TCPAddr
	if n := len(cfg.SourceIPs); n > 0 {
		laddr = &net.TCPAddr{IP: cfg.SourceIPs[idx%n]}
	}
	d := ws.Dialer{
		Timeout: cfg.ConnectTimeout,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: laddr}
			return nd.DialContext(ctx, network, addr)
		},
	}
	nc, br, _, err := d.Dial(ctx, cfg.urlFor(idx))
	if err != nil {
		return nil, nil, err
	}
	var extra []byte
	if br != nil {
		extra = make([]byte, br.Buffered())
		_, _ = io.ReadFull(br, extra)
		ws.PutReader(br)
	}
	return nc, extra, nil
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
				r := &receiver{pool: p, idx: i}
				r.slow = slowEvery > 0 && i%slowEvery == slowEvery-1
				r.churn = churnEvery > 0 && i%churnEvery == churnEvery-1
				r.stable = !r.slow && !r.churn
				if p.open(ctx, r) == nil {
					p.mu.Lock()
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
		r.nc, extra, err = dial(ctx, p.cfg, r.idx+p.offset)
		if err != nil {
			continue
		}
		p.handshake.Record(time.Since(start))
		if err = r.start(extra); err != nil {
			r.nc.Close()
			continue
		}
		p.connected.Add(1)
		p.alive.Add(1)
		return nil
	}
	p.failed.Add(1)
	return err
}

func (r *receiver) start(extra []byte) error {
	rc, fd, err := rawFD(r.nc)
	if err != nil {
		return err
	}
	r.rc = rc
	r.readFn = r.rawRead
	r.done, r.closeCode = false, 0
	if len(extra) > 0 {
		r.buf = append(r.buf[:0], extra...)
	}
	if r.slow {
		return nil // a slow receiver never reads
	}
	r.watch = r.pool.poller.Watch(fd, r.onRead, func(netpoll.Event) {})
	return r.watch.Start()
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
		r.buf = r.buf[:len(r.buf)+r.rn]
		r.tmu.Lock()
		used, stop, perr := parseServerFrames(r.buf, r)
		r.tmu.Unlock()
		r.buf = r.buf[:copy(r.buf, r.buf[used:])]
		if perr != nil {
			r.pool.errs.Add(1)
			r.finish(ws.StatusProtocolError)
			return
		}
		if stop {
			return
		}
	}
	if len(r.buf) == 0 {
		r.buf = nil // an idle receiver keeps no buffer
	}
	if r.frames > 0 {
		r.pool.frames.Add(r.frames)
		r.frames = 0
	}
	if r.watch.ResumeRead() != nil {
		r.finish(ws.StatusAbnormalClosure)
	}
}

func (r *receiver) data(_ ws.OpCode, p []byte) {
	pub, seq, sent, err := parsePayload(p)
	if err != nil {
		r.pool.foreign.Add(1)
		return
	}
	if pub == warmPub {
		if !r.warm {
			r.warm = true
			r.pool.warm.Add(1)
		}
		return
	}
	if !r.stable || !r.pool.counting.Load() {
		return
	}
	for int(pub) >= len(r.tracks) {
		r.tracks = append(r.tracks, seqTrack{})
	}
	t := &r.tracks[pub]
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

func (r *receiver) ping(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(clientFrame(ws.OpPong, p))
}

func (r *receiver) closed(code ws.StatusCode) {
	r.mu.Lock()
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(clientFrame(ws.OpClose, closeFrameBody(code, "")))
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

// hangUp closes a receiver from our side (end of run, churn).
func (r *receiver) hangUp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true // ours: not counted as a server close
	_ = r.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = r.nc.Write(clientFrame(ws.OpClose, closeFrameBody(ws.StatusNormalClosure, "")))
	if r.watch != nil {
		r.watch.Stop()
	}
	r.nc.Close()
	r.pool.alive.Add(-1)
}

// readSlow lets a slow receiver read at last, to learn how the server
// treated it: the close code it sent, 1006 if it just hung up, or 0 if the
// connection is still open after the grace period.
func (r *receiver) readSlow(grace time.Duration) {
	_ = r.nc.SetReadDeadline(time.Now().Add(grace))
	br := bufio.NewReader(r.nc)
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // still open
			}
			r.finish(ws.StatusAbnormalClosure)
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			r.finish(ws.StatusAbnormalClosure)
			return
		}
		if h.OpCode == ws.OpClose {
			code := ws.StatusNoStatusRcvd
			if len(p) >= 2 {
				code, _ = ws.ParseCloseFrameData(p)
			}
			r.finish(code)
			return
		}
	}
}

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
// publisher.
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
	p.mu.Lock()
	recvs := append([]*receiver(nil), p.recvs...)
	p.mu.Unlock()
	for _, r := range recvs {
		r.hangUp()
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
