package broadcast_test

import (
	"context"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/hub"
)

// loopBus is a bus of one node that panics on the payload "boom": a bug
// in a read handler's path, on the pool.
type loopBus struct {
	srv *broadcast.Server
	mu  sync.Mutex
	seq uint64 // guarded by mu
}

func (b *loopBus) Publish(_ context.Context, channel string, kind byte, p []byte, _ string, _ hub.Meta) (string, uint64, bool, error) {
	epoch, seq, err := b.deliver(channel, kind, p)
	return epoch, seq, false, err
}

func (b *loopBus) PublishAsync(channel string, kind byte, p []byte, _ hub.Meta) error {
	if string(p) == "boom" {
		panic("loopBus: boom")
	}
	_, _, err := b.deliver(channel, kind, p)
	return err
}

func (b *loopBus) MaxPayload() int { return 0 }

func (b *loopBus) deliver(channel string, kind byte, p []byte) (string, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	epoch := b.srv.Epoch()
	return epoch, b.seq, b.srv.Deliver(context.Background(), epoch, b.seq, channel, kind, p, hub.Meta{})
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
