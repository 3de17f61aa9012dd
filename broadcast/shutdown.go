package broadcast

import (
	"context"
	"errors"
	"time"
)

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
	s.stopListening()
	s.hub.Drain()
	err := s.waitGone(ctx)
	if err != nil {
		s.hub.Force()
		// Teardown is immediate, and handshakes in progress are cut
		// short: Shutdown returns soon after ctx ends, not a handshake
		// timeout later.
		s.abortHandshakes()
		_ = s.waitGone(context.Background())
	}
	s.hsWG.Wait()
	if s.pusher != nil {
		// Its webhooks (channel_vacated, member_removed of the clients
		// just gone) get what is left of the deadline, a second at least.
		deadline, ok := ctx.Deadline()
		if !ok || time.Until(deadline) < time.Second {
			deadline = time.Now().Add(time.Second)
		}
		s.pusher.Close(deadline)
	}
	s.hub.Stop()
	_ = s.poller.Close()
	s.log.Info("broadcast: shut down", "accepted", s.accepted.Load(), "forced", err != nil)
	return err
}

// stopListening closes every listener; Serve returns ErrServerClosed.
func (s *Server) stopListening() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	for ln := range s.listeners {
		_ = ln.Close()
	}
}

// waitGone waits until no connection and no handshake is left, or ctx
// ends. It polls: the counts are atomics that many goroutines change.
func (s *Server) waitGone(ctx context.Context) error {
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for s.admit.Admitted() > 0 || s.admit.Handshaking() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-poll.C:
		}
	}
	return nil
}
