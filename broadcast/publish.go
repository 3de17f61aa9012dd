package broadcast

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/hub"
)

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
	// ErrBus wraps a bus's refusal (its buffer is full, it is closed).
	ErrBus = errors.New("broadcast: bus refused the message")
)

// Publish is how a backend publishes: it validates the message, then
// routes it like a client's (see the package doc). op is ws.OpText or
// ws.OpBinary. It returns the number of connections open at this moment,
// which the message is queued for. It fails with ErrTooBig,
// ErrInvalidUTF8, ErrBacklog, ErrServerClosed or ErrBus, and never blocks.
func (s *Server) Publish(op ws.OpCode, payload []byte) (recipients int, err error) {
	switch {
	case op != ws.OpText && op != ws.OpBinary:
		return 0, errors.New("broadcast: publish: opcode must be text or binary")
	case len(payload) > s.cfg.MaxMessage:
		return 0, ErrTooBig
	case op == ws.OpText && !utf8.Valid(payload):
		return 0, ErrInvalidUTF8
	}
	return s.route(op, payload)
}

// Bus carries messages between fanout nodes (see package bus). With one
// set, every message the server would fan out goes to the bus instead,
// and comes back to every node, this one included, through Deliver.
type Bus interface {
	Publish(op ws.OpCode, payload []byte) error
}

// SetBus joins the server to a bus. Call it before Serve.
func (s *Server) SetBus(b Bus) { s.bus = b }

// Deliver fans out a message the bus brings, to this node's clients.
func (s *Server) Deliver(op ws.OpCode, payload []byte) (int, error) {
	n, err := s.fanOut(op, payload)
	if err != nil {
		s.logRefused.Warn(s.log, "bus message refused locally", "err", err)
	}
	return n, err
}

// route sends a validated message to the bus when the node is in a tier,
// and fans it out here otherwise.
func (s *Server) route(op ws.OpCode, payload []byte) (int, error) {
	if s.bus == nil {
		return s.fanOut(op, payload)
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

// fanOut encodes the message once and broadcasts it through the hub.
func (s *Server) fanOut(op ws.OpCode, payload []byte) (int, error) {
	if _, err := s.hub.Broadcast(hub.NewMessage(op, payload)); err != nil {
		s.refused.Add(1)
		if errors.Is(err, hub.ErrBacklog) {
			return 0, ErrBacklog
		}
		return 0, ErrServerClosed
	}
	return s.Conns(), nil
}
