package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gobwas/ws"
)

// A bench message's payload starts with a fixed header; the rest is
// padding up to the configured size:
//
//	"FB" | publisher uint16 | sequence uint64 | send time uint64 (unix ns)
const payloadHeader = 20

var payloadMagic = [2]byte{'F', 'B'}

var errNotBench = errors.New("bench: not a bench message")

// warmPub marks warm-up messages: sent before the measured phase until
// every reading receiver has seen one (so every receiver is known to be
// registered with the server), and never counted.
const warmPub = 0xffff

// putPayload fills p (len ≥ payloadHeader) with a message header.
func putPayload(p []byte, pub uint16, seq uint64, sent int64) {
	p[0], p[1] = payloadMagic[0], payloadMagic[1]
	binary.BigEndian.PutUint16(p[2:], pub)
	binary.BigEndian.PutUint64(p[4:], seq)
	binary.BigEndian.PutUint64(p[12:], uint64(sent))
}

// A text message (what a publish batch carries: lines of text, see
// Config.PublishBatch) holds the same header in hex, as a JSON string so
// that a batch is valid NDJSON; the padding is inside the quotes:
//
//	'"' "FT" | publisher 4 hex | sequence 16 hex | send time 16 hex | padding '"'
const textPayloadHeader = 40

// A plain text message (Config.Payload PayloadText, one message per
// frame or POST) is that header without the quotes, then 'x' padding:
// text that a JSON string holds as it is, with no escape (what a Pusher
// event's data carries, see pusher.go).
//
//	"FT" | publisher 4 hex | sequence 16 hex | send time 16 hex | padding
const plainTextHeader = 38

// newPayload returns the buffer a publisher fills with putMessage: Size
// bytes, the padding (or, for JSON, the filler) already in place. It is
// also what every receiver expects after a message's header (see
// payloadHeaderLen): a message whose other bytes differ was not delivered
// intact.
func newPayload(cfg Config) []byte {
	if cfg.Payload == PayloadJSON {
		return jsonFiller(cfg.Size)
	}
	p := make([]byte, cfg.Size)
	for i := range p {
		p[i] = 'x'
	}
	if cfg.textPayload() {
		p[len(p)-1] = '"'
	}
	return p
}

// messageOp is the opcode of the frames publishers send: text for JSON
// and text messages, binary otherwise.
func (c Config) messageOp() ws.OpCode {
	if c.Payload == PayloadJSON || c.Payload == PayloadText {
		return ws.OpText
	}
	return ws.OpBinary
}

// putMessage fills p (from newPayload) with the header of message seq of
// publisher pub, sent at sent, in the form cfg's publishers send: binary,
// text (a publish batch's lines) or JSON.
func putMessage(cfg Config, p []byte, pub uint16, seq uint64, sent int64) {
	switch {
	case cfg.Payload == PayloadJSON:
		putJSONPayload(p, pub, seq, sent)
	case cfg.textPayload():
		putTextPayload(p, pub, seq, sent)
	case cfg.Payload == PayloadText:
		putPlainText(p, pub, seq, sent)
	default:
		putPayload(p, pub, seq, sent)
	}
}

// putTextPayload fills p (from newPayload, len ≥ textPayloadHeader) with a
// text message header.
func putTextPayload(p []byte, pub uint16, seq uint64, sent int64) {
	p[0] = '"'
	putPlainText(p[1:], pub, seq, sent)
}

// putPlainText fills p (len ≥ plainTextHeader) with a plain text header.
func putPlainText(p []byte, pub uint16, seq uint64, sent int64) {
	p[0], p[1] = 'F', 'T'
	putHex(p[2:6], uint64(pub))
	putHex(p[6:22], seq)
	putHex(p[22:38], uint64(sent))
}

const hexDigits = "0123456789abcdef"

// putHex writes v into b as len(b) lowercase hex digits.
func putHex(b []byte, v uint64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

// hexValue maps a byte to its value as a hex digit, 0xff if it is none.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < 16; i++ {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// getHex reads the hex digits of b (putHex's) back.
func getHex(b []byte) (v uint64, ok bool) {
	for _, c := range b {
		d := hexValue[c]
		if d == 0xff {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

// parsePayload reads a message header back, binary, text or JSON.
func parsePayload(p []byte) (pub uint16, seq uint64, sent int64, err error) {
	hex := []byte(nil) // the text and JSON headers' 36 hex digits
	switch {
	case len(p) >= textPayloadHeader && p[0] == '"' && p[1] == 'F' && p[2] == 'T':
		hex = p[3:39]
	case len(p) >= plainTextHeader && p[0] == 'F' && p[1] == 'T':
		hex = p[2:38]
	case len(p) >= jsonPayloadMin && string(p[:len(jsonPayloadPrefix)]) == jsonPayloadPrefix:
		hex = p[len(jsonPayloadPrefix):jsonPayloadHeader]
	}
	if hex != nil {
		pu, ok1 := getHex(hex[0:4])
		sq, ok2 := getHex(hex[4:20])
		st, ok3 := getHex(hex[20:36])
		if !ok1 || !ok2 || !ok3 {
			return 0, 0, 0, errNotBench
		}
		return uint16(pu), sq, int64(st), nil
	}
	if len(p) < payloadHeader || p[0] != payloadMagic[0] || p[1] != payloadMagic[1] {
		return 0, 0, 0, errNotBench
	}
	return binary.BigEndian.Uint16(p[2:]), binary.BigEndian.Uint64(p[4:]), int64(binary.BigEndian.Uint64(p[12:])), nil
}

// payloadHeaderLen is how many of p's first bytes are its header, the
// ones that differ from message to message (p's header was parsed): the
// rest is what newPayload put there.
func payloadHeaderLen(p []byte) int {
	switch {
	case p[0] == '"':
		return textPayloadHeader - 1 // the padding and the closing quote follow
	case p[0] == '{':
		return jsonPayloadHeader
	case p[1] == 'T':
		return plainTextHeader
	case p[1] == roomPayloadMagic[1]:
		return roomPayloadHeader
	}
	return payloadHeader
}

// A JSON message (Config.Payload PayloadJSON) is a JSON object of exactly
// Size bytes, sent as text: the header in its first member, then filler
// of the kind an API sends (objects with ids, names, numbers, flags), so
// that permessage-deflate has something like real traffic to compress:
//
//	{"bench":"FJ" | publisher 4 hex | sequence 16 hex | send time 16 hex '"' ,"items":[{...},...],"note":"..."}
//
// The items come from a fixed pseudo-random sequence: every publisher's
// filler is the same, as newPayload gives it.
const (
	jsonPayloadPrefix = `{"bench":"FJ`
	jsonPayloadHeader = len(jsonPayloadPrefix) + 36 // 48
	jsonPayloadMin    = jsonPayloadHeader + len(`","note":""}`)
)

// putJSONPayload fills p (from newPayload, JSON) with a JSON header.
func putJSONPayload(p []byte, pub uint16, seq uint64, sent int64) {
	h := p[len(jsonPayloadPrefix):jsonPayloadHeader]
	putHex(h[0:4], uint64(pub))
	putHex(h[4:20], seq)
	putHex(h[20:36], uint64(sent))
}

// fillerWords name the filler's items and make up its note.
var fillerWords = [...]string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa"}

// jsonFiller is a JSON message of exactly size bytes (≥ jsonPayloadMin)
// with a zero header: as many items as fit, and a note of words that
// takes up the rest.
func jsonFiller(size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, jsonPayloadPrefix...)
	for range 36 {
		b = append(b, '0')
	}
	b = append(b, '"')
	const tail = `,"note":""}`
	x := uint32(2463534242) // xorshift32: the same filler on every run
	next := func() uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x }
	var item []byte
	for i := 0; ; i++ {
		r := next()
		item = fmt.Appendf(item[:0], `{"id":%d,"name":"%s-%d","score":%d.%02d,"active":%t,"tags":["%s","%s"]}`,
			1000+i, fillerWords[r%16], r>>20, (r>>8)%100, (r>>16)%100, r&1 == 0, fillerWords[(r>>4)%16], fillerWords[(r>>12)%16])
		sep := ","
		if i == 0 {
			sep = `,"items":[`
		}
		if len(b)+len(sep)+len(item)+len("]")+len(tail) > size {
			if i > 0 {
				b = append(b, ']')
			}
			break
		}
		b = append(append(b, sep...), item...)
	}
	b = append(b, tail[:len(tail)-2]...)
	for i := 0; len(b) < size-2; i++ {
		w := fillerWords[next()%16]
		if i > 0 {
			w = " " + w
		}
		b = append(b, w[:min(len(w), size-2-len(b))]...)
	}
	return append(b, `"}`...)
}

// A rooms message (scenario rooms) names the room it was published to,
// its client's index, instead of a publisher: a client that receives
// another room's message can tell.
//
//	"FR" | room uint32 | sequence uint64 | send time uint64 (unix ns)
const roomPayloadHeader = 22

var roomPayloadMagic = [2]byte{'F', 'R'}

// roomWarmSeq marks a rooms warm-up message (see warmPub), never counted.
const roomWarmSeq = math.MaxUint64

// putRoomPayload fills p (len ≥ roomPayloadHeader) with a rooms header.
func putRoomPayload(p []byte, room uint32, seq uint64, sent int64) {
	p[0], p[1] = roomPayloadMagic[0], roomPayloadMagic[1]
	binary.BigEndian.PutUint32(p[2:], room)
	binary.BigEndian.PutUint64(p[6:], seq)
	binary.BigEndian.PutUint64(p[14:], uint64(sent))
}

// parseRoomPayload reads a rooms header back.
func parseRoomPayload(p []byte) (room uint32, seq uint64, sent int64, err error) {
	if len(p) < roomPayloadHeader || p[0] != roomPayloadMagic[0] || p[1] != roomPayloadMagic[1] {
		return 0, 0, 0, errNotBench
	}
	return binary.BigEndian.Uint32(p[2:]), binary.BigEndian.Uint64(p[6:]), int64(binary.BigEndian.Uint64(p[14:])), nil
}

// window is how far back a receiver remembers which sequence numbers it
// has seen, per publisher, to tell a duplicate from a late arrival.
const window = 1024

// seqTrack accounts for one publisher's messages at one receiver.
type seqTrack struct {
	next    uint64 // highest sequence seen + 1
	unique  uint64 // distinct sequences received
	dups    uint64 // sequences received again
	reorder uint64 // sequences received after a higher one
	seen    [window / 64]uint64
}

func (s *seqTrack) bit(q uint64) (word int, mask uint64) {
	i := q % window
	return int(i / 64), 1 << (i % 64)
}

// see records sequence q.
func (s *seqTrack) see(q uint64) {
	switch {
	case q >= s.next:
		// Everything between next and q is missing for now.
		if q-s.next >= window {
			s.seen = [window / 64]uint64{}
		} else {
			for m := s.next; m < q; m++ {
				w, b := s.bit(m)
				s.seen[w] &^= b
			}
		}
		w, b := s.bit(q)
		s.seen[w] |= b
		s.next = q + 1
		s.unique++
	case s.next-q > window:
		// Too old to remember: count it as late, not as a duplicate.
		s.unique++
		s.reorder++
	default:
		w, b := s.bit(q)
		if s.seen[w]&b != 0 {
			s.dups++
			return
		}
		s.seen[w] |= b
		s.unique++
		s.reorder++
	}
}
