package broadcast_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/internal/servertest"
)

// testServer is a real server on a random loopback port.
type testServer struct {
	*broadcast.Server
	addr string // host:port
	url  string // ws://host:port/ws
}

func quietLogger() *slog.Logger { return servertest.QuietLogger() }

func startServer(t testing.TB, cfg broadcast.Config) *testServer {
	t.Helper()
	s := servertest.Start(t, cfg)
	return &testServer{Server: s.Server, addr: s.Addr, url: s.URL}
}

// waitFor polls cond until it holds or 10s pass (servertest.WaitFor).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	servertest.WaitFor(t, what, cond)
}

// waitConns waits until the server's table holds n connections.
func (s *testServer) waitConns(t testing.TB, n int) {
	t.Helper()
	servertest.WaitConns(t, s.Server, n)
}

func dialGorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	return servertest.DialGorilla(t, url)
}

// expectMessage reads one message with gorilla within 10s.
func expectMessage(t testing.TB, c *websocket.Conn, wantType int, want []byte) {
	t.Helper()
	servertest.ExpectMessage(t, c, wantType, want)
}

func trunc(b []byte) string { return servertest.Trunc(b) }

// rawClient speaks WebSocket byte by byte, for what real clients refuse
// to send.
type rawClient struct {
	net.Conn
	br *bufio.Reader
}

func handshakeRequest(addr, path string, extra ...string) string {
	h := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\n"
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialRawWith(t, addr, handshakeRequest(addr, "/ws"))
}

// dialRawWith upgrades with the handshake request req.
func dialRawWith(t testing.TB, addr, req string) *rawClient {
	t.Helper()
	rc := dialRawConn(t, addr)
	nc := rc.Conn
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d", resp.StatusCode)
	}
	return rc
}

// dialRawConn connects, closed when the test ends; nothing is sent.
func dialRawConn(t testing.TB, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{Conn: nc, br: bufio.NewReader(nc)}
}

// masked builds a masked client frame with first byte b0 (FIN, RSV and
// opcode taken as they are), for what real clients refuse to send.
func masked(b0 byte, payload []byte) []byte {
	return frame.AppendMaskedRaw(nil, b0, payload, [4]byte{1, 2, 3, 4})
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func (c *rawClient) send(t testing.TB, frames ...[]byte) {
	t.Helper()
	if _, err := c.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatalf("raw write: %v", err)
	}
}

// next reads one frame (gobwas/ws decoder) within 10s.
func (c *rawClient) next(t testing.TB) ws.Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(c.br)
	if err != nil {
		t.Fatalf("raw read frame: %v", err)
	}
	return f
}

// expectClose skips data and pings until a close frame, checks its code,
// then checks the server closes the TCP connection.
func (c *rawClient) expectClose(t testing.TB, want ws.StatusCode) string {
	t.Helper()
	for {
		f := c.next(t)
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		if len(f.Payload) == 0 {
			code = ws.StatusNoStatusRcvd
		}
		if code != want {
			t.Fatalf("close code %d (%q), want %d", code, reason, want)
		}
		// Answer like a polite client, then expect EOF.
		_, _ = c.Write(masked(0x88, f.Payload))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := io.Copy(io.Discard, c.br); err != nil || n != 0 {
			t.Fatalf("after close: read %d bytes, err %v; want clean EOF", n, err)
		}
		return reason
	}
}

func stringsOf(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

var _ = strings.Join
