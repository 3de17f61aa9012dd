package hub

import (
	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// Encoding names one way of putting a message on the wire. A message
// carries each encoding its recipients need, prepared once and shared by
// all of them; a connection asks for exactly one.
type Encoding uint8

const (
	// EncodingFrame is the message as one unmasked WebSocket frame, header
	// and payload contiguous: what a plain WebSocket client receives.
	EncodingFrame Encoding = iota
	numEncodings
)

// Message is one published message as the hub moves it. It is a value: the
// ring and every shard's batch hold copies of it, and the bytes those copies
// share are never modified once the message is published.
type Message struct {
	Seq     uint64    // position in the hub's order; set by Hub.Broadcast
	Channel string    // "" is the default channel (the only one so far)
	Op      ws.OpCode // ws.OpText or ws.OpBinary
	Payload []byte    // the message; aliases its frame encoding

	enc [numEncodings][]byte // guarded by immutability
}

// NewMessage prepares a message on the default channel: one allocation,
// the WebSocket frame, whose tail is the payload.
func NewMessage(op ws.OpCode, payload []byte) Message {
	f := frame.Compile(op, payload)
	return Message{
		Op:      op,
		Payload: f[frame.HeaderSize(len(payload)):],
		enc:     [numEncodings][]byte{EncodingFrame: f},
	}
}

// Bytes returns the message in encoding e, or nil if it was not prepared.
func (m *Message) Bytes(e Encoding) []byte { return m.enc[e] }
