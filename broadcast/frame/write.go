package frame

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// HeaderSize returns the size of an unmasked server frame header for a
// payload of n bytes.
func HeaderSize(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendHeader appends an unmasked, final frame header for op and a payload
// of n bytes to dst.
func AppendHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
	}
}

// Compile returns a complete unmasked server frame: one allocation, header
// and payload contiguous, ready to be written to any number of peers.
func Compile(op ws.OpCode, payload []byte) []byte {
	b := make([]byte, 0, HeaderSize(len(payload))+len(payload))
	return append(AppendHeader(b, op, len(payload)), payload...)
}

// Close returns a compiled close frame. Code ws.StatusNoStatusRcvd (1005)
// means "no code": the frame has an empty payload. The reason is cut to
// fit a control frame's 125 bytes.
func Close(code ws.StatusCode, reason string) []byte {
	return Compile(ws.OpClose, closePayload(code, reason))
}

// closePayload is a close frame's payload: none for ws.StatusNoStatusRcvd,
// else the code and as much of the reason as fits, cut on a rune boundary.
func closePayload(code ws.StatusCode, reason string) []byte {
	if code == ws.StatusNoStatusRcvd {
		return nil
	}
	for len(reason) > ws.MaxControlFramePayloadSize-2 || !utf8.ValidString(reason) {
		reason = reason[:min(len(reason)-1, ws.MaxControlFramePayloadSize-2)]
	}
	return ws.NewCloseFrameBody(code, reason)
}
