package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// The JSON envelope of a message, as json-format clients receive it:
//
//	{"type":"message","channel":"a","seq":17,"data":...}
//
// data is the payload itself for KindJSON, a JSON string for KindText;
// a KindBinary payload is "data_base64":"..." instead.

// encodeJSON is EncodingJSON: the envelope as one text frame, in one
// allocation of exactly its size.
func encodeJSON(m *Message) []byte {
	n := jsonEnvelopeLen(m)
	b := make([]byte, 0, frame.HeaderSize(n)+n)
	b = frame.AppendHeader(b, ws.OpText, n)
	return AppendEnvelope(b, m)
}

// encodeFrameDeflate is EncodingFrameDeflate: the payload compressed once,
// or the raw frame itself when it is small or does not shrink.
func encodeFrameDeflate(m *Message) []byte {
	if len(m.Payload) < m.lazy.compressMin {
		return m.frame
	}
	if f, ok := frame.CompileDeflate(m.Kind.Op(), m.Payload); ok {
		return f
	}
	return m.frame
}

// encodeJSONDeflate is EncodingJSONDeflate: the envelope compressed once,
// or its plain frame.
func encodeJSONDeflate(m *Message) []byte {
	plain := m.Bytes(EncodingJSON)
	n := jsonEnvelopeLen(m)
	if n < m.lazy.compressMin {
		return plain
	}
	if f, ok := frame.CompileDeflate(ws.OpText, plain[len(plain)-n:]); ok {
		return f
	}
	return plain
}

// encodePusher is EncodingPusher: the message as a Pusher event, in one
// text frame of exactly its size:
//
//	{"event":"E","channel":"C","data":"..."[,"user_id":"U"]}
//
// data is always a JSON string, the way Pusher sends it and its clients
// expect it (they JSON.parse a string that parses): a text payload as
// itself (an API publish's data string, verbatim), a JSON one as its
// text, a binary one in base64. The channel is the Pusher name
// (Config.PusherChannel); the event "message" when none was given.
func encodePusher(m *Message) []byte {
	n := pusherLen(m)
	b := make([]byte, 0, frame.HeaderSize(n)+n)
	b = frame.AppendHeader(b, ws.OpText, n)
	b = append(b, `{"event":`...)
	b = AppendJSONString(b, pusherEvent(m))
	b = append(b, `,"channel":`...)
	b = AppendJSONString(b, pusherChannel(m))
	b = append(b, `,"data":`...)
	switch m.Kind {
	case KindBinary:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, m.Payload)
		b = append(b, '"')
	default:
		b = appendJSONText(b, m.Payload)
	}
	if u := m.lazy.meta.UserID; u != "" {
		b = append(b, `,"user_id":`...)
		b = AppendJSONString(b, u)
	}
	return append(b, '}')
}

// pusherLen is the length of encodePusher's JSON, without building it.
func pusherLen(m *Message) int {
	n := len(`{"event":,"channel":,"data":}`) + jsonStringLen(pusherEvent(m)) + jsonStringLen(pusherChannel(m))
	if m.Kind == KindBinary {
		n += 2 + base64.StdEncoding.EncodedLen(len(m.Payload))
	} else {
		n += jsonStringLen(unsafeString(m.Payload))
	}
	if u := m.lazy.meta.UserID; u != "" {
		n += len(`,"user_id":`) + jsonStringLen(u)
	}
	return n
}

func pusherEvent(m *Message) string {
	if ev := m.lazy.meta.Event; ev != "" {
		return ev
	}
	return "message"
}

func pusherChannel(m *Message) string {
	if f := m.lazy.pusherName; f != nil {
		return f(m.Channel)
	}
	return m.Channel
}

// encodeSSE is EncodingSSE: the envelope as one event whose id is the
// message's cursor, in one allocation of exactly its size.
func encodeSSE(m *Message) []byte {
	epoch := m.lazy.epoch
	n := len("id: ") + len(epoch) + 1 + digits(m.Seq) + len("\ndata: ") + jsonEnvelopeLen(m) + len("\n\n")
	b := make([]byte, 0, n)
	b = AppendSSEID(b, epoch, m.Seq)
	b = append(b, "data: "...)
	b = AppendEnvelope(b, m)
	return append(b, "\n\n"...)
}

// AppendSSEID appends an SSE event's id line for the cursor epoch:seq:
// what EventSource sends back as Last-Event-ID when it reconnects.
func AppendSSEID(b []byte, epoch string, seq uint64) []byte {
	b = append(b, "id: "...)
	b = append(b, epoch...)
	b = append(b, ':')
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '\n')
}

// JoinFrames is what a joining subscriber writes first: its welcome, then
// the replay in encoding e; and their total size.
func JoinFrames(welcome []byte, replay []Message, e Encoding) (frames [][]byte, size int) {
	frames, size = make([][]byte, 1, 1+len(replay)), len(welcome)
	frames[0] = welcome
	for i := range replay {
		b := replay[i].Bytes(e)
		frames = append(frames, b)
		size += len(b)
	}
	return frames, size
}

// AppendWelcome appends the welcome of a json-format connection (or an
// SSE stream) that joined as j, on channels:
//
//	{"type":"welcome","epoch":"E","seq":S,"channels":["a","b"]}
//
// plus "recovered" when it asked to resume.
func AppendWelcome(b []byte, epoch string, channels []string, j Joined, resume bool) []byte {
	b = append(b, `{"type":"welcome","epoch":`...)
	b = AppendJSONString(b, epoch)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, j.Seq, 10)
	b = append(b, `,"channels":[`...)
	for i, c := range channels {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, c)
	}
	b = append(b, ']')
	if resume {
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, j.Recovered)
	}
	return append(b, '}')
}

// AppendEnvelope appends m's JSON envelope to dst.
func AppendEnvelope(dst []byte, m *Message) []byte {
	dst = append(dst, `{"type":"message","channel":`...)
	dst = AppendJSONString(dst, m.Channel)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	if ev := m.lazy.meta.Event; ev != "" {
		dst = append(dst, `,"event":`...)
		dst = AppendJSONString(dst, ev)
	}
	switch m.Kind {
	case KindJSON:
		dst = append(dst, `,"data":`...)
		dst = append(dst, m.Payload...)
	case KindBinary:
		dst = append(dst, `,"data_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Payload)
		dst = append(dst, '"')
	default:
		dst = append(dst, `,"data":`...)
		dst = appendJSONText(dst, m.Payload)
	}
	return append(dst, '}')
}

// jsonEnvelopeLen is len(AppendEnvelope(nil, m)), without building it.
func jsonEnvelopeLen(m *Message) int { return m.body + digits(m.Seq) }

// envelopeBodyLen is jsonEnvelopeLen less the seq's digits: a scan of the
// payload, done once, by NewMessage, before any lock is taken.
func envelopeBodyLen(m *Message) int {
	n := len(`{"type":"message","channel":`) + jsonStringLen(m.Channel) + len(`,"seq":`) + len(`}`)
	if ev := m.lazy.meta.Event; ev != "" {
		n += len(`,"event":`) + jsonStringLen(ev)
	}
	switch m.Kind {
	case KindJSON:
		n += len(`,"data":`) + len(m.Payload)
	case KindBinary:
		n += len(`,"data_base64":""`) + base64.StdEncoding.EncodedLen(len(m.Payload))
	default:
		n += len(`,"data":`) + jsonStringLen(unsafeString(m.Payload))
	}
	return n
}

func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s, valid UTF-8, as a JSON string: quotes,
// backslashes and control characters escaped, the rest as it is.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendJSONText(dst, b []byte) []byte {
	return AppendJSONString(dst, unsafeString(b))
}

// jsonStringLen is len(AppendJSONString(nil, s)).
func jsonStringLen(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n++
		case c < 0x20:
			n += 5
		}
	}
	return n
}

// unsafeString views b as a string for reading only, without the copy.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// FromJSON turns a JSON value a publisher sent as "data" into a message
// payload: a JSON string becomes KindText, its text (so raw-format clients
// receive the text, and json-format ones the same string); any other
// value is KindJSON, compacted. An invalid value is an error.
func FromJSON(data []byte) (Kind, []byte, error) {
	if !utf8.Valid(data) { // json.Compact does not look inside strings
		return 0, nil, errors.New("not valid UTF-8")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return 0, nil, err
	}
	b := buf.Bytes()
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, nil, err
		}
		return KindText, []byte(s), nil
	}
	return KindJSON, b, nil
}
