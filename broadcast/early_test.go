package broadcast_test

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast"
)

// A client that sends a frame with its upgrade request, without waiting
// for the 101 (RFC 6455 4.1 says it must wait), gets its 101 and then a
// 1002 that says why: the upgrader read those bytes ahead, and carrying on
// would lose them without a word. One that waits is served as always.
func TestDataBeforeThe101IsRefused(t *testing.T) {
	s := startServer(t, broadcast.Config{CloseTimeout: 200 * time.Millisecond})
	for _, early := range []bool{true, false} {
		nc, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		req := []byte(handshakeRequest(s.addr, "/ws"))
		if early {
			req = append(req, masked(0x81, []byte("too soon"))...)
		}
		if _, err := nc.Write(req); err != nil {
			t.Fatal(err)
		}
		rc := &rawClient{Conn: nc, br: bufio.NewReader(nc)}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("early=%v: handshake %v %v", early, resp, err)
		}
		if !early {
			rc.send(t, masked(0x81, []byte("in time")))
			if f := rc.next(t); f.Header.OpCode != ws.OpText || string(f.Payload) != "in time" {
				t.Fatalf("got %v %q, want the message back", f.Header.OpCode, f.Payload)
			}
			continue
		}
		if reason := rc.expectClose(t, ws.StatusProtocolError); reason != "data sent before the handshake completed" {
			t.Fatalf("close reason %q", reason)
		}
	}
}
