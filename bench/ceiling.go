package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/netpoll"
)

// CeilingConfig sets up a ceiling measurement.
type CeilingConfig struct {
	Conns  int // loopback connections; zero means 1000 (two fds each)
	Size   int // payload bytes per frame; zero means 64
	Rounds int // writes per connection; zero means 200
}

// CeilingResult is this machine's raw cost of delivering a frame over
// loopback: pre-encoded frames, one sender thread, no WebSocket code, the
// receiving ends drained through epoll on other threads.
type CeilingResult struct {
	Env        Env           `json:"env"`
	Conns      int           `json:"conns"`
	FrameBytes int           `json:"frame_bytes"`
	Single     time.Duration `json:"cpu_per_delivery_1_frame_per_write_ns"`
	Batched4   time.Duration `json:"cpu_per_delivery_4_frames_per_write_ns"`
	Again      uint64        `json:"eagain_retries"`
}

// Ceiling measures the raw write cost per delivery: the floor under any
// fan-out server's CPU per delivery on this machine, uncoalesced (one
// frame per write) and coalesced (four frames per write).
func Ceiling(ctx context.Context, cfg CeilingConfig) (*CeilingResult, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 1000
	}
	if cfg.Size <= 0 {
		cfg.Size = 64
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 200
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil)) // queueing on our own pool is expected
	p, err := netpoll.New(netpoll.Config{Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer p.Close()

	senders, conns, err := loopbackPairs(ln, p, cfg.Conns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	one := frame.Compile(ws.OpBinary, make([]byte, cfg.Size)) // the encoder fanout itself uses

	res := &CeilingResult{Env: ReadEnv(), Conns: cfg.Conns, FrameBytes: len(one)}
	for _, k := range []int{1, 4} {
		batch := make([]byte, 0, k*len(one))
		for i := 0; i < k; i++ {
			batch = append(batch, one...)
		}
		cpu, again, err := sendAll(ctx, senders, batch, cfg.Rounds)
		if err != nil {
			return nil, err
		}
		res.Again += again
		per := cpu / time.Duration(len(senders)*cfg.Rounds*k)
		if k == 1 {
			res.Single = per
		} else {
			res.Batched4 = per
		}
	}
	return res, nil
}

// loopbackPairs connects n client sockets to ln and returns the accepted
// ends' descriptors, to write to, and every connection, for the caller to
// close (also on error). The client ends are drained by p's workers, like
// fanout-bench's receivers.
func loopbackPairs(ln net.Listener, p *netpoll.Poller, n int) (senders []int, conns []net.Conn, err error) {
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return senders, conns, err
		}
		s, err := ln.Accept()
		if err != nil {
			c.Close()
			return senders, conns, err
		}
		conns = append(conns, c, s)
		_, fd, err := rawFD(c)
		if err != nil {
			return senders, conns, err
		}
		var w *netpoll.Watch
		buf := make([]byte, 64<<10)
		w = p.Watch(fd, func(netpoll.Event) {
			for {
				n, err := unix.Read(fd, buf)
				if n <= 0 || err != nil {
					break
				}
			}
			_ = w.ResumeRead()
		}, func(netpoll.Event) {})
		if err := w.Start(); err != nil {
			return senders, conns, err
		}
		_, sfd, err := rawFD(s)
		if err != nil {
			return senders, conns, err
		}
		senders = append(senders, sfd)
	}
	return senders, conns, nil
}

// sendAll writes b to every fd, rounds times, from one locked OS thread,
// and returns that thread's CPU time.
func sendAll(ctx context.Context, fds []int, b []byte, rounds int) (time.Duration, uint64, error) {
	type out struct {
		cpu   time.Duration
		again uint64
		err   error
	}
	done := make(chan out, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var o out
		start := threadCPU()
		for r := 0; r < rounds && ctx.Err() == nil; r++ {
			for _, fd := range fds {
				for off := 0; off < len(b); {
					n, err := unix.Write(fd, b[off:])
					if err == unix.EAGAIN || err == unix.EINTR {
						o.again++
						runtime.Gosched()
						continue
					}
					if err != nil {
						o.err = err
						done <- o
						return
					}
					off += n
				}
			}
		}
		o.cpu = threadCPU() - start
		done <- o
	}()
	o := <-done
	return o.cpu, o.again, o.err
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// rawFD returns a connection's RawConn and its descriptor (not a dup).
func rawFD(c net.Conn) (syscall.RawConn, int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, 0, fmt.Errorf("bench: %T has no fd", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, 0, err
	}
	fd := -1
	err = rc.Control(func(f uintptr) { fd = int(f) })
	return rc, fd, err
}

// WriteText prints the ceiling.
func (r *CeilingResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "raw loopback write, %d connections, %d-byte frames, one sender thread:\n", r.Conns, r.FrameBytes)
	fmt.Fprintf(w, "  1 frame per write:  %.2f µs CPU per delivery\n", float64(r.Single)/1e3)
	fmt.Fprintf(w, "  4 frames per write: %.2f µs CPU per delivery\n", float64(r.Batched4)/1e3)
	fmt.Fprintf(w, "  (EAGAIN retries: %d)\n", r.Again)
}
