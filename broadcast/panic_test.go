package broadcast_test

import (
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// loopBus is a bus of one node that panics on the payload "boom": a bug
// in a read handler's path, on the pool.
type loopBus struct{ srv *broadcast.Server }

func (b *loopBus) Publish(channel string, kind byte, p []byte) error {
	if string(p) == "boom" {
		panic("loopBus: boom")
	}
	_, err := b.srv.Deliver(channel, kind, p)
	return err
}

// A panic in a connection's handler costs that connection only: it is
// torn down and counted, nothing it held stays locked, and the others
// keep their delivery, the shard it shared with them included.
func TestHandlerPanicClosesOnlyThatConnection(t *testing.T) {
	s := startServer(t, broadcast.Config{Shards: 1})
	s.SetBus(&loopBus{srv: s.Server})
	bad, good := dialGorilla(t, s.url), dialGorilla(t, s.url)
	s.waitConns(t, 2)
	if err := bad.WriteMessage(gorilla.TextMessage, []byte("boom")); err != nil {
		t.Fatal(err)
	}
	_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := bad.ReadMessage(); err == nil {
		t.Fatal("the panicking connection got a message; want it closed")
	}
	waitFor(t, "the panic to be counted", func() bool { return s.Stats().Closed(broadcast.ReasonInternalError) == 1 })
	s.waitConns(t, 1)
	if err := good.WriteMessage(gorilla.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, good, gorilla.TextMessage, []byte("still here"))
	if _, err := s.Publish(broadcast.Message{Payload: []byte("and a backend")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, good, gorilla.TextMessage, []byte("and a backend"))
}
