package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"unicode/utf8"

	"github.com/gobwas/ws"

	wsframe "github.com/fanout/fanout/broadcast/frame"
)

// maxServerFrame bounds a frame the bench accepts from a server.
const maxServerFrame = 16 << 20

// frameSink receives what parseServerFrames finds.
type frameSink interface {
	data(op ws.OpCode, payload []byte)
	ping(payload []byte)
	closed(code ws.StatusCode)
}

var errServerMasked = errors.New("bench: server sent a masked frame")

// parseServerFrames consumes the complete (unmasked) server frames at the
// start of b and returns the bytes used. Fragmented messages are not
// expected from a broadcast server and are refused. It stops after a
// close frame (stop true).
func parseServerFrames(b []byte, s frameSink) (used int, stop bool, err error) {
	for {
		rest := b[used:]
		if len(rest) < 2 {
			return used, false, nil
		}
		fin, op, masked := rest[0]&0x80 != 0, ws.OpCode(rest[0]&0x0f), rest[1]&0x80 != 0
		if masked {
			return used, true, errServerMasked
		}
		hl, n := 2, uint64(rest[1]&0x7f)
		switch n {
		case 126:
			hl = 4
		case 127:
			hl = 10
		}
		if len(rest) < hl {
			return used, false, nil
		}
		switch hl {
		case 4:
			n = uint64(binary.BigEndian.Uint16(rest[2:]))
		case 10:
			n = binary.BigEndian.Uint64(rest[2:])
		}
		if n > maxServerFrame {
			return used, true, fmt.Errorf("bench: server frame of %d bytes", n)
		}
		if uint64(len(rest)-hl) < n {
			return used, false, nil
		}
		p := rest[hl : hl+int(n)]
		used += hl + int(n)
		if !fin {
			return used, true, errors.New("bench: fragmented server message")
		}
		switch op {
		case ws.OpText, ws.OpBinary:
			s.data(op, p)
		case ws.OpPing:
			s.ping(p)
		case ws.OpClose:
			code := ws.StatusNoStatusRcvd
			if len(p) >= 2 {
				code = ws.StatusCode(binary.BigEndian.Uint16(p))
			}
			s.closed(code)
			return used, true, nil
		}
	}
}

// clientFrame builds a masked client frame.
func clientFrame(op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	out := wsframe.AppendHeader(make([]byte, 0, 14+n), op, n)
	out[1] |= 0x80 // masked: the mask key follows the length
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], rand.Uint32())
	out = append(out, mask[:]...)
	start := len(out)
	out = append(out, payload...)
	ws.Cipher(out[start:], mask, 0)
	return out
}

// closeFrameBody is a client close frame's payload.
func closeFrameBody(code ws.StatusCode, reason string) []byte {
	if !utf8.ValidString(reason) {
		reason = ""
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}
