package frame

import (
	"bytes"
	"slices"
	"testing"

	"github.com/gobwas/ws"
)

// FuzzParse checks, for any input, that Parse never panics, never consumes
// more than it was given, and gives the same result whether the bytes
// arrive at once or split at an arbitrary point: a server reads whatever
// the socket has, so any split is possible.
func FuzzParse(f *testing.F) {
	seeds := [][]byte{
		client(true, ws.OpText, []byte("hello")),
		client(true, ws.OpBinary, bytes.Repeat([]byte{9}, 300)),
		cat(client(false, ws.OpText, []byte("he")), client(true, ws.OpPing, []byte("p")), client(true, ws.OpContinuation, []byte("llo"))),
		client(true, ws.OpClose, closeBody(1000, "bye")),
		client(true, ws.OpClose, []byte{1}),
		client(true, ws.OpText, []byte{0xc3, 0x28}),
		raw(0x81, false, []byte("unmasked")),
		raw(0xc1, true, []byte("rsv")),
		raw(0x89, true, bytes.Repeat([]byte("p"), 126)),
		{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
		{0x82, 0xfe, 0xff},
	}
	for i, s := range seeds {
		f.Add(s, uint16(i*7), false)
	}
	// Compressed messages (permessage-deflate negotiated): whole,
	// fragmented, a bomb, a broken stream, RSV1 where it may not be.
	z := deflated(bytes.Repeat([]byte("compress me "), 50))
	for i, s := range [][]byte{
		raw(0xc1, true, z),
		cat(raw(0x42, true, z[:3]), client(true, ws.OpPing, nil), raw(0x80, true, z[3:])),
		raw(0xc2, true, deflated(make([]byte, 200_000))),
		raw(0xc1, true, []byte{0xff, 0xfe, 0x01}),
		cat(raw(0x01, true, []byte("a")), raw(0xc0, true, z)),
	} {
		f.Add(s, uint16(i*5), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16, deflate bool) {
		checkSplit(t, in, split, deflate, (*Parser).Parse)
	})
}

// FuzzParseServer is FuzzParse for ParseServer, a client's parser of
// server frames: fanout-bench reads whatever its sockets have, too.
func FuzzParseServer(f *testing.F) {
	seeds := [][]byte{
		server(true, ws.OpBinary, []byte("hello")),
		server(true, ws.OpText, bytes.Repeat([]byte{'a'}, 300)),
		cat(server(false, ws.OpText, []byte("he")), server(true, ws.OpPing, []byte("p")), server(true, ws.OpContinuation, []byte("llo"))),
		cat(server(true, ws.OpBinary, []byte("a")), server(true, ws.OpPong, nil), server(true, ws.OpBinary, []byte("b"))),
		Close(ws.StatusPolicyViolation, "slow consumer"),
		server(true, ws.OpClose, []byte{1}),
		server(true, ws.OpText, []byte{0xc3, 0x28}),
		client(true, ws.OpBinary, []byte("masked")),
		raw(0xc2, false, []byte("rsv")),
		raw(0x89, false, bytes.Repeat([]byte("p"), 126)),
		{0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1},
		{0x82, 0x7e, 0xff},
		raw(0xc1, false, deflated([]byte("a compressed server frame, a compressed server frame"))),
	}
	for i, s := range seeds {
		f.Add(s, uint16(i*7), i == len(seeds)-1)
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16, deflate bool) {
		checkSplit(t, in, split, deflate, (*Parser).ParseServer)
	})
}

// checkSplit parses in whole and split at split (modulo its length) and
// fails t unless both give the same events, bytes consumed and close code,
// any error being a CloseError.
func checkSplit(t *testing.T, in []byte, split uint16, deflate bool, parse parseFunc) {
	t.Helper()
	whole, wholeN, wholeErr := parseAll(in, len(in), deflate, parse)
	cut := 0
	if len(in) > 0 {
		cut = int(split) % (len(in) + 1)
	}
	parts, partsN, partsErr := parseAll(in, cut, deflate, parse)
	if wholeN > len(in) || partsN > len(in) {
		t.Fatalf("consumed more than given: %d, %d of %d", wholeN, partsN, len(in))
	}
	if !slices.Equal(whole, parts) {
		t.Fatalf("events differ when split at %d:\n%q\n%q", cut, whole, parts)
	}
	if wholeN != partsN || closeCode(wholeErr) != closeCode(partsErr) {
		t.Fatalf("split at %d: consumed %d vs %d, close %d vs %d", cut, wholeN, partsN, closeCode(wholeErr), closeCode(partsErr))
	}
	if wholeErr != nil {
		if _, ok := AsClose(wholeErr); !ok {
			t.Fatalf("error is not a CloseError: %v", wholeErr)
		}
	}
}

// parseFunc is (*Parser).Parse or (*Parser).ParseServer.
type parseFunc func(*Parser, []byte, Handler) (int, error)

// parseAll feeds in[:cut] then the rest, as two reads would, keeping the
// unconsumed tail between calls like the server does; deflate as if the
// connection negotiated permessage-deflate.
func parseAll(in []byte, cut int, deflate bool, parse parseFunc) (events []string, consumed int, err error) {
	p := Parser{MaxMessage: 1 << 16, Deflate: deflate}
	var r rec
	var buf []byte
	for _, chunk := range [][]byte{in[:cut], in[cut:]} {
		buf = append(buf, chunk...)
		n, e := parse(&p, buf, &r)
		consumed += n
		buf = buf[n:]
		if e != nil {
			return r.events, consumed, e
		}
	}
	return r.events, consumed, nil
}

func closeCode(err error) ws.StatusCode {
	if ce, ok := AsClose(err); ok {
		return ce.Code
	}
	return 0
}
