package broadcast

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

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
	// ErrInvalidJSON: a JSON message that is not valid JSON.
	ErrInvalidJSON = errors.New("broadcast: JSON message is not valid JSON")
	// ErrChannel wraps what is wrong with a channel name.
	ErrChannel = hub.ErrChannelName
	// ErrBus wraps a bus's refusal (its buffer is full, it is closed).
	ErrBus = errors.New("broadcast: bus refused the message")
)

// Kind is what a message's payload is: text, binary or JSON.
type Kind = hub.Kind

// Message kinds.
const (
	KindText   = hub.KindText   // UTF-8: a text frame; a JSON string in the envelope
	KindBinary = hub.KindBinary // bytes: a binary frame; "data_base64" in the envelope
	KindJSON   = hub.KindJSON   // a JSON value: a text frame; itself as "data" in the envelope
)

// Message is one message to publish.
type Message struct {
	// Channel is where it goes; "" is the default channel (clients that
	// name none).
	Channel string
	Kind    Kind
	// Payload is the message. Publish does not keep it: it is copied
	// into the message's frame (or the bus's buffer).
	Payload []byte
	// IdempotencyKey, if set, makes a repeat of the same key within
	// Config.IdempotencyWindow return the first publish's Receipt and
	// deliver nothing again.
	IdempotencyKey string
}

// Receipt is what a publish did.
type Receipt struct {
	Channel string
	// Seq is the message's place in the node's order (0 in a tier: the
	// bus gives it one on each node).
	Seq   uint64
	Epoch string
	// Recipients is the number of subscribers on the channel at this
	// moment, which the message is queued for.
	Recipients int
	// Repeat: an earlier publish with the same IdempotencyKey made this
	// Receipt; nothing was published this time.
	Repeat bool
}

// Publish is how a backend publishes: it validates the message, then
// routes it like a client's (see the package doc). It fails with
// ErrTooBig, ErrInvalidUTF8, ErrInvalidJSON, ErrChannel, ErrBacklog,
// ErrServerClosed or ErrBus, and never blocks (a repeat of an
// IdempotencyKey still in progress waits for its first publish).
func (s *Server) Publish(m Message) (Receipt, error) {
	if m.IdempotencyKey != "" {
		return s.idem.do(m.IdempotencyKey, func() (Receipt, error) { return s.publish(m) })
	}
	return s.publish(m)
}

func (s *Server) publish(m Message) (Receipt, error) {
	if m.Channel != "" {
		if err := hub.ValidChannel(m.Channel); err != nil {
			return Receipt{}, err
		}
	}
	if len(m.Payload) > s.cfg.MaxMessage {
		return Receipt{}, ErrTooBig
	}
	switch m.Kind {
	case KindText:
		if !utf8.Valid(m.Payload) {
			return Receipt{}, ErrInvalidUTF8
		}
	case KindBinary:
	case KindJSON:
		if !utf8.Valid(m.Payload) { // json.Compact does not look inside strings
			return Receipt{}, ErrInvalidUTF8
		}
		buf := compactBufs.Get().(*bytes.Buffer)
		defer compactBufs.Put(buf)
		buf.Reset()
		if err := json.Compact(buf, m.Payload); err != nil {
			return Receipt{}, fmt.Errorf("%w: %w", ErrInvalidJSON, err)
		}
		m.Payload = buf.Bytes()
	default:
		return Receipt{}, fmt.Errorf("broadcast: publish: unknown kind %d", m.Kind)
	}
	seq, err := s.route(m.Channel, m.Kind, m.Payload)
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{Channel: m.Channel, Seq: seq, Epoch: s.hub.Epoch(), Recipients: s.hub.Members(m.Channel)}, nil
}

// compactBufs hold JSON payloads while they are compacted (then copied
// into their frame).
var compactBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Bus carries messages between fanout nodes (see package bus). With one
// set, every message the server would fan out goes to the bus instead,
// and comes back to every node, this one included, through Deliver.
type Bus interface {
	Publish(channel string, kind byte, payload []byte) error
}

// SetBus joins the server to a bus. Call it before Serve.
func (s *Server) SetBus(b Bus) { s.bus = b }

// Deliver fans out a message the bus brings, to this node's clients. kind
// is the Kind the publishing node gave the bus. It returns the message's
// seq on this node.
func (s *Server) Deliver(channel string, kind byte, payload []byte) (uint64, error) {
	seq, err := s.fanOut(channel, Kind(kind), payload)
	if err != nil {
		s.logRefused.Warn(s.log, "bus message refused locally", "err", err)
	}
	return seq, err
}

// route sends a validated message to the bus when the node is in a tier
// (seq 0: the bus gives it one on each node), and fans it out here
// otherwise. What it returns is all a client's message needs: the
// receipt's other fields cost a walk over the shards, for publishers who
// asked (Publish).
func (s *Server) route(channel string, kind Kind, payload []byte) (seq uint64, err error) {
	if s.bus == nil {
		return s.fanOut(channel, kind, payload)
	}
	if s.closing.Load() {
		s.refused.Add(1)
		return 0, ErrServerClosed
	}
	if err := s.bus.Publish(channel, byte(kind), payload); err != nil {
		s.refused.Add(1)
		return 0, fmt.Errorf("%w: %w", ErrBus, err)
	}
	return 0, nil
}

// fanOut encodes the message once and broadcasts it through the hub.
func (s *Server) fanOut(channel string, kind Kind, payload []byte) (uint64, error) {
	seq, err := s.hub.Broadcast(hub.NewMessage(channel, kind, payload))
	if err != nil {
		s.refused.Add(1)
		if errors.Is(err, hub.ErrBacklog) {
			return 0, ErrBacklog
		}
		return 0, ErrServerClosed
	}
	return seq, nil
}
