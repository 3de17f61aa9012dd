package hub

import (
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// Encoding names one way of putting a message on the wire. A message
// carries each encoding its recipients need, prepared at most once and
// shared by all of them; a connection asks for exactly one.
type Encoding uint8

const (
	// EncodingFrame is the message as one unmasked WebSocket frame, header
	// and payload contiguous, opcode kept: what a raw-format client
	// receives (the seed's behaviour).
	EncodingFrame Encoding = iota
	// EncodingJSON is the message in its JSON envelope, as one text frame:
	// {"type":"message","channel":..,"seq":..,"data":..}. It is built the
	// first time a recipient needs it (see Message.Bytes).
	EncodingJSON
	// EncodingSSE is the JSON envelope as one Server-Sent Event:
	// "id: EPOCH:SEQ\ndata: {envelope}\n\n". Built on first use.
	EncodingSSE
	// EncodingFrameDeflate and EncodingJSONDeflate are EncodingFrame and
	// EncodingJSON for clients that negotiated permessage-deflate: the
	// frame compressed once (RSV1), or the plain frame when the message is
	// under Config.CompressMinBytes or does not shrink. Built on first use.
	EncodingFrameDeflate
	EncodingJSONDeflate
	// EncodingPusher is the message as a Pusher protocol event, one text
	// frame: {"event":..,"channel":..,"data":"..."[,"user_id":..]}, data
	// always a JSON string (see encodePusher). Built on first use.
	EncodingPusher
	numEncodings
)

// Kind is what a message's payload is, as its publisher said.
type Kind uint8

const (
	// KindText is UTF-8 text: a text frame, a JSON string in the envelope.
	KindText Kind = iota
	// KindBinary is bytes: a binary frame, "data_base64" in the envelope.
	KindBinary
	// KindJSON is a JSON value (validated, compacted): a text frame, the
	// value itself as "data" in the envelope.
	KindJSON
)

// Op is the WebSocket opcode a raw frame of kind k carries.
func (k Kind) Op() ws.OpCode {
	if k == KindBinary {
		return ws.OpBinary
	}
	return ws.OpText
}

// Message is one published message as the hub moves it. It is a value: the
// ring, the history and every shard's batch hold copies of it, and the
// bytes those copies share are never modified once the message is
// published.
type Message struct {
	Seq     uint64 // position in the hub's order, from 1; set by Hub.Broadcast
	Channel string // "" is the default channel
	Kind    Kind
	Payload []byte // the message; aliases its raw frame

	frame []byte    // EncodingFrame
	lazy  *encoding // the encodings built on first use; shared by every copy
	body  int       // the JSON envelope's length less its seq's digits (counted once, by NewMessage)
}

// encoding holds the encodings a message gets only when some recipient
// needs them. Every copy of a message points at the same one.
type encoding struct {
	epoch       string // the hub's, set by Broadcast: an SSE event's id names it
	compressMin int    // the hub's Config.CompressMinBytes, set by Broadcast
	json        lazyBytes
	sse         lazyBytes
	frameZ      lazyBytes
	jsonZ       lazyBytes
	pusher      lazyBytes
	pusherName  func(string) string // the hub's Config.PusherChannel, set by Broadcast
	meta        Meta
}

// Meta is what a message may carry besides its payload, for the Pusher
// front door: most messages have none (the zero Meta), and it lives in
// the encodings' holder, so copies of a message do not grow for it.
type Meta struct {
	// Event is the Pusher event name; "" for a message published without
	// one, which Pusher clients receive as the event "message". A
	// json-format client sees it as "event" in the envelope.
	Event string
	// Exclude is the id of a subscriber (Identified) that the message is
	// not delivered to: the sender of a client event, or the socket_id
	// an API publish names. Zero: none.
	Exclude uint64
	// Socket is the Pusher socket_id of the sender, as it travels
	// between tier nodes (each maps it to Exclude if it is one of its
	// own); UserID the presence user it sent as ("user_id" in the event).
	Socket, UserID string
}

// Identified is a subscriber with an id, the one Meta.Exclude names: the
// hub's Add id. Only messages that exclude someone ask.
type Identified interface{ ID() uint64 }

// lazyBytes is a value built once, by the first caller, while the others
// wait for it (sync.Once without the closure: Bytes runs per message on
// the fan-out path and must not allocate to ask).
type lazyBytes struct {
	done atomic.Bool
	mu   sync.Mutex
	b    []byte // guarded by mu until done
}

func (l *lazyBytes) get(m *Message, build func(*Message) []byte) []byte {
	if l.done.Load() {
		return l.b
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done.Load() {
		l.b = build(m)
		l.done.Store(true)
	}
	return l.b
}

// NewMessage prepares a message on channel ("" for the default one): two
// allocations, the raw WebSocket frame, whose tail is the payload, and
// the shared holder of the encodings built later. A KindJSON payload must
// be valid, compact JSON and a KindText one valid UTF-8: the caller
// checked (broadcast.Server.Publish does).
func NewMessage(channel string, kind Kind, payload []byte) Message {
	f := frame.Compile(kind.Op(), payload)
	m := Message{
		Channel: channel,
		Kind:    kind,
		Payload: f[frame.HeaderSize(len(payload)):],
		frame:   f,
		lazy:    new(encoding),
	}
	m.body = envelopeBodyLen(&m)
	return m
}

// NewEvent is NewMessage for a message that carries meta (an event name,
// a sender to leave out).
func NewEvent(channel string, kind Kind, payload []byte, meta Meta) Message {
	m := NewMessage(channel, kind, payload)
	m.lazy.meta = meta
	m.body = envelopeBodyLen(&m)
	return m
}

// Meta is what the message carries besides its payload.
func (m *Message) Meta() Meta { return m.lazy.meta }

// Bytes returns the message in encoding e, building it the first time it
// is asked for (the message must have its Seq by then).
func (m *Message) Bytes(e Encoding) []byte {
	switch e {
	case EncodingFrame:
		return m.frame
	case EncodingJSON:
		return m.lazy.json.get(m, encodeJSON)
	case EncodingSSE:
		return m.lazy.sse.get(m, encodeSSE)
	case EncodingFrameDeflate:
		return m.lazy.frameZ.get(m, encodeFrameDeflate)
	case EncodingJSONDeflate:
		return m.lazy.jsonZ.get(m, encodeJSONDeflate)
	case EncodingPusher:
		return m.lazy.pusher.get(m, encodePusher)
	}
	return nil
}

// messageOverhead is what keeping a message costs besides its bytes: the
// Message value and its history record, the encodings' holder.
const messageOverhead = 320

// Size bounds what the message keeps alive, every encoding of it built:
// the raw frame and the JSON envelope's, the SSE event, the compressed
// variants (each at most its plain one's size: a frame that does not
// shrink is sent plain, the same bytes) and messageOverhead. A history
// holding it counts this against its byte budget: an upper bound, so the
// budget holds whichever clients come.
func (m *Message) Size() int {
	n := jsonEnvelopeLen(m)
	jsonFrame := frame.HeaderSize(n) + n
	sse := len("id: ") + len(m.lazy.epoch) + 1 + digits(m.Seq) + len("\ndata: ") + n + len("\n\n")
	return 2*len(m.frame) + 2*jsonFrame + sse + pusherLen(m) + 10 + messageOverhead
}
