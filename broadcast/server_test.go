package broadcast_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/hub"
)

// Every message any client sends reaches every client, sender included,
// with its opcode, whatever the client library.
func TestBroadcastReachesEveryClient(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	g1, g2 := dialGorilla(t, s.url), dialGorilla(t, s.url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, _, err := websocket.Dial(ctx, s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseNow()
	s.waitConns(t, 3)

	if err := g1.WriteMessage(gorilla.TextMessage, []byte("hello from gorilla")); err != nil {
		t.Fatal(err)
	}
	// Two publishers race; order them so every client's order is known.
	waitFor(t, "first message published", func() bool { return s.Stats().Published == 1 })
	if err := cc.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*gorilla.Conn{g1, g2} {
		expectMessage(t, g, gorilla.TextMessage, []byte("hello from gorilla"))
		expectMessage(t, g, gorilla.BinaryMessage, []byte{0, 1, 2, 0xff})
	}
	for _, want := range []struct {
		typ websocket.MessageType
		p   []byte
	}{{websocket.MessageText, []byte("hello from gorilla")}, {websocket.MessageBinary, []byte{0, 1, 2, 0xff}}} {
		typ, p, err := cc.Read(ctx)
		if err != nil || typ != want.typ || !bytes.Equal(p, want.p) {
			t.Fatalf("coder client got %v %q %v, want %v %q", typ, p, err, want.typ, want.p)
		}
	}
	// A large message crosses many reads and writes intact.
	big := bytes.Repeat([]byte("0123456789abcdef"), 4000)
	if err := g2.WriteMessage(gorilla.BinaryMessage, big); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, g1, gorilla.BinaryMessage, big)
	expectMessage(t, g2, gorilla.BinaryMessage, big)
	st := s.Stats()
	if st.MessagesIn != 3 || st.Published != 3 {
		t.Fatalf("stats: in %d published %d, want 3 and 3", st.MessagesIn, st.Published)
	}
}

// Each malformed input closes only its own connection, with the right code;
// a healthy client keeps receiving.
func TestProtocolErrorsCloseOnlyTheOffender(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxMessage: 1000})
	healthy := dialGorilla(t, s.url)
	for i, tc := range []struct {
		name   string
		frames [][]byte
		code   ws.StatusCode
		reason broadcast.CloseReason
	}{
		{
			name:   "unmasked frame",
			frames: [][]byte{{0x81, 0x02, 'h', 'i'}},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "rsv1 without extension",
			frames: [][]byte{masked(0xc1, []byte("x"))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "reserved opcode",
			frames: [][]byte{masked(0x83, nil)},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "reserved control opcode",
			frames: [][]byte{masked(0x8f, nil)},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "ping over 125 bytes",
			frames: [][]byte{masked(0x89, bytes.Repeat([]byte("p"), 126))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "fragmented ping",
			frames: [][]byte{masked(0x09, []byte("p"))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "continuation without a message",
			frames: [][]byte{masked(0x80, []byte("x"))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "new message inside a fragmented one",
			frames: [][]byte{masked(0x01, []byte("a")), masked(0x81, []byte("b"))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "invalid close code",
			frames: [][]byte{masked(0x88, closePayload(1005, ""))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "close code out of range",
			frames: [][]byte{masked(0x88, closePayload(5000, ""))},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "close with 1-byte payload",
			frames: [][]byte{masked(0x88, []byte{3})},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
		{
			name:   "invalid UTF-8 text",
			frames: [][]byte{masked(0x81, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80})},
			code:   ws.StatusInvalidFramePayloadData,
			reason: broadcast.ReasonInvalidData,
		},
		{
			name:   "invalid UTF-8 in fragments",
			frames: [][]byte{masked(0x01, []byte("ok")), masked(0x80, []byte{0xff})},
			code:   ws.StatusInvalidFramePayloadData,
			reason: broadcast.ReasonInvalidData,
		},
		{
			name:   "invalid UTF-8 close reason",
			frames: [][]byte{masked(0x88, closePayload(1000, "\xff\xfe"))},
			code:   ws.StatusInvalidFramePayloadData,
			reason: broadcast.ReasonInvalidData,
		},
		{
			name:   "message over -max-message",
			frames: [][]byte{masked(0x82, make([]byte, 1001))},
			code:   ws.StatusMessageTooBig,
			reason: broadcast.ReasonTooBig,
		},
		{
			name:   "fragments over -max-message",
			frames: [][]byte{masked(0x02, make([]byte, 600)), masked(0x80, make([]byte, 401))},
			code:   ws.StatusMessageTooBig,
			reason: broadcast.ReasonTooBig,
		},
		{
			name:   "huge declared length, no payload sent",
			frames: [][]byte{{0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}},
			code:   ws.StatusMessageTooBig,
			reason: broadcast.ReasonTooBig,
		},
		{
			name:   "64-bit length with the top bit set",
			frames: [][]byte{{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}},
			code:   ws.StatusProtocolError,
			reason: broadcast.ReasonProtocolError,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Closed(tc.reason)
			bad := dialRaw(t, s.addr)
			s.waitConns(t, 2)
			bad.send(t, tc.frames...)
			bad.expectClose(t, tc.code)
			waitFor(t, "close counted", func() bool { return s.Stats().Closed(tc.reason) == before+1 })
			s.waitConns(t, 1)
			// The healthy client is unaffected.
			msg := []byte(fmt.Sprintf("still here %d", i))
			if _, err := s.Publish(broadcast.Message{Payload: msg}); err != nil {
				t.Fatal(err)
			}
			expectMessage(t, healthy, gorilla.TextMessage, msg)
		})
	}
}

func TestControlFrames(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	healthy := dialGorilla(t, s.url)
	c := dialRaw(t, s.addr)
	s.waitConns(t, 2)

	// Ping: pong with the same payload.
	c.send(t, masked(0x89, []byte("are you there")))
	if f := c.next(t); f.Header.OpCode != ws.OpPong || string(f.Payload) != "are you there" {
		t.Fatalf("got %v %q, want pong", f.Header.OpCode, f.Payload)
	}

	// Fragments with a ping in between: pong first, then the whole message
	// to everyone, sender included.
	c.send(t, masked(0x01, []byte("frag")), masked(0x89, []byte("mid")), masked(0x00, []byte("men")), masked(0x80, []byte("ted")))
	if f := c.next(t); f.Header.OpCode != ws.OpPong || string(f.Payload) != "mid" {
		t.Fatalf("got %v %q, want pong mid", f.Header.OpCode, f.Payload)
	}
	if f := c.next(t); f.Header.OpCode != ws.OpText || string(f.Payload) != "fragmented" || !f.Header.Fin {
		t.Fatalf("got %+v %q, want text fragmented", f.Header, f.Payload)
	}
	expectMessage(t, healthy, gorilla.TextMessage, []byte("fragmented"))

	// An unsolicited pong is ignored.
	c.send(t, masked(0x8a, []byte("unsolicited")), masked(0x82, []byte{42}))
	if f := c.next(t); f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, []byte{42}) {
		t.Fatalf("got %v %q, want binary 42", f.Header.OpCode, f.Payload)
	}
	expectMessage(t, healthy, gorilla.BinaryMessage, []byte{42})
}

func TestCloseIsEchoed(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	for _, tc := range []struct {
		name    string
		payload []byte
		code    ws.StatusCode
	}{
		{"normal", closePayload(1000, "bye"), ws.StatusNormalClosure},
		{"going away", closePayload(1001, ""), ws.StatusGoingAway},
		{"private code", closePayload(4321, "custom"), 4321},
		{"no code", nil, ws.StatusNoStatusRcvd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Closed(broadcast.ReasonClientClose)
			c := dialRaw(t, s.addr)
			s.waitConns(t, 1)
			c.send(t, masked(0x88, tc.payload))
			f := c.next(t)
			if f.Header.OpCode != ws.OpClose {
				t.Fatalf("got %v, want close", f.Header.OpCode)
			}
			if tc.payload == nil {
				if len(f.Payload) != 0 {
					t.Fatalf("echo of an empty close has payload %q", f.Payload)
				}
			} else if code, _ := ws.ParseCloseFrameData(f.Payload); code != tc.code {
				t.Fatalf("echoed code %d, want %d", code, tc.code)
			}
			// The server closes the TCP connection first.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := io.Copy(io.Discard, c.br); n != 0 || err != nil {
				t.Fatalf("after close echo: %d bytes, %v", n, err)
			}
			waitFor(t, "close counted", func() bool { return s.Stats().Closed(broadcast.ReasonClientClose) == before+1 })
			s.waitConns(t, 0)
		})
	}
}

func TestHandshakeRejections(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxConns: 2})
	healthy := dialGorilla(t, s.url)
	for _, tc := range []struct {
		name    string
		request string
		status  int
		header  [2]string
		kind    broadcast.RejectKind
	}{
		{
			name:    "garbage",
			request: "HELLO\r\n\r\n",
			status:  http.StatusBadRequest,
			kind:    broadcast.RejectBadRequest,
		},
		{
			name:    "not a websocket request",
			request: "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
			status:  http.StatusBadRequest,
			kind:    broadcast.RejectBadRequest,
		},
		{
			name:    "POST",
			request: strings.Replace(handshakeRequest(s.addr, "/ws"), "GET", "POST", 1),
			status:  http.StatusMethodNotAllowed,
			kind:    broadcast.RejectBadRequest,
		},
		{
			name:    "bad key",
			request: strings.Replace(handshakeRequest(s.addr, "/ws"), "dGhlIHNhbXBsZSBub25jZQ==", "short", 1),
			status:  http.StatusBadRequest,
			kind:    broadcast.RejectBadRequest,
		},
		{
			name:    "version 8",
			request: strings.Replace(handshakeRequest(s.addr, "/ws"), "Version: 13", "Version: 8", 1),
			status:  http.StatusUpgradeRequired,
			header:  [2]string{"Sec-WebSocket-Version", "13"},
			kind:    broadcast.RejectVersion,
		},
		{
			name:    "wrong path",
			request: handshakeRequest(s.addr, "/other"),
			status:  http.StatusNotFound,
			kind:    broadcast.RejectNotFound,
		},
		{
			name:    "headers over the size limit",
			request: handshakeRequest(s.addr, "/ws", "X-Big: "+strings.Repeat("a", 20<<10)),
			status:  http.StatusRequestHeaderFieldsTooLarge,
			kind:    broadcast.RejectBadRequest,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats().Rejects(tc.kind)
			resp := rawRequest(t, s.addr, tc.request)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.header[0] != "" && resp.Header.Get(tc.header[0]) != tc.header[1] {
				t.Fatalf("header %s = %q, want %q", tc.header[0], resp.Header.Get(tc.header[0]), tc.header[1])
			}
			waitFor(t, "reject counted", func() bool { return s.Stats().Rejects(tc.kind) == before+1 })
		})
	}
	// -max-conns: the third connection gets 503, the two others keep going.
	second := dialGorilla(t, s.url)
	s.waitConns(t, 2)
	if resp := rawRequest(t, s.addr, handshakeRequest(s.addr, "/ws")); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("over max-conns: status %d, want 503", resp.StatusCode)
	}
	waitFor(t, "full rejection counted", func() bool { return s.Stats().Rejects(broadcast.RejectFull) == 1 })
	if _, err := s.Publish(broadcast.Message{Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, healthy, gorilla.TextMessage, []byte("ok"))
	expectMessage(t, second, gorilla.TextMessage, []byte("ok"))
	// A slot frees up when a client leaves.
	second.Close()
	s.waitConns(t, 1)
	dialGorilla(t, s.url)
}

func rawRequest(t *testing.T, addr, req string) *http.Response {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	go io.WriteString(nc, req) // may fail half-way when the server gives up early
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	resp.Body.Close()
	return resp
}

// A client that sends half a request holds only its handshake goroutine,
// and only until -handshake-timeout; others connect and receive meanwhile.
func TestHandshakeTimeout(t *testing.T) {
	s := startServer(t, broadcast.Config{HandshakeTimeout: 300 * time.Millisecond})
	half, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	io.WriteString(half, "GET /ws HTTP/1.1\r\nHost: x\r\n")
	waitFor(t, "handshake in progress", func() bool { return s.Stats().Handshaking == 1 })
	g := dialGorilla(t, s.url)
	s.waitConns(t, 1)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("meanwhile")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, g, gorilla.TextMessage, []byte("meanwhile"))
	_ = half.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, _ := io.Copy(io.Discard, half); n != 0 {
		t.Fatalf("stalled handshake got %d bytes, want a plain close", n)
	}
	waitFor(t, "timeout counted", func() bool { return s.Stats().Rejects(broadcast.RejectTimeout) == 1 })
	waitFor(t, "handshake goroutine gone", func() bool { return s.Stats().Handshaking == 0 })
}

func TestReceiveOnly(t *testing.T) {
	s := startServer(t, broadcast.Config{ReceiveOnly: true})
	healthy := dialGorilla(t, s.url)
	c := dialRaw(t, s.addr)
	s.waitConns(t, 2)
	// Control frames are still fine.
	c.send(t, masked(0x89, []byte("p")))
	if f := c.next(t); f.Header.OpCode != ws.OpPong {
		t.Fatalf("got %v, want pong", f.Header.OpCode)
	}
	c.send(t, masked(0x81, []byte("may I?")))
	c.expectClose(t, ws.StatusPolicyViolation)
	waitFor(t, "policy close counted", func() bool { return s.Stats().Closed(broadcast.ReasonPolicy) == 1 })
	if _, err := s.Publish(broadcast.Message{Payload: []byte("from the backend")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, healthy, gorilla.TextMessage, []byte("from the backend"))
	if st := s.Stats(); st.Published != 1 || st.MessagesIn != 0 {
		t.Fatalf("published %d in %d, want 1 and 0", st.Published, st.MessagesIn)
	}
}

func TestPingsAndIdleTimeout(t *testing.T) {
	s := startServer(t, broadcast.Config{PingInterval: 50 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
	// gorilla answers pings while it reads: it must stay connected.
	g := dialGorilla(t, s.url)
	var wg sync.WaitGroup
	wg.Add(1)
	gotMsg := make(chan []byte, 1)
	go func() {
		defer wg.Done()
		_ = g.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, p, err := g.ReadMessage()
		if err == nil {
			gotMsg <- p
		}
	}()
	// The raw client never answers: it gets pings, then 1001.
	c := dialRaw(t, s.addr)
	s.waitConns(t, 2)
	if f := c.next(t); f.Header.OpCode != ws.OpPing {
		t.Fatalf("got %v, want a server ping", f.Header.OpCode)
	}
	reason := c.expectClose(t, ws.StatusGoingAway)
	if reason != "idle timeout" {
		t.Fatalf("close reason %q", reason)
	}
	waitFor(t, "idle close counted", func() bool { return s.Stats().Closed(broadcast.ReasonIdleTimeout) == 1 })
	// gorilla kept answering and is still there, past several timeouts.
	start := time.Now()
	waitFor(t, "a while", func() bool { return time.Since(start) > time.Second })
	if n := s.Conns(); n != 1 {
		t.Fatalf("%d connections, want the pong-answering client still there", n)
	}
	if _, err := s.Publish(broadcast.Message{Payload: []byte("alive")}); err != nil {
		t.Fatal(err)
	}
	if p := <-gotMsg; string(p) != "alive" {
		t.Fatalf("got %q", p)
	}
	wg.Wait()
}

func TestShutdownClosesClientsWith1001(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	clients := []*rawClient{dialRaw(t, s.addr), dialRaw(t, s.addr), dialRaw(t, s.addr)}
	s.waitConns(t, 3)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("last words")}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	for _, c := range clients {
		// What was published before the shutdown is delivered first.
		if f := c.next(t); f.Header.OpCode != ws.OpText || string(f.Payload) != "last words" {
			t.Fatalf("got %v %q, want the last message", f.Header.OpCode, f.Payload)
		}
		c.expectClose(t, ws.StatusGoingAway)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := s.Stats().Closed(broadcast.ReasonShutdown); n != 3 {
		t.Fatalf("shutdown closes %d, want 3", n)
	}
	if _, err := s.Publish(broadcast.Message{Payload: []byte("late")}); err != broadcast.ErrServerClosed {
		t.Fatalf("publish after shutdown: %v", err)
	}
	if err := s.Close(); err != nil { // second close: same result, no panic
		t.Fatalf("Close after Shutdown: %v", err)
	}
}

func TestPublishRefusals(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxMessage: 10})
	for _, tc := range []struct {
		m    broadcast.Message
		want error
	}{
		{broadcast.Message{Payload: []byte("0123456789a")}, broadcast.ErrTooBig},
		{broadcast.Message{Payload: []byte{0xff}}, broadcast.ErrInvalidUTF8},
		{broadcast.Message{Kind: broadcast.KindJSON, Payload: []byte("{nope")}, broadcast.ErrInvalidJSON},
		{broadcast.Message{Channel: "no spaces", Payload: []byte("x")}, broadcast.ErrChannel},
		{broadcast.Message{Channel: strings.Repeat("c", hub.MaxChannelName+1), Payload: []byte("x")}, broadcast.ErrChannel},
	} {
		if _, err := s.Publish(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("Publish(%q) = %v, want %v", tc.m.Payload, err, tc.want)
		}
	}
	if _, err := s.Publish(broadcast.Message{Kind: 9}); err == nil {
		t.Error("Publish of an unknown kind succeeded")
	}
}

// With MaxHandshakes in progress, the next connection is closed unread
// and counted; once the slot frees up, upgrades work again.
func TestMaxHandshakes(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxHandshakes: 1, HandshakeTimeout: 300 * time.Millisecond})
	mute, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	waitFor(t, "handshake in progress", func() bool { return s.Stats().Handshaking == 1 })
	shed, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer shed.Close()
	_ = shed.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := shed.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("connection over the limit: read %d, %v; want it closed", n, err)
	}
	waitFor(t, "shed counted", func() bool { return s.Stats().Rejects(broadcast.RejectBusy) == 1 })
	waitFor(t, "the mute handshake timed out", func() bool { return s.Stats().Handshaking == 0 })
	g := dialGorilla(t, s.url)
	s.waitConns(t, 1)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("back")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, g, gorilla.TextMessage, []byte("back"))
}
