package broadcast_test

import (
	"bytes"
	"compress/flate"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// compressible is a JSON payload that deflate shrinks a lot.
var compressible = []byte(`[` + strings.Repeat(`{"symbol":"ACME","price":101.25,"volume":1200},`, 40) + `{}]`)

const noTakeover = "permessage-deflate;server_no_context_takeover;client_no_context_takeover"

// gorilla with EnableCompression negotiates permessage-deflate without
// context takeover, gets messages intact (compressed on the wire: fewer
// bytes than a plain client's), and its compressed messages are inflated
// and published.
func TestDeflateGorilla(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	d := websocket.Dialer{EnableCompression: true}
	zc, resp, err := d.Dial(s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zc.Close()
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != noTakeover {
		t.Fatalf("extensions %q, want %q", got, noTakeover)
	}
	plain := dialGorilla(t, s.url)
	s.waitConns(t, 2)

	before := s.Stats().BytesOut
	publishKind(t, s, broadcast.KindJSON, compressible)
	expectMessage(t, zc, websocket.TextMessage, compressible)
	expectMessage(t, plain, websocket.TextMessage, compressible)
	sent := s.Stats().BytesOut - before
	if max := uint64(len(compressible)) + 4 + uint64(len(compressible))/4; sent > max {
		t.Fatalf("%d bytes out for one plain and one compressed copy of %d bytes: the deflate client got it plain", sent, len(compressible))
	}

	zc.EnableWriteCompression(true)
	if err := zc.WriteMessage(websocket.TextMessage, compressible); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, plain, websocket.TextMessage, compressible)
	expectMessage(t, zc, websocket.TextMessage, compressible)
}

// coder/websocket with CompressionNoContextTakeover, both ways; and a
// small message goes out plain to a deflate client (under
// -compress-min-bytes), which coder reads as well.
func TestDeflateCoder(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := coder.Dial(ctx, s.url, &coder.DialOptions{CompressionMode: coder.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, "permessage-deflate") {
		t.Fatalf("extensions %q", got)
	}
	s.waitConns(t, 1)
	for _, m := range [][]byte{compressible, []byte("short")} {
		publishKind(t, s, broadcast.KindText, m)
		_, got, err := c.Read(ctx)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("read %q %v, want %q", trunc(got), err, trunc(m))
		}
	}
	if err := c.Write(ctx, coder.MessageText, compressible); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || !bytes.Equal(got, compressible) {
		t.Fatalf("own message back: %q %v", trunc(got), err)
	}
}

func publishKind(t testing.TB, s *testServer, kind broadcast.Kind, p []byte) {
	t.Helper()
	if _, err := s.Publish(broadcast.Message{Kind: kind, Payload: p}); err != nil {
		t.Fatal(err)
	}
}

// Offers the server cannot take as they are: context takeover is answered
// with no takeover; a smaller server window than deflate's is declined
// (plain connection); -compression off accepts nothing.
func TestDeflateNegotiation(t *testing.T) {
	on := startServer(t, broadcast.Config{})
	off := startServer(t, broadcast.Config{NoCompression: true})
	for _, tc := range []struct {
		name  string
		s     *testServer
		offer string
		want  string
	}{
		{"plain offer", on, "permessage-deflate", noTakeover},
		{"browser offer", on, "permessage-deflate; client_max_window_bits", noTakeover},
		{"small server window", on, "permessage-deflate; server_max_window_bits=10", ""},
		{"fallback offer", on, "permessage-deflate; server_max_window_bits=10, permessage-deflate", noTakeover},
		{"bad parameter", on, "permessage-deflate; server_max_window_bits=99", ""}, // declined (RFC 7692 7.1.1)
		{"off", off, "permessage-deflate", ""},
	} {
		rc := dialRawWithStatus(t, tc.s.addr, handshakeRequest(tc.s.addr, "/ws", "Sec-WebSocket-Extensions: "+tc.offer))
		if rc.status != http.StatusSwitchingProtocols || rc.header.Get("Sec-WebSocket-Extensions") != tc.want {
			t.Errorf("%s: %d, extensions %q, want %q", tc.name, rc.status, rc.header.Get("Sec-WebSocket-Extensions"), tc.want)
		}
	}
}

// Bad compressed input closes that connection only: a bomb with 1009
// before it costs more than -max-message, a broken stream with 1007; RSV1
// without the extension stays 1002. Counted by reason.
func TestDeflateBadInput(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxMessage: 64 << 10})
	var bomb bytes.Buffer
	w, _ := flate.NewWriter(&bomb, flate.BestCompression)
	w.Write(make([]byte, 64<<20)) // 64 MiB of zeros: about 64 KiB compressed
	w.Flush()
	z := bytes.TrimSuffix(bomb.Bytes(), []byte{0, 0, 0xff, 0xff})
	if len(z) > 64<<10 {
		z = z[:64<<10-10] // what fits in a message: still inflates far past the limit
	}
	bystander := dialGorilla(t, s.url)
	for _, tc := range []struct {
		name    string
		offer   bool
		payload []byte
		code    ws.StatusCode
	}{
		{"bomb", true, z, ws.StatusMessageTooBig},
		{"broken", true, []byte{0xff, 0xff, 0xff, 0xff}, ws.StatusInvalidFramePayloadData},
		{"rsv1 without the extension", false, []byte("x"), ws.StatusProtocolError},
	} {
		var extra []string
		if tc.offer {
			extra = append(extra, "Sec-WebSocket-Extensions: permessage-deflate")
		}
		rc := dialRawWith(t, s.addr, handshakeRequest(s.addr, "/ws", extra...))
		rc.send(t, masked(0xc2, tc.payload))
		rc.expectClose(t, tc.code)
	}
	publishKind(t, s, broadcast.KindText, []byte("still fine"))
	expectMessage(t, bystander, websocket.TextMessage, []byte("still fine"))
	waitFor(t, "a close of each reason", func() bool {
		st := s.Stats()
		return st.Closed(broadcast.ReasonTooBig) == 1 && st.Closed(broadcast.ReasonInvalidData) == 1 && st.Closed(broadcast.ReasonProtocolError) == 1
	})
}

// rawAnswer is a handshake's answer, read without failing on a refusal.
type rawAnswer struct {
	status int
	header http.Header
}

// dialRawWithStatus sends req and reads the answer's status and header.
func dialRawWithStatus(t testing.TB, addr, req string) rawAnswer {
	t.Helper()
	rc := dialRawConn(t, addr)
	if _, err := io.WriteString(rc, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return rawAnswer{resp.StatusCode, resp.Header}
}
