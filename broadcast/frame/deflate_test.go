package frame

import (
	"bytes"
	"compress/flate"
	"fmt"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// deflated compresses p as a permessage-deflate message body (tail cut).
func deflated(p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), tail)
}

// A compressed frame, as CompileDeflate makes it, decodes with gobwas's
// wsflate (an independent inflater) to the payload; ok is false when
// compressing does not shrink it.
func TestCompileDeflate(t *testing.T) {
	payload := []byte(strings.Repeat(`{"price":101.25,"symbol":"ACME"},`, 40))
	f, ok := CompileDeflate(ws.OpText, payload)
	if !ok || len(f) >= len(payload) {
		t.Fatalf("ok %v, %d bytes for a %d-byte payload", ok, len(f), len(payload))
	}
	fr, err := ws.ReadFrame(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	if fr.Header.Rsv != 4 || !fr.Header.Fin || fr.Header.OpCode != ws.OpText {
		t.Fatalf("header %+v, want FIN, RSV1, text", fr.Header)
	}
	got, err := wsflate.DecompressFrame(fr)
	if err != nil || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("wsflate decodes %q, %v", got.Payload, err)
	}
	if _, ok := CompileDeflate(ws.OpBinary, []byte{0x8f, 0x13, 0xe2}); ok {
		t.Fatal("3 random bytes compressed smaller")
	}
}

// With Deflate, a compressed message (whole or fragmented) is inflated
// before it is delivered; a bomb over MaxMessage once inflated is 1009, a
// broken stream 1007, RSV1 on a continuation or without Deflate 1002.
func TestParseDeflate(t *testing.T) {
	text := []byte(strings.Repeat("hello deflate ", 100))
	z := deflated(text)
	bomb := deflated(make([]byte, 1<<20))
	for _, tc := range []struct {
		name    string
		deflate bool
		in      []byte
		events  []string
		code    ws.StatusCode
	}{
		{"compressed", true, raw(0xc1, true, z), []string{fmt.Sprintf("msg 1 %q", text)}, 0},
		{"fragmented", true, cat(raw(0x41, true, z[:5]), raw(0x80, true, z[5:])), []string{fmt.Sprintf("msg 1 %q", text)}, 0},
		{"plain still fine", true, client(true, ws.OpText, []byte("plain")), []string{`msg 1 "plain"`}, 0},
		{"bomb", true, raw(0xc2, true, bomb), nil, ws.StatusMessageTooBig},
		{"broken", true, raw(0xc1, true, []byte{0xff, 0xff, 0xff}), nil, ws.StatusInvalidFramePayloadData},
		{"rsv1 on a continuation", true, cat(raw(0x01, true, []byte("a")), raw(0xc0, true, z)), nil, ws.StatusProtocolError},
		{"rsv1 on a ping", true, raw(0xc9, true, nil), nil, ws.StatusProtocolError},
		{"rsv1 without the extension", false, raw(0xc1, true, z), nil, ws.StatusProtocolError},
		{"invalid UTF-8 inside", true, raw(0xc1, true, deflated([]byte{0xc3, 0x28})), nil, ws.StatusInvalidFramePayloadData},
	} {
		p := Parser{MaxMessage: 64 << 10, Deflate: tc.deflate}
		var r rec
		_, err := p.Parse(append([]byte(nil), tc.in...), &r)
		if got := closeCode(err); got != tc.code || strings.Join(r.events, "|") != strings.Join(tc.events, "|") {
			t.Errorf("%s: events %q close %d (%v), want %q close %d", tc.name, r.events, got, err, tc.events, tc.code)
		}
	}
}

// Inflating allocates nothing per message once the pools are warm.
func BenchmarkInflate(b *testing.B) {
	z := raw(0xc1, true, deflated([]byte(strings.Repeat(`{"a":1,"b":"two"}`, 60))))
	var r discard
	b.ReportAllocs()
	for b.Loop() {
		p := Parser{Deflate: true}
		if _, err := p.Parse(append([]byte(nil), z...), &r); err != nil {
			b.Fatal(err)
		}
	}
}
