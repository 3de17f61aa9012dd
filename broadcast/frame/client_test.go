package frame

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// server builds an unmasked server frame with gobwas/ws, an encoder
// independent of the parser under test.
func server(fin bool, op ws.OpCode, p []byte) []byte {
	return ws.MustCompileFrame(ws.NewFrame(op, fin, append([]byte(nil), p...)))
}

// readMasked decodes one client frame with gobwas/ws, an independent
// decoder, and unmasks its payload; the header keeps the mask key.
func readMasked(t *testing.T, b []byte) ws.Frame {
	t.Helper()
	r := bytes.NewReader(b)
	f, err := ws.ReadFrame(r)
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes after the frame", r.Len())
	}
	if !f.Header.Masked {
		t.Fatal("client frame not masked")
	}
	hdr := f.Header
	f = ws.UnmaskFrame(f)
	f.Header = hdr
	return f
}

func TestAppendMasked(t *testing.T) {
	key := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'z'}, n)
		prefix := []byte("already here")
		b := AppendMasked(append([]byte(nil), prefix...), ws.OpBinary, payload, key)
		if !bytes.HasPrefix(b, prefix) {
			t.Fatalf("n=%d: dst's bytes were overwritten", n)
		}
		f := readMasked(t, b[len(prefix):])
		if !f.Header.Fin || f.Header.Rsv != 0 || f.Header.OpCode != ws.OpBinary || f.Header.Mask != key || !bytes.Equal(f.Payload, payload) {
			t.Fatalf("n=%d: decoded %+v", n, f.Header)
		}
		if want := len(prefix) + HeaderSize(n) + 4 + n; len(b) != want {
			t.Fatalf("n=%d: len %d, want %d", n, len(b), want)
		}
		if !bytes.Equal(payload, bytes.Repeat([]byte{'z'}, n)) {
			t.Fatalf("n=%d: payload modified", n)
		}
	}
}

func TestAppendMaskedRaw(t *testing.T) {
	for _, tc := range []struct {
		b0  byte
		fin bool
		rsv byte
		op  ws.OpCode
	}{
		{0x01, false, 0, ws.OpText},         // first fragment
		{0x80, true, 0, ws.OpContinuation},  // last fragment
		{0xc1, true, 4, ws.OpText},          // rsv1
		{0x92, true, 1, ws.OpBinary},        // rsv3
		{0x83, true, 0, ws.OpCode(3)},       // reserved data opcode
		{0x09, false, 0, ws.OpPing},         // fragmented ping
		{0xff, true, 7, ws.OpCode(0x0f)},    // everything set
		{0x00, false, 0, ws.OpContinuation}, // nothing set
	} {
		b := AppendMaskedRaw(nil, tc.b0, []byte("xy"), [4]byte{1, 2, 3, 4})
		if b[0] != tc.b0 {
			t.Fatalf("b0 %#x: first byte %#x", tc.b0, b[0])
		}
		// gobwas reads any header; only the checks refuse these.
		f := readMasked(t, b)
		if f.Header.Fin != tc.fin || f.Header.Rsv != tc.rsv || f.Header.OpCode != tc.op || string(f.Payload) != "xy" {
			t.Fatalf("b0 %#x: decoded %+v %q", tc.b0, f.Header, f.Payload)
		}
	}
}

func TestCompileMasked(t *testing.T) {
	a := CompileMasked(ws.OpText, []byte("hello"))
	b := CompileMasked(ws.OpText, []byte("hello"))
	fa, fb := readMasked(t, a), readMasked(t, b)
	if string(fa.Payload) != "hello" || !fa.Header.Fin || fa.Header.OpCode != ws.OpText {
		t.Fatalf("decoded %+v %q", fa.Header, fa.Payload)
	}
	if fa.Header.Mask == fb.Header.Mask {
		t.Fatalf("two frames share mask key %x", fa.Header.Mask)
	}
	if cap(a) != len(a) {
		t.Fatalf("cap %d, len %d: not sized exactly", cap(a), len(a))
	}
}

func TestCloseMasked(t *testing.T) {
	if f := readMasked(t, CloseMasked(ws.StatusNoStatusRcvd, "ignored")); f.Header.OpCode != ws.OpClose || len(f.Payload) != 0 {
		t.Fatalf("1005: %+v %q, want an empty close", f.Header, f.Payload)
	}
	long := strings.Repeat("é", 100) // 200 bytes: must be cut on a rune boundary
	f := readMasked(t, CloseMasked(ws.StatusGoingAway, long))
	code, reason := ws.ParseCloseFrameData(f.Payload)
	if f.Header.OpCode != ws.OpClose || code != ws.StatusGoingAway || len(f.Payload) > 125 || ws.CheckCloseFrameData(code, reason) != nil {
		t.Fatalf("close frame: code %d, %d bytes, reason %q", code, len(f.Payload), reason)
	}
}

func TestParseServer(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70_000)
	for _, tc := range []struct {
		name   string
		in     []byte
		max    int
		events []string
		code   ws.StatusCode // 0: no close
		peer   bool
	}{
		{name: "text", in: server(true, ws.OpText, []byte("hello")), events: []string{`msg 1 "hello"`}},
		{name: "binary keeps opcode", in: server(true, ws.OpBinary, []byte{0xff, 0}), events: []string{`msg 2 "\xff\x00"`}},
		{name: "empty binary", in: server(true, ws.OpBinary, nil), events: []string{`msg 2 ""`}},
		{name: "frame from Compile", in: Compile(ws.OpBinary, []byte("ours")), events: []string{`msg 2 "ours"`}},
		{
			name:   "16-bit length",
			in:     server(true, ws.OpBinary, bytes.Repeat([]byte{7}, 300)),
			events: []string{fmt.Sprintf("msg 2 %q", bytes.Repeat([]byte{7}, 300))},
		},
		{
			name:   "64-bit length",
			in:     server(true, ws.OpBinary, big),
			max:    1 << 20,
			events: []string{fmt.Sprintf("msg 2 %q", big)},
		},
		{
			name:   "two messages and a pong in one buffer",
			in:     cat(server(true, ws.OpBinary, []byte("a")), server(true, ws.OpPong, nil), server(true, ws.OpBinary, []byte("b"))),
			events: []string{`msg 2 "a"`, `pong ""`, `msg 2 "b"`},
		},
		{
			name: "fragments with an interleaved ping",
			in: cat(
				server(false, ws.OpText, []byte("he")),
				server(true, ws.OpPing, []byte("p")),
				server(true, ws.OpContinuation, []byte("llo")),
			),
			events: []string{`ping "p"`, `msg 1 "hello"`},
		},
		{name: "masked frame", in: client(true, ws.OpText, []byte("x")), code: ws.StatusProtocolError},
		{name: "rsv1 without extension", in: raw(0xc2, false, []byte("x")), code: ws.StatusProtocolError},
		{name: "reserved data opcode 3", in: raw(0x83, false, nil), code: ws.StatusProtocolError},
		{name: "ping over 125 bytes", in: raw(0x89, false, bytes.Repeat([]byte("p"), 126)), code: ws.StatusProtocolError},
		{name: "fragmented ping", in: raw(0x09, false, []byte("p")), code: ws.StatusProtocolError},
		{name: "continuation with nothing to continue", in: server(true, ws.OpContinuation, []byte("x")), code: ws.StatusProtocolError},
		{name: "64-bit length with top bit set", in: []byte{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1}, code: ws.StatusProtocolError},
		{name: "invalid utf-8 text", in: server(true, ws.OpText, []byte{0xc3, 0x28}), code: ws.StatusInvalidFramePayloadData},
		{name: "message over the limit", in: server(true, ws.OpBinary, make([]byte, 101)), max: 100, code: ws.StatusMessageTooBig},
		{name: "close without payload", in: server(true, ws.OpClose, nil), code: ws.StatusNoStatusRcvd, peer: true},
		{name: "close from Close", in: Close(ws.StatusPolicyViolation, "slow consumer"), code: ws.StatusPolicyViolation, peer: true},
		{name: "close with 1006 on the wire", in: server(true, ws.OpClose, closeBody(1006, "")), code: ws.StatusProtocolError},
		{
			name: "frames after close are not parsed",
			in:   cat(server(true, ws.OpClose, closeBody(1001, "")), server(true, ws.OpText, []byte("late"))),
			code: ws.StatusGoingAway,
			peer: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectParse(t, "ParseServer", (*Parser).ParseServer, tc.max, tc.in, tc.events, tc.code, tc.peer)
		})
	}
}

// TestParseServerKeepsTail checks the contract a client's read loop relies
// on: complete frames are consumed, a partial one is left for next time and
// Need says how much of it must arrive.
func TestParseServerKeepsTail(t *testing.T) {
	one := server(true, ws.OpBinary, []byte("one"))
	two := server(true, ws.OpBinary, bytes.Repeat([]byte("2"), 300))
	buf := cat(one, two[:7])
	var p Parser
	var r rec
	n, err := p.ParseServer(buf, &r)
	if err != nil || n != len(one) || len(r.events) != 1 {
		t.Fatalf("n=%d err=%v events=%q; want %d, nil, one message", n, err, r.events, len(one))
	}
	if p.Need() != len(two) {
		t.Fatalf("Need() = %d, want %d", p.Need(), len(two))
	}
	n, err = p.ParseServer(two, &r)
	if err != nil || n != len(two) || len(r.events) != 2 {
		t.Fatalf("second call: n=%d err=%v events=%d", n, err, len(r.events))
	}
}

// The bench counts every delivery through ParseServer: it must not
// allocate for a frame that is not part of a fragmented message.
func TestParseServerAllocs(t *testing.T) {
	stream := bytes.Repeat(cat(server(true, ws.OpBinary, make([]byte, 64)), server(true, ws.OpPing, nil)), 8)
	var p Parser
	if a := testing.AllocsPerRun(100, func() {
		if _, err := p.ParseServer(stream, discard{}); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("%v allocations per call of 16 frames, want 0", a)
	}
}

func BenchmarkParseServer(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		stream := bytes.Repeat(server(true, ws.OpBinary, bytes.Repeat([]byte{1}, size)), 16)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			var p Parser
			for b.Loop() {
				if _, err := p.ParseServer(stream, discard{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendMasked(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		payload := bytes.Repeat([]byte{1}, size)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			var buf []byte
			for b.Loop() {
				buf = AppendMasked(buf[:0], ws.OpBinary, payload, ws.NewMask())
			}
		})
	}
}

func BenchmarkCompileMasked(b *testing.B) {
	payload := bytes.Repeat([]byte{1}, 64)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		_ = CompileMasked(ws.OpBinary, payload)
	}
}
