package broadcast

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
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
	// ErrBus wraps a bus's refusal: the tier's log cannot take the
	// message now (not connected, no acknowledgement, closed).
	ErrBus = errors.New("broadcast: the tier did not take the message")
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
	// Meta is what the Pusher front door adds: an event name, a
	// subscriber to leave out. Zero for fanout's own messages.
	Meta hub.Meta
}

// Receipt is what a publish did.
type Receipt struct {
	Channel string
	// Seq is the message's place in the order every client sees: the
	// node's, or in a tier the stream sequence of the tier's log.
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
	if s.bus != nil {
		return s.publishTier(m)
	}
	seq, err := s.fanOut(m.Channel, m.Kind, m.Payload, m.Meta)
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{Channel: m.Channel, Seq: seq, Epoch: s.hub.Epoch(), Recipients: s.hub.Members(m.Channel)}, nil
}

// publishTier stores m in the tier's log and answers once the log
// acknowledged it; every node, this one included, delivers it from there.
// The key is the log's too, so a repeat through another node is found.
func (s *Server) publishTier(m Message) (Receipt, error) {
	if err := s.tierUsable(len(m.Payload)); err != nil {
		return Receipt{}, err
	}
	epoch, seq, repeat, err := s.bus.Publish(context.Background(), m.Channel, byte(m.Kind), m.Payload, m.IdempotencyKey, m.Meta)
	if err != nil {
		s.refused.Add(1)
		return Receipt{}, fmt.Errorf("%w: %w", ErrBus, err)
	}
	return Receipt{Channel: m.Channel, Seq: seq, Epoch: epoch, Recipients: s.hub.Members(m.Channel), Repeat: repeat}, nil
}

// tierUsable refuses what the tier cannot take, before it is sent: a
// message over what the NATS server carries, anything once closing.
func (s *Server) tierUsable(size int) error {
	if s.closing.Load() {
		s.refused.Add(1)
		return ErrServerClosed
	}
	if mp := s.bus.MaxPayload(); mp > 0 && size > mp {
		s.refused.Add(1)
		return fmt.Errorf("%w: %d bytes, over the %d the tier's NATS server carries (its max_payload, less headers)", ErrTooBig, size, mp)
	}
	return nil
}

// compactBufs hold JSON payloads while they are compacted (then copied
// into their frame).
var compactBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Bus is the tier's log (see package bus): with one set, every message
// goes to the log instead of this node's hub, and every node, this one
// included, delivers what the log holds, in its order, through Begin and
// Deliver.
type Bus interface {
	// Publish stores a message and returns once the log acknowledged it:
	// its cursor, and repeat when a message with the same idempotency key
	// id was stored already (at seq).
	Publish(ctx context.Context, channel string, kind byte, payload []byte, id string, x hub.Meta) (epoch string, seq uint64, repeat bool, err error)
	// PublishAsync hands a client's message to the log without waiting
	// for its acknowledgement; the bus counts and logs what the log then
	// refuses.
	// x is the message's Meta but Exclude (each node finds its own
	// sender by x.Socket).
	PublishAsync(channel string, kind byte, payload []byte, x hub.Meta) error
	// MaxPayload is the largest payload the log takes (0: unknown yet).
	MaxPayload() int
}

// SetBus joins the server to a tier's log. Call it before Serve.
func (s *Server) SetBus(b Bus) {
	s.bus = b
	// A client resuming here from a seq another node delivered first
	// waits for this node to get there (a few ms, usually).
	s.hub.SetAheadWait(tierAheadWait)
}

// tierAheadWait bounds how long a resume from a seq this node has not
// reached yet waits for it.
const tierAheadWait = 5 * time.Second

// Begin implements bus.Sink: the log's next message follows seq, in
// epoch. Called before the first Deliver, before Serve.
func (s *Server) Begin(epoch string, seq uint64) error {
	return s.hub.Begin(hub.Cursor{Epoch: epoch, Seq: seq})
}

// Deliver implements bus.Sink: it fans out a message of the tier's log to
// this node's clients, at the log's cursor. It waits while the hub's
// backlog is full (the log keeps what this node has not taken: nothing is
// dropped here) until ctx ends.
//
// What a fanout node would not have published (a bad channel name, over
// -max-message, text that is not UTF-8, JSON that is not JSON: someone
// else wrote to the stream) is not delivered: it is counted, logged, and
// its seq passed over.
func (s *Server) Deliver(ctx context.Context, epoch string, seq uint64, channel string, kind byte, payload []byte, x hub.Meta) error {
	at := hub.Cursor{Epoch: epoch, Seq: seq}
	if err := s.validTier(channel, Kind(kind), payload); err != nil {
		s.logRefused.Warn(s.log, "a message in the tier's stream that fanout would not publish: not delivered (fanout_tier_invalid_messages_total)",
			"seq", seq, "channel", channel, "err", err)
		s.Pass(epoch, seq)
		return nil
	}
	msg := hub.NewMessage(channel, Kind(kind), payload)
	if x != (hub.Meta{}) {
		if x.Socket != "" && s.pusher != nil {
			x.Exclude = s.pusher.Exclude(x.Socket) // one of this node's own, or none
		}
		msg = hub.NewEvent(channel, Kind(kind), payload, x)
	}
	err := s.hub.AppendWait(ctx, msg, at)
	if err != nil && ctx.Err() == nil {
		s.logRefused.Warn(s.log, "message from the tier's log refused locally", "seq", seq, "err", err)
	}
	return err
}

// Pass implements bus.Sink: the stream holds nothing for this node at
// seq (a message fanout did not publish).
func (s *Server) Pass(epoch string, seq uint64) {
	s.tierInvalid.Add(1)
	s.hub.Pass(hub.Cursor{Epoch: epoch, Seq: seq})
}

// validTier checks a message from the tier's stream the way publish checks
// one before it goes there; not its size: nodes may differ in
// -max-message, and the stream's own limit (the largest node's) is what
// holds in the tier.
func (s *Server) validTier(channel string, kind Kind, payload []byte) error {
	if channel != "" {
		if err := hub.ValidChannel(channel); err != nil {
			return err
		}
	}
	switch {
	case kind == KindBinary:
		return nil
	case kind != KindText && kind != KindJSON:
		return fmt.Errorf("broadcast: unknown kind %d", kind)
	case !utf8.Valid(payload):
		return ErrInvalidUTF8
	case kind == KindJSON && !json.Valid(payload):
		return ErrInvalidJSON
	}
	return nil
}

// route sends a client's validated message to the tier's log when the
// node is in a tier, and fans it out here otherwise.
func (s *Server) route(channel string, kind Kind, payload []byte, meta hub.Meta) error {
	if s.bus == nil {
		_, err := s.fanOut(channel, kind, payload, meta)
		return err
	}
	if err := s.tierUsable(len(payload)); err != nil {
		return err
	}
	meta.Exclude = 0
	if err := s.bus.PublishAsync(channel, byte(kind), payload, meta); err != nil {
		s.refused.Add(1)
		return fmt.Errorf("%w: %w", ErrBus, err)
	}
	return nil
}

// fanOut encodes the message once and broadcasts it through the hub.
func (s *Server) fanOut(channel string, kind Kind, payload []byte, meta hub.Meta) (uint64, error) {
	msg := hub.NewMessage(channel, kind, payload)
	if meta != (hub.Meta{}) {
		msg = hub.NewEvent(channel, kind, payload, meta)
	}
	seq, err := s.hub.Broadcast(msg)
	if err != nil {
		s.refused.Add(1)
		if errors.Is(err, hub.ErrBacklog) {
			return 0, ErrBacklog
		}
		return 0, ErrServerClosed
	}
	return seq, nil
}
