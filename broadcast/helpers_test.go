package broadcast_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/frame"
)

// testServer is a real server on a random loopback port.
type testServer struct {
	*broadcast.Server
	addr string // host:port
	url  string // ws://host:port/ws
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startServer(t testing.TB, cfg broadcast.Config) *testServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	srv, err := broadcast.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != broadcast.ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	path := cfg.Path
	if path == "" {
		path = "/ws"
	}
	return &testServer{Server: srv, addr: ln.Addr().String(), url: "ws://" + ln.Addr().String() + path}
}

// waitFor polls cond until it holds or 10s pass. Polling, not sleeping a
// guessed time: the assertion is on the state, never on the speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitConns waits until the server's table holds n connections.
func (s *testServer) waitConns(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d connections", n), func() bool { return s.Conns() == n })
}

func dialGorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectMessage reads one message with gorilla within 10s.
func expectMessage(t testing.TB, c *websocket.Conn, wantType int, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != wantType || !bytes.Equal(got, want) {
		t.Fatalf("got type %d %q, want type %d %q", typ, trunc(got), wantType, trunc(want))
	}
}

func trunc(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return string(b)
}

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
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := &rawClient{Conn: nc, br: bufio.NewReader(nc)}
	if _, err := io.WriteString(nc, handshakeRequest(addr, "/ws")); err != nil {
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
