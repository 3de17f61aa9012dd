package broadcast

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/frame"
)

// Publish sends a message to every connected client. op is ws.OpText or
// ws.OpBinary. It returns the number of connections the message was
// queued for (those open at this moment). It fails with ErrTooBig,
// ErrInvalidUTF8, ErrBacklog or ErrServerClosed, and never blocks.
func (s *Server) Publish(op ws.OpCode, payload []byte) (recipients int, err error) {
	switch {
	case op != ws.OpText && op != ws.OpBinary:
		return 0, errors.New("broadcast: publish: opcode must be text or binary")
	case len(payload) > s.cfg.MaxMessage:
		return 0, ErrTooBig
	case op == ws.OpText && !utf8.Valid(payload):
		return 0, ErrInvalidUTF8
	}
	return s.publish(op, payload)
}

// Bus carries messages between fanout nodes (see package bus). With one
// set, every message the server would broadcast goes to the bus instead,
// and comes back to every node, this one included, through Deliver.
type Bus interface {
	Publish(op ws.OpCode, payload []byte) error
}

// ErrBus wraps a bus's refusal (its buffer is full, it is closed).
var ErrBus = errors.New("broadcast: bus refused the message")

// SetBus joins the server to a bus. Call it before Serve.
func (s *Server) SetBus(b Bus) { s.bus = b }

// Deliver broadcasts a message from the bus to this node's clients.
func (s *Server) Deliver(op ws.OpCode, payload []byte) (int, error) {
	n, err := s.broadcastLocal(op, payload)
	if err != nil {
		s.logRefused.warn(s.log, "bus message refused locally", "err", err)
	}
	return n, err
}

// publish hands a message to the bus, or broadcasts it here.
func (s *Server) publish(op ws.OpCode, payload []byte) (int, error) {
	if s.bus == nil {
		return s.broadcastLocal(op, payload)
	}
	if s.closing.Load() {
		s.refused.Add(1)
		return 0, ErrServerClosed
	}
	if err := s.bus.Publish(op, payload); err != nil {
		s.refused.Add(1)
		return 0, fmt.Errorf("%w: %w", ErrBus, err)
	}
	return s.Conns(), nil
}

// broadcastLocal encodes the message once and hands the frame to the hub.
func (s *Server) broadcastLocal(op ws.OpCode, payload []byte) (int, error) {
	if err := s.hub.publish(frame.Compile(op, payload)); err != nil {
		s.refused.Add(1)
		return 0, err
	}
	s.published.Add(1)
	return s.Conns(), nil
}

// Conns returns the number of open connections.
func (s *Server) Conns() int {
	n := 0
	for _, sh := range s.hub.shards {
		n += int(sh.count.Load())
	}
	return n
}

// tick asks every shard to sweep (idle timeouts, pings, lingering closes).
func (s *Server) tick() {
	defer close(s.tickerDone)
	every := s.cfg.sweepEvery()
	t := time.NewTicker(every)
	defer t.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-s.stopTicker:
			return
		case now := <-t.C:
			ping := s.cfg.PingInterval > 0 && now.Sub(lastPing) >= s.cfg.PingInterval
			if ping {
				lastPing = now
			}
			for _, sh := range s.hub.shards {
				if ping {
					sh.pingDue.Store(true)
				}
				sh.sweepDue.Store(true)
				sh.notify()
			}
		}
	}
}

// Shutdown stops accepting, refuses new publishes, lets every shard send
// what was already published, then closes every client with 1001 and
// waits for them to go. If ctx ends first, the rest are torn down at once
// and ctx.Err() is returned. Calling it again returns the first result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Do(func() { s.shutdownErr = s.doShutdown(ctx) })
	return s.shutdownErr
}

// Close is Shutdown without the wait: close frames are sent if the
// sockets take them, then everything is torn down.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Server) doShutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	s.hub.close()
	for _, sh := range s.hub.shards {
		sh.draining.Store(true)
		sh.notify()
	}
	var err error
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for s.conns.Load() > 0 || s.handshaking.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-poll.C:
			continue
		}
		break
	}
	if err != nil {
		for _, sh := range s.hub.shards {
			sh.forcing.Store(true)
			sh.notify()
		}
		// Teardown is immediate; only handshakes may still take until
		// their deadline.
		for s.conns.Load() > 0 {
			<-poll.C
		}
	}
	s.hsWG.Wait()
	close(s.stopTicker)
	<-s.tickerDone
	for _, sh := range s.hub.shards {
		close(sh.stop)
	}
	s.shardWG.Wait()
	_ = s.poller.Close()
	s.log.Info("broadcast: shut down", "accepted", s.accepted.Load(), "forced", err != nil)
	return err
}

// connClosed accounts for a torn-down connection.
func (s *Server) connClosed(c *conn, reason CloseReason, err error) {
	// Count the reason before the connection stops counting as open:
	// whoever waits for the open count to drop (Shutdown) sees it.
	s.closes[reason].Add(1)
	s.conns.Add(-1)
	if err != nil && reason != ReasonClientGone {
		s.log.Debug("connection closed", "conn", c.id, "reason", reason.String(), "err", err)
	}
}

// closeFrame returns a compiled close frame, shared when it is a common one.
func (s *Server) closeFrame(code ws.StatusCode, text string) []byte {
	if f, ok := s.cfs[closeKey{code, text}]; ok {
		return f
	}
	return frame.Close(code, text)
}

func (s *Server) getBuf() []byte {
	select {
	case b := <-s.bufs:
		return b
	default:
		return make([]byte, 0, s.cfg.ReadBufferSize)
	}
}

// putBuf keeps a standard-size buffer for the next read; grown ones go to
// the garbage collector.
func (s *Server) putBuf(b []byte) {
	if cap(b) != s.cfg.ReadBufferSize {
		return
	}
	select {
	case s.bufs <- b[:0]:
	default:
	}
}

func (s *Server) getIov() *[]unix.Iovec  { return s.iovs.Get().(*[]unix.Iovec) }
func (s *Server) putIov(v *[]unix.Iovec) { s.iovs.Put(v) }
