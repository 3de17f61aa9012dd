package frame

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// rec records what Parse reports, in order, as comparable strings.
type rec struct{ events []string }

func (r *rec) Message(op ws.OpCode, p []byte) error {
	r.events = append(r.events, fmt.Sprintf("msg %d %q", op, p))
	return nil
}
func (r *rec) Ping(p []byte) { r.events = append(r.events, fmt.Sprintf("ping %q", p)) }
func (r *rec) Pong(p []byte) { r.events = append(r.events, fmt.Sprintf("pong %q", p)) }

// client builds a masked client frame with gobwas/ws, an encoder
// independent of the parser under test.
func client(fin bool, op ws.OpCode, p []byte) []byte {
	f := ws.NewFrame(op, fin, append([]byte(nil), p...))
	f = ws.MaskFrameWith(f, [4]byte{0x11, 0x22, 0x33, 0x44})
	return ws.MustCompileFrame(f)
}

// raw builds a frame byte by byte, for headers gobwas refuses to encode.
func raw(b0 byte, masked bool, p []byte) []byte {
	out := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case len(p) <= 125:
		out = append(out, m|byte(len(p)))
	case len(p) <= 0xffff:
		out = binary.BigEndian.AppendUint16(append(out, m|126), uint16(len(p)))
	default:
		out = binary.BigEndian.AppendUint64(append(out, m|127), uint64(len(p)))
	}
	if masked {
		out = append(out, 0, 0, 0, 0) // zero mask: payload goes as is
	}
	return append(out, p...)
}

func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestParse(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70_000)
	for _, tc := range []struct {
		name   string
		in     []byte
		max    int
		events []string
		code   ws.StatusCode // 0: no close
		peer   bool
	}{
		{
			name:   "text",
			in:     client(true, ws.OpText, []byte("hello")),
			events: []string{`msg 1 "hello"`},
		},
		{
			name:   "binary keeps opcode",
			in:     client(true, ws.OpBinary, []byte{0xff, 0}),
			events: []string{`msg 2 "\xff\x00"`},
		},
		{
			name:   "empty text",
			in:     client(true, ws.OpText, nil),
			events: []string{`msg 1 ""`},
		},
		{
			name:   "16-bit length",
			in:     client(true, ws.OpBinary, bytes.Repeat([]byte{7}, 300)),
			events: []string{fmt.Sprintf("msg 2 %q", bytes.Repeat([]byte{7}, 300))},
		},
		{
			name:   "64-bit length",
			in:     client(true, ws.OpBinary, big),
			max:    1 << 20,
			events: []string{fmt.Sprintf("msg 2 %q", big)},
		},
		{
			name: "two messages in one buffer",
			in:   cat(client(true, ws.OpText, []byte("a")), client(true, ws.OpText, []byte("b"))),
			events: []string{
				`msg 1 "a"`,
				`msg 1 "b"`,
			},
		},
		{
			name: "fragments with interleaved ping and pong",
			in: cat(
				client(false, ws.OpText, []byte("he")),
				client(true, ws.OpPing, []byte("p")),
				client(false, ws.OpContinuation, []byte("ll")),
				client(true, ws.OpPong, []byte("q")),
				client(true, ws.OpContinuation, []byte("o")),
			),
			events: []string{`ping "p"`, `pong "q"`, `msg 1 "hello"`},
		},
		{
			name: "utf-8 rune split across fragments",
			in: cat(
				client(false, ws.OpText, []byte("\xce")),
				client(true, ws.OpContinuation, []byte("\xba")),
			),
			events: []string{`msg 1 "κ"`},
		},
		{
			name:   "unmasked frame",
			in:     raw(0x81, false, []byte("x")),
			code:   ws.StatusProtocolError,
			events: nil,
		},
		{
			name: "rsv1 without extension",
			in:   raw(0xc1, true, []byte("x")),
			code: ws.StatusProtocolError,
		},
		{
			name: "rsv3",
			in:   raw(0x91, true, []byte("x")),
			code: ws.StatusProtocolError,
		},
		{
			name: "reserved data opcode 3",
			in:   raw(0x83, true, nil),
			code: ws.StatusProtocolError,
		},
		{
			name: "reserved control opcode 0xb",
			in:   raw(0x8b, true, nil),
			code: ws.StatusProtocolError,
		},
		{
			name: "ping over 125 bytes",
			in:   raw(0x89, true, bytes.Repeat([]byte("p"), 126)),
			code: ws.StatusProtocolError,
		},
		{
			name: "fragmented ping",
			in:   raw(0x09, true, []byte("p")),
			code: ws.StatusProtocolError,
		},
		{
			name: "continuation with nothing to continue",
			in:   client(true, ws.OpContinuation, []byte("x")),
			code: ws.StatusProtocolError,
		},
		{
			name: "new message while fragmented",
			in:   cat(client(false, ws.OpText, []byte("a")), client(true, ws.OpText, []byte("b"))),
			code: ws.StatusProtocolError,
		},
		{
			name: "64-bit length with top bit set",
			in:   []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
			code: ws.StatusProtocolError,
		},
		{
			name: "invalid utf-8 text",
			in:   client(true, ws.OpText, []byte{0xc3, 0x28}),
			code: ws.StatusInvalidFramePayloadData,
		},
		{
			name: "invalid utf-8 across fragments",
			in: cat(
				client(false, ws.OpText, []byte("ok")),
				client(true, ws.OpContinuation, []byte{0xed, 0xa0, 0x80}), // surrogate
			),
			code: ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "invalid utf-8 is fine in binary",
			in:     client(true, ws.OpBinary, []byte{0xc3, 0x28}),
			events: []string{`msg 2 "\xc3("`},
		},
		{
			name: "message over the limit",
			in:   client(true, ws.OpBinary, make([]byte, 101)),
			max:  100,
			code: ws.StatusMessageTooBig,
		},
		{
			name: "fragments over the limit",
			in: cat(
				client(false, ws.OpBinary, make([]byte, 60)),
				client(true, ws.OpContinuation, make([]byte, 41)),
			),
			max:  100,
			code: ws.StatusMessageTooBig,
		},
		{
			name:   "message at the limit",
			in:     client(true, ws.OpBinary, []byte("0123456789")),
			max:    10,
			events: []string{`msg 2 "0123456789"`},
		},
		{
			name: "close without payload",
			in:   client(true, ws.OpClose, nil),
			code: ws.StatusNoStatusRcvd,
			peer: true,
		},
		{
			name: "close normal with reason",
			in:   client(true, ws.OpClose, closeBody(1000, "bye")),
			code: ws.StatusNormalClosure,
			peer: true,
		},
		{
			name: "close private code",
			in:   client(true, ws.OpClose, closeBody(4999, "")),
			code: 4999,
			peer: true,
		},
		{
			name: "close 1-byte payload",
			in:   client(true, ws.OpClose, []byte{3}),
			code: ws.StatusProtocolError,
		},
		{
			name: "close invalid utf-8 reason",
			in:   client(true, ws.OpClose, closeBody(1000, "\xff")),
			code: ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "frames after close are not parsed",
			in:     cat(client(true, ws.OpClose, closeBody(1001, "")), client(true, ws.OpText, []byte("late"))),
			code:   ws.StatusGoingAway,
			peer:   true,
			events: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectParse(t, "Parse", (*Parser).Parse, tc.max, tc.in, tc.events, tc.code, tc.peer)
		})
	}
}

// expectParse runs parse (Parse or ParseServer) on in with a fresh Parser
// and checks the events it reported and how it ended: every byte consumed
// with no error when code is 0, else a close with code (peer: the peer's).
func expectParse(t *testing.T, name string, parse func(*Parser, []byte, Handler) (int, error), max int, in []byte, events []string, code ws.StatusCode, peer bool) {
	t.Helper()
	p := Parser{MaxMessage: max}
	var r rec
	n, err := parse(&p, in, &r)
	if got, want := strings.Join(r.events, "|"), strings.Join(events, "|"); got != want {
		t.Errorf("events\n got %s\nwant %s", got, want)
	}
	if code == 0 {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n != len(in) {
			t.Fatalf("consumed %d of %d bytes", n, len(in))
		}
		return
	}
	ce, ok := AsClose(err)
	if !ok {
		t.Fatalf("err = %v, want close %d", err, code)
	}
	if ce.Code != code || ce.Peer != peer {
		t.Fatalf("close = %d peer=%v (%s), want %d peer=%v", ce.Code, ce.Peer, ce.Reason, code, peer)
	}
}

func TestCloseCodes(t *testing.T) {
	valid := []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999}
	invalid := []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}
	for _, c := range valid {
		p := Parser{}
		_, err := p.Parse(client(true, ws.OpClose, closeBody(c, "")), &rec{})
		if ce, ok := AsClose(err); !ok || !ce.Peer || ce.Code != ws.StatusCode(c) {
			t.Errorf("code %d: got %v, want peer close echoing it", c, err)
		}
	}
	for _, c := range invalid {
		p := Parser{}
		_, err := p.Parse(client(true, ws.OpClose, closeBody(c, "")), &rec{})
		if ce, ok := AsClose(err); !ok || ce.Peer || ce.Code != ws.StatusProtocolError {
			t.Errorf("code %d: got %v, want protocol error 1002", c, err)
		}
	}
}

// TestParseIncremental feeds a stream one byte at a time, the way a client
// that trickles bytes would, and checks Need never asks for less than what
// the next step requires.
func TestParseIncremental(t *testing.T) {
	stream := cat(
		client(true, ws.OpText, []byte("one")),
		client(false, ws.OpBinary, bytes.Repeat([]byte("a"), 200)),
		client(true, ws.OpPing, []byte("x")),
		client(true, ws.OpContinuation, bytes.Repeat([]byte("b"), 70_000)),
		client(true, ws.OpText, []byte("two")),
	)
	p := Parser{MaxMessage: 1 << 20}
	var r rec
	var buf []byte
	for i := 0; i < len(stream); i++ {
		buf = append(buf, stream[i])
		n, err := p.Parse(buf, &r)
		if err != nil {
			t.Fatalf("at byte %d: %v", i, err)
		}
		buf = buf[n:]
		if len(buf) > 0 && p.Need() <= len(buf) {
			t.Fatalf("at byte %d: Need()=%d with %d bytes buffered and no progress", i, p.Need(), len(buf))
		}
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
	want := []string{
		`msg 1 "one"`,
		`ping "x"`,
		fmt.Sprintf("msg 2 %q", append(bytes.Repeat([]byte("a"), 200), bytes.Repeat([]byte("b"), 70_000)...)),
		`msg 1 "two"`,
	}
	if got := strings.Join(r.events, "|"); got != strings.Join(want, "|") {
		t.Fatalf("events differ: got %d events, want %d", len(r.events), len(want))
	}
	if p.Pending() {
		t.Fatal("parser still has a message pending")
	}
}

func TestCompile(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'z'}, n)
		b := Compile(ws.OpBinary, payload)
		// Read it back with gobwas/ws, an independent decoder.
		f, err := ws.ReadFrame(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !f.Header.Fin || f.Header.Masked || f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, payload) {
			t.Fatalf("n=%d: decoded %+v", n, f.Header)
		}
		if len(b) != HeaderSize(n)+n {
			t.Fatalf("n=%d: len %d, want %d", n, len(b), HeaderSize(n)+n)
		}
	}
	long := strings.Repeat("é", 100) // 200 bytes: must be cut on a rune boundary
	f, err := ws.ReadFrame(bytes.NewReader(Close(ws.StatusGoingAway, long)))
	if err != nil {
		t.Fatal(err)
	}
	code, reason := ws.ParseCloseFrameData(f.Payload)
	if code != ws.StatusGoingAway || len(f.Payload) > 125 || ws.CheckCloseFrameData(code, reason) != nil {
		t.Fatalf("close frame: code %d, %d bytes, reason %q", code, len(f.Payload), reason)
	}
}

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		one := client(true, ws.OpBinary, bytes.Repeat([]byte{1}, size))
		stream := bytes.Repeat(one, 16)
		buf := make([]byte, len(stream))
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			var p Parser
			for b.Loop() {
				copy(buf, stream)
				if _, err := p.Parse(buf, discard{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type discard struct{}

func (discard) Message(ws.OpCode, []byte) error { return nil }
func (discard) Ping([]byte)                     {}
func (discard) Pong([]byte)                     {}
