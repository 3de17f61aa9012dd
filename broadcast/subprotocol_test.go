package broadcast_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// Of the subprotocols a client offers, the first one Config.Subprotocols
// lists is echoed in the 101; an offer of none listed, or a server that
// lists none, gets no Sec-WebSocket-Protocol (gorilla then goes on
// without one). Either way the connection receives what is published.
func TestSubprotocolsGorilla(t *testing.T) {
	listed := []string{"graphql-transport-ws", "chat"}
	for _, tc := range []struct {
		name   string
		listed []string
		offer  []string
		want   string
	}{
		{"first offered that is listed", listed, []string{"v10.stomp", "chat", "graphql-transport-ws"}, "chat"},
		{"listed, offered alone", listed, []string{"graphql-transport-ws"}, "graphql-transport-ws"},
		{"none offered is listed", listed, []string{"v10.stomp"}, ""},
		{"compared exactly", listed, []string{"Chat"}, ""},
		{"server lists none", nil, []string{"chat"}, ""},
		{"client offers none", listed, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, broadcast.Config{Subprotocols: tc.listed})
			d := gorilla.Dialer{Subprotocols: tc.offer, HandshakeTimeout: 10 * time.Second}
			c, resp, err := d.Dial(s.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got, ok := resp.Header["Sec-Websocket-Protocol"]; tc.want == "" && ok || tc.want != "" && (len(got) != 1 || got[0] != tc.want) {
				t.Fatalf("Sec-WebSocket-Protocol %q (present %v), want %q", got, ok, tc.want)
			}
			if c.Subprotocol() != tc.want {
				t.Fatalf("gorilla's Subprotocol() %q, want %q", c.Subprotocol(), tc.want)
			}
			s.waitConns(t, 1)
			if _, err := s.Publish(broadcast.Message{Payload: []byte("hi")}); err != nil {
				t.Fatal(err)
			}
			expectMessage(t, c, gorilla.TextMessage, []byte("hi"))
		})
	}
}

// coder/websocket, an independent client, negotiates the same way.
func TestSubprotocolsCoder(t *testing.T) {
	s := startServer(t, broadcast.Config{Subprotocols: []string{"chat"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{Subprotocols: []string{"graphql-ws", "chat"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "chat" || resp.Header.Get("Sec-WebSocket-Protocol") != "chat" {
		t.Fatalf("subprotocol %q, header %q; want chat", c.Subprotocol(), resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	s.waitConns(t, 1)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != "hi" {
		t.Fatalf("read %q, %v", p, err)
	}

	// Not listed: no header; coder/websocket then connects without one.
	c2, resp, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{Subprotocols: []string{"graphql-ws"}})
	if err != nil {
		t.Fatalf("unlisted offer: %v", err)
	}
	defer c2.CloseNow()
	if _, ok := resp.Header["Sec-Websocket-Protocol"]; ok || c2.Subprotocol() != "" {
		t.Fatalf("unlisted offer: header %q, subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"), c2.Subprotocol())
	}
}
