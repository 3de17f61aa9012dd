// Package frame is the repository's WebSocket frame codec (RFC 6455): it
// encodes frames and parses them out of a byte buffer that fills up a
// little at a time, for both sides of a connection. The server compiles
// unmasked frames (Compile, Close) and parses masked ones (Parser.Parse);
// a client, fanout-bench or a test, compiles masked frames (CompileMasked,
// AppendMasked, CloseMasked) and parses unmasked ones (Parser.ParseServer).
//
// Parsing never blocks and never reads: the caller appends whatever the
// socket had, calls Parse, and keeps the unconsumed tail for next time. A
// peer that trickles half a frame costs its tail bytes and nothing else.
// Nothing is allocated on a length the peer declares: a frame larger than
// MaxMessage is refused as soon as its header is complete.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultMaxMessage is the message size limit of a zero Parser.
const DefaultMaxMessage = 64 << 10

// MaxHeaderSize is the largest frame header a client can send.
const MaxHeaderSize = ws.MaxHeaderSize

// Handler receives what Parse finds. A payload aliases the buffer given to
// Parse and is valid only until the call returns.
type Handler interface {
	// Message is called with each complete, validated data message.
	// A non-nil error stops Parse, which returns it as is.
	Message(op ws.OpCode, payload []byte) error
	// Ping is called for each ping; the receiving end answers with a
	// pong carrying the same payload.
	Ping(payload []byte)
	// Pong is called for each (solicited or not) pong.
	Pong(payload []byte)
}

// CloseError ends the connection. Parse returns it for a protocol error
// (Peer false: close with Code) and for a valid close frame from the peer
// (Peer true: echo Code, or an empty close if the peer sent no code).
type CloseError struct {
	Code   ws.StatusCode
	Reason string
	Peer   bool
}

func (e *CloseError) Error() string {
	if e.Peer {
		return fmt.Sprintf("frame: peer closed with %d %q", e.Code, e.Reason)
	}
	return fmt.Sprintf("frame: close %d: %s", e.Code, e.Reason)
}

// AsClose reports whether err is (or wraps) a *CloseError.
func AsClose(err error) (*CloseError, bool) {
	var ce *CloseError
	ok := errors.As(err, &ce)
	return ce, ok
}

func protocolError(reason string) *CloseError {
	return &CloseError{Code: ws.StatusProtocolError, Reason: reason}
}

// Parser holds the state of one connection's incoming stream between calls
// to Parse. The zero value is ready to use with DefaultMaxMessage.
type Parser struct {
	// MaxMessage limits a data message, the sum of its fragments, in bytes,
	// and, once inflated, a compressed one. Zero means DefaultMaxMessage.
	// A bigger message closes with 1009.
	MaxMessage int

	// Ordered for packing: a Parser lives in every connection.
	need       int32     // bytes the next frame needs in the buffer, when known (capped at MaxInt32)
	fragmented bool      // a fragmented message is in progress
	op         ws.OpCode // opcode of the fragmented message in progress
	compressed bool      // the fragmented message in progress is compressed
	// Deflate: the connection negotiated permessage-deflate, so a data
	// message's first frame may carry RSV1 (compressed). Without it RSV1
	// is a protocol error (1002), as every RSV bit is.
	Deflate bool
	msg     []byte // fragments so far; nil when no message is in progress
}

// Need returns how many bytes the buffer must hold, counted from its first
// unconsumed byte, before the next Parse can make progress. It is at least
// 2 and never more than MaxHeaderSize+MaxMessage.
func (p *Parser) Need() int { return max(int(p.need), 2) }

// Held is the capacity of the buffer the Parser holds for a fragmented
// message in progress (0 with none): memory a peer makes the server keep
// between frames.
func (p *Parser) Held() int { return cap(p.msg) }

// Pending reports whether a fragmented message is in progress.
func (p *Parser) Pending() bool { return p.fragmented }

// Reset forgets any message in progress and releases its buffer.
func (p *Parser) Reset() {
	p.fragmented, p.op, p.msg, p.need, p.compressed = false, 0, nil, 0, false
}

func (p *Parser) limit() int {
	if p.MaxMessage > 0 {
		return p.MaxMessage
	}
	return DefaultMaxMessage
}

// Parse consumes every complete (masked) client frame at the start of b,
// unmasking payloads in place, and returns how many bytes it consumed. It
// stops at the first incomplete frame (err nil), after a close frame, or at
// the first error. An error is a *CloseError, or whatever Handler.Message
// returned.
func (p *Parser) Parse(b []byte, h Handler) (n int, err error) {
	return p.parse(b, h, ws.StateServerSide)
}

// parse is Parse and ParseServer: side is the reading end, which decides
// whether frames must be masked (ws.StateServerSide) or must not be
// (ws.StateClientSide).
func (p *Parser) parse(b []byte, h Handler, side ws.State) (n int, err error) {
	for {
		rest := b[n:]
		if len(rest) < 2 {
			p.need = 2
			return n, nil
		}
		hdr := ws.Header{
			Fin:    rest[0]&0x80 != 0,
			Rsv:    (rest[0] >> 4) & 0x07,
			OpCode: ws.OpCode(rest[0] & 0x0f),
			Masked: rest[1]&0x80 != 0,
		}
		ext := 0 // extended payload length bytes
		switch l7 := rest[1] & 0x7f; l7 {
		case 126:
			ext = 2
		case 127:
			ext = 8
		default:
			hdr.Length = int64(l7)
		}
		hl := 2 + ext
		if hdr.Masked {
			hl += 4
		}
		if len(rest) < hl {
			p.need = int32(hl)
			return n, nil
		}
		switch ext {
		case 2:
			hdr.Length = int64(binary.BigEndian.Uint16(rest[2:4]))
		case 8:
			u := binary.BigEndian.Uint64(rest[2:10])
			if u>>63 != 0 {
				return n, protocolError("frame length has the most significant bit set")
			}
			hdr.Length = int64(u)
		}
		compressed := false
		if hdr.Rsv == 4 && p.Deflate && (hdr.OpCode == ws.OpText || hdr.OpCode == ws.OpBinary) {
			// RSV1 on a data message's first frame: compressed. On a
			// continuation or a control frame it stays an error.
			compressed, hdr.Rsv = true, 0
		}
		state := side
		if p.fragmented {
			state |= ws.StateFragmented
		}
		if e := ws.CheckHeader(hdr, state); e != nil {
			return n, protocolError(e.Error())
		}
		if !hdr.OpCode.IsControl() && hdr.Length > int64(p.limit()-len(p.msg)) {
			return n, &CloseError{
				Code:   ws.StatusMessageTooBig,
				Reason: fmt.Sprintf("message over %d bytes", p.limit()),
			}
		}
		size := hl + int(hdr.Length) // bounded by the check above
		if len(rest) < size {
			p.need = int32(min(size, math.MaxInt32))
			return n, nil
		}
		payload := rest[hl:size]
		if hdr.Masked { // always on the server's side, never on a client's
			copy(hdr.Mask[:], rest[hl-4:hl])
			ws.Cipher(payload, hdr.Mask, 0)
		}
		n += size
		p.need = 0

		if err := p.frame(hdr.Fin, hdr.OpCode, compressed, payload, h); err != nil {
			return n, err
		}
	}
}

// frame hands one complete, unmasked frame to h, or keeps it as a fragment
// of the message in progress. A close frame always ends in an error. It
// takes fin and op rather than the ws.Header: a header holds an array, so
// it would be passed in memory, which costs a small frame about a fifth.
func (p *Parser) frame(fin bool, op ws.OpCode, compressed bool, payload []byte, h Handler) error {
	switch op {
	case ws.OpPing:
		h.Ping(payload)
	case ws.OpPong:
		h.Pong(payload)
	case ws.OpClose:
		return closeFrame(payload)
	case ws.OpText, ws.OpBinary:
		if fin {
			return p.deliver(h, op, compressed, payload)
		}
		p.fragmented = true
		p.op = op
		p.compressed = compressed
		p.msg = append(p.msg[:0], payload...)
	case ws.OpContinuation:
		p.msg = append(p.msg, payload...)
		if fin {
			op, msg, z := p.op, p.msg, p.compressed
			p.fragmented, p.op, p.msg, p.compressed = false, 0, nil, false
			return p.deliver(h, op, z, msg)
		}
	}
	return nil
}

// deliver hands a complete message to h: inflated first when compressed
// (within MaxMessage), then checked for UTF-8 when it is text.
func (p *Parser) deliver(h Handler, op ws.OpCode, compressed bool, payload []byte) error {
	if compressed {
		msg, done, err := inflate(payload, p.limit())
		if err != nil {
			return err
		}
		defer done()
		payload = msg
	}
	if op == ws.OpText && !utf8.Valid(payload) {
		return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in text message"}
	}
	return h.Message(op, payload)
}

// closeFrame validates a close frame's payload (RFC 6455 5.5.1, 7.4).
func closeFrame(payload []byte) *CloseError {
	switch len(payload) {
	case 0:
		return &CloseError{Code: ws.StatusNoStatusRcvd, Peer: true}
	case 1:
		return protocolError("close frame payload of 1 byte")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(payload))
	if !ValidCloseCode(code) {
		return protocolError(fmt.Sprintf("invalid close code %d", code))
	}
	reason := payload[2:]
	if !utf8.Valid(reason) {
		return &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid UTF-8 in close reason"}
	}
	return &CloseError{Code: code, Reason: string(reason), Peer: true}
}

// ValidCloseCode reports whether a peer may send code in a close frame:
// the codes RFC 6455 defines for use on the wire, the ones IANA registered
// since (1012-1014), and the application and private ranges.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}
