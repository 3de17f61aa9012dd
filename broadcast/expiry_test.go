package broadcast_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// A connection lives no longer than the token it connected with: when the
// token expires the server closes it with 1008 "token expired", counted;
// a connection whose token has time left stays.
func TestConnectionClosesWhenItsTokenExpires(t *testing.T) {
	var lifetime = map[string]time.Duration{"short": 300 * time.Millisecond, "long": time.Hour}
	s := startServer(t, broadcast.Config{
		Authenticate: func(tok string) (broadcast.Grant, error) {
			d, ok := lifetime[tok]
			if !ok {
				return broadcast.Grant{}, errors.New("unknown token")
			}
			return broadcast.Grant{Expires: time.Now().Add(d)}, nil
		},
		CloseTimeout: 200 * time.Millisecond, // sweeps every 50 ms
	})
	short := dialGorilla(t, s.url+"?token=short")
	long := dialGorilla(t, s.url+"?token=long")
	s.waitConns(t, 2)
	_ = short.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err := short.ReadMessage()
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) || ce.Code != int(ws.StatusPolicyViolation) || ce.Text != "token expired" {
		t.Fatalf("short-lived token: read %v, want close 1008 \"token expired\"", err)
	}
	waitFor(t, "the close to be counted", func() bool { return s.Stats().Closed(broadcast.ReasonTokenExpired) == 1 })
	if _, err := s.Publish(broadcast.Message{Payload: []byte("still here")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, long, gorilla.TextMessage, []byte("still here"))
}
