package frame

import (
	"github.com/gobwas/ws"
)

// The client's side of the codec: what a client (fanout-bench, the tests)
// writes to a server and reads back from it.

// CompileMasked returns a complete, final client frame for op with a fresh
// random mask key: one allocation, header and masked payload contiguous.
func CompileMasked(op ws.OpCode, payload []byte) []byte {
	b := make([]byte, 0, HeaderSize(len(payload))+4+len(payload))
	return AppendMasked(b, op, payload, ws.NewMask())
}

// AppendMasked appends a complete, final client frame for op to dst, its
// payload masked with key, and returns the extended buffer. payload is not
// modified. RFC 6455 (5.3) wants a fresh, unpredictable key for every
// frame: ws.NewMask gives one.
func AppendMasked(dst []byte, op ws.OpCode, payload []byte, key [4]byte) []byte {
	return AppendMaskedRaw(dst, 0x80|byte(op), payload, key)
}

// AppendMaskedRaw is AppendMasked with the frame's whole first byte given:
// FIN (0x80), RSV1-3 (0x70) and the opcode (0x0f), taken as they are and
// not checked, so that a test can send fragments, reserved bits, reserved
// opcodes and other protocol errors.
func AppendMaskedRaw(dst []byte, b0 byte, payload []byte, key [4]byte) []byte {
	h := len(dst)
	dst = AppendHeader(dst, 0, len(payload))
	dst[h] = b0
	dst[h+1] |= 0x80 // masked: the key follows the length
	dst = append(dst, key[:]...)
	p := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[p:], key, 0)
	return dst
}

// CloseMasked returns a client's close frame, with Close's rules for the
// payload: ws.StatusNoStatusRcvd (1005) means an empty payload, and the
// reason is cut to fit.
func CloseMasked(code ws.StatusCode, reason string) []byte {
	return CompileMasked(ws.OpClose, closePayload(code, reason))
}

// ParseServer is Parse for a client: it consumes the frames a server sent,
// which must not be masked (RFC 6455 5.1), and otherwise follows the same
// rules and reports to h the same way. A Parser is used with Parse or with
// ParseServer, never both.
func (p *Parser) ParseServer(b []byte, h Handler) (n int, err error) {
	return p.parse(b, h, ws.StateClientSide)
}
