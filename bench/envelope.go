package bench

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"math/bits"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// fanout's JSON envelope, what a json-format frame and an SSE event's data
// hold:
//
//	{"type":"welcome","epoch":"E","seq":S,"channels":[...]}
//	{"type":"message","channel":"a","seq":17,"data":...}
//
// where data is the payload itself when it was published as JSON, a JSON
// string for text, and binary comes as "data_base64":"..." instead.
//
// decodeEnvelope reads it with a scanner of its own: encoding/json takes
// about 30 µs for a 1 KiB message (a struct with a json.RawMessage, then
// the string), which at 100,000 deliveries a second would be three cores
// of a bench that shares its machine with the server; this takes a few
// hundred nanoseconds. It is a strict JSON parser for one object (a fuzz
// target holds it to encoding/json: it never takes what encoding/json
// would not, and finds the same type and data in it).

// envType is what an envelope is.
type envType uint8

const (
	envOther   envType = iota // any other "type" (or none): not a bench message
	envWelcome                // the stream's first object
	envMessage                // a published message
)

var (
	// errJSON: not one valid JSON value (encoding/json would say so too).
	errJSON = errors.New("bench: invalid JSON")
	// errEnvelope: valid JSON, but not an envelope: not an object, a type
	// that is not a string, a key given twice, or data_base64 that is not
	// base64.
	errEnvelope = errors.New("bench: not a JSON envelope")
)

// maxJSONDepth is encoding/json's nesting limit: an object or array
// nested deeper is invalid there, and here.
const maxJSONDepth = 10000

// decodeEnvelope reads the object b: its type and, for a message, its
// seq and its payload as published, which aliases b or is appended to dst
// (returned, grown, for reuse): "data"'s value decoded when it is a
// string (text), "data" itself when it is another value (JSON, as the
// server wrote it), "data_base64" decoded (binary). A message with
// neither has a nil payload; seq is 0 when "seq" is not a whole number
// from 1 to 2^64-1 (fanout's seqs start at 1).
func decodeEnvelope(b, dst []byte) (typ envType, seq uint64, payload, out []byte, err error) {
	d := envDecoder{scanner: scanner{b: b}, dst: dst}
	if err := d.decode(); err != nil {
		return 0, 0, nil, d.dst, err
	}
	if d.typ != envMessage {
		d.payload, d.seq = nil, 0
	}
	return d.typ, d.seq, d.payload, d.dst, nil
}

// envDecoder is one decodeEnvelope in progress.
type envDecoder struct {
	scanner
	dst     []byte
	typ     envType
	seq     uint64
	payload []byte
	seen    uint8 // the members read so far, of seenType, seenData and seenBase64
	shape   error // valid JSON that is no envelope: said once the whole is read
}

// The members an envelope has at most once each.
const (
	seenType uint8 = 1 << iota
	seenData
	seenBase64
)

// decode reads the whole of d.b: one JSON value, an envelope.
func (d *envDecoder) decode() error {
	d.space()
	if !d.peek('{') {
		if err := d.value(0); err != nil {
			return err
		}
		d.shape = errEnvelope
	} else if err := d.members(); err != nil {
		return err
	}
	if d.space(); d.i != len(d.b) {
		return errJSON
	}
	return d.shape
}

// members reads the object at d.i, member by member.
func (d *envDecoder) members() error { return d.object(d.member) }

// object reads the object at s.i (its '{'), handing each member's key,
// unescaped, to member, which reads the value at s.i.
func (s *scanner) object(member func(key []byte) error) error {
	s.i++ // '{'
	s.space()
	if s.peek('}') {
		s.i++
		return nil
	}
	for {
		key, esc, err := s.str()
		if err != nil {
			return err
		}
		if esc {
			key = unescape(nil, key)
		}
		s.space()
		if !s.peek(':') {
			return errJSON
		}
		s.i++
		s.space()
		if err := member(key); err != nil {
			return err
		}
		s.space()
		switch {
		case s.peek(','):
			s.i++
			s.space()
		case s.peek('}'):
			s.i++
			return nil
		default:
			return errJSON
		}
	}
}

// member reads key's value. It returns what makes the text invalid JSON;
// what makes it no envelope goes to d.shape.
func (d *envDecoder) member(key []byte) error {
	var bit uint8
	switch string(key) {
	case "type":
		bit = seenType
	case "data":
		bit = seenData
	case "data_base64":
		bit = seenBase64
	case "seq":
		start := d.i
		if err := d.value(1); err != nil {
			return err
		}
		d.seq = wholeNumber(d.b[start:d.i]) // the last one, as encoding/json takes it
		return nil
	default:
		return d.value(1)
	}
	if d.seen&bit != 0 || (d.seen|bit)&(seenData|seenBase64) == seenData|seenBase64 {
		d.shape = errEnvelope // a member twice, or both data and data_base64
	}
	d.seen |= bit
	if !d.peek('"') {
		start := d.i
		if err := d.value(1); err != nil {
			return err
		}
		if bit == seenData {
			d.payload = d.b[start:d.i] // a JSON value, as it is
		} else {
			d.shape = errEnvelope // type and data_base64 are strings
		}
		return nil
	}
	if bit == seenData {
		val, dst, err := d.strDecode(d.dst[:0])
		d.dst, d.payload = dst, val
		return err
	}
	raw, esc, err := d.str()
	if err != nil {
		return err
	}
	switch bit {
	case seenType:
		if esc {
			raw = unescape(nil, raw)
		}
		switch string(raw) {
		case "welcome":
			d.typ = envWelcome
		case "message":
			d.typ = envMessage
		default:
			d.typ = envOther
		}
	case seenBase64:
		if esc {
			raw = unescape(nil, raw)
		}
		n := base64.StdEncoding.DecodedLen(len(raw))
		d.dst = slices.Grow(d.dst[:0], n)[:n]
		n, err := base64.StdEncoding.Decode(d.dst, raw)
		if err != nil {
			d.shape = errEnvelope
		}
		d.dst = d.dst[:n]
		d.payload = d.dst
	}
	return nil
}

// scanner walks JSON text: b[i:] is what is left.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) peek(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

// space skips white space.
func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str reads the string at s.i: its bytes between the quotes, as they are,
// and whether they hold escapes (unescape them then).
func (s *scanner) str() (raw []byte, esc bool, err error) {
	if !s.peek('"') {
		return nil, false, errJSON
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		i = plain(s.b, i)
		if i == len(s.b) {
			break
		}
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], esc, nil
		case c == '\\':
			esc = true
			i++
			if i >= len(s.b) {
				return nil, false, errJSON
			}
			switch s.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.b) {
					return nil, false, errJSON
				}
				if _, ok := hex4(s.b[i+1 : i+5]); !ok {
					return nil, false, errJSON
				}
				i += 4
			default:
				return nil, false, errJSON
			}
		case c < 0x20:
			return nil, false, errJSON
		}
	}
	return nil, false, errJSON
}

// plain returns the index of the first byte of b from i on that a string
// cannot hold as it is (a quote, a backslash, a control character), or
// len(b), eight bytes at a time. Strings are most of an envelope's bytes.
func plain(b []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:]) // b[i] in the low byte
		q, bs := x^(ones*'"'), x^(ones*'\\')
		// A byte of x under 0x20, or a zero byte of q or bs (a quote, a
		// backslash), sets its high bit in special. A borrow may set
		// the high bit of a later byte too, never of an earlier one: the
		// lowest bit set is the first such byte.
		if special := (((x - ones*0x20) &^ x) | ((q - ones) &^ q) | ((bs - ones) &^ bs)) & highs; special != 0 {
			return i + bits.TrailingZeros64(special)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '"' || c == '\\' {
			return i
		}
	}
	return i
}

// strDecode reads the string at s.i and returns its value: its bytes
// where they are when it holds no escape, else decoded into dst (returned
// grown) as unescape decodes them, in the same pass that checks it. The
// data of a text message is a string and the one that matters.
func (s *scanner) strDecode(dst []byte) (val, out []byte, err error) {
	if !s.peek('"') {
		return nil, dst, errJSON
	}
	start := s.i + 1
	i := plain(s.b, start)
	if i < len(s.b) && s.b[i] == '"' {
		s.i = i + 1
		return s.b[start:i], dst, nil // no escape: the bytes as they are
	}
	dst = append(dst, s.b[start:i]...)
	for {
		if i >= len(s.b) || s.b[i] < 0x20 {
			return nil, dst, errJSON
		}
		if s.b[i] == '"' {
			s.i = i + 1
			return dst, dst, nil
		}
		// A backslash: one escape, checked and decoded.
		if i+1 >= len(s.b) {
			return nil, dst, errJSON
		}
		switch c := s.b[i+1]; c {
		case '"', '\\', '/':
			dst = append(dst, c)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := rune(0), false
			if i+6 <= len(s.b) {
				r, ok = hex4(s.b[i+2 : i+6])
			}
			if !ok {
				return nil, dst, errJSON
			}
			i += 4
			if utf16.IsSurrogate(r) {
				hi := r
				r = utf8.RuneError
				if j := i + 2; j+6 <= len(s.b) && s.b[j] == '\\' && s.b[j+1] == 'u' {
					if lo, ok := hex4(s.b[j+2 : j+6]); ok {
						if pair := utf16.DecodeRune(hi, lo); pair != utf8.RuneError {
							r = pair
							i += 6
						}
					}
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return nil, dst, errJSON
		}
		i += 2
		j := plain(s.b, i)
		dst = append(dst, s.b[i:j]...)
		i = j
	}
}

// value reads past the value at s.i, at nesting depth (the objects and
// arrays around it).
func (s *scanner) value(depth int) error {
	if s.i >= len(s.b) {
		return errJSON
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '{' || c == '[':
		if depth+1 > maxJSONDepth {
			return errJSON
		}
		return s.container(depth + 1)
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return errJSON
}

// container reads past the object or array at s.i.
func (s *scanner) container(depth int) error {
	object := s.b[s.i] == '{'
	end := byte(']')
	if object {
		end = '}'
	}
	s.i++
	s.space()
	if s.peek(end) {
		s.i++
		return nil
	}
	for {
		if object {
			if _, _, err := s.str(); err != nil {
				return err
			}
			s.space()
			if !s.peek(':') {
				return errJSON
			}
			s.i++
			s.space()
		}
		if err := s.value(depth); err != nil {
			return err
		}
		s.space()
		switch {
		case s.peek(','):
			s.i++
			s.space()
		case s.peek(end):
			s.i++
			return nil
		default:
			return errJSON
		}
	}
}

func (s *scanner) literal(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return errJSON
	}
	s.i += len(lit)
	return nil
}

// number reads past a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.peek('-') {
		s.i++
	}
	switch {
	case s.peek('0'):
		s.i++
	case digits() == 0:
		return errJSON
	}
	if s.peek('.') {
		s.i++
		if digits() == 0 {
			return errJSON
		}
	}
	if s.peek('e') || s.peek('E') {
		s.i++
		if s.peek('+') || s.peek('-') {
			s.i++
		}
		if digits() == 0 {
			return errJSON
		}
	}
	return nil
}

// wholeNumber is the value of the JSON number b when it is a whole number
// written in digits alone, from 1 to 2^64-1; else 0.
func wholeNumber(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0
		}
		v = v*10 + d
	}
	return v
}

// hex4 is the value of four hex digits.
func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		d := hexValue[c]
		if c >= 'A' && c <= 'F' {
			d = c - 'A' + 10
		}
		if d == 0xff {
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

// unescape appends the string raw (from str: its escapes valid) decoded to
// dst, as encoding/json decodes it: a \u escape of half a surrogate pair
// that has no other half is U+FFFD. Other bytes are copied as they are.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		k := bytes.IndexByte(raw[i:], '\\')
		if k < 0 {
			dst = append(dst, raw[i:]...)
			break
		}
		k += i
		dst = append(dst, raw[i:k]...)
		c := raw[k+1]
		i = k + 2
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, _ := hex4(raw[i:])
			i += 4
			if utf16.IsSurrogate(r) {
				hi := r
				r = utf8.RuneError
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if lo, ok := hex4(raw[i+2:]); ok {
						if pair := utf16.DecodeRune(hi, lo); pair != utf8.RuneError {
							r = pair
							i += 6
						}
					}
				}
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}
