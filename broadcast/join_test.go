package broadcast_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// A client is in the server's table before its 101 goes out, so its own
// first message, sent the moment it is open, reaches it; and a shard that
// never runs out of messages still takes in new connections between
// batches. 200 clients join, 20 at a time, while a publisher keeps the one
// shard busy (each batch goes to 200 receivers that never read, so it
// takes longer than the publisher takes to publish the next message, and
// the ring is never empty when the shard looks); each must get back what
// it sent.
func TestJoinWhilePublishing(t *testing.T) {
	const clients, wave, idle = 200, 20, 200
	s := startServer(t, broadcast.Config{Shards: 1, QueueBytes: 64 << 20})
	for i := 0; i < idle; i++ {
		dialRaw(t, s.addr)
	}
	s.waitConns(t, idle)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		payload := []byte("flood")
		for ctx.Err() == nil {
			if _, err := s.Publish(broadcast.Message{Payload: payload}); err != nil && !errors.Is(err, broadcast.ErrBacklog) {
				return
			}
			// Pacing, not synchronization: the backlog must never fill, or
			// the clients' own messages would be refused (ErrBacklog).
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for w := 0; w < clients/wave; w++ {
		var wg sync.WaitGroup
		for i := 0; i < wave; i++ {
			id := fmt.Sprintf("client %d", w*wave+i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := sendAndAwaitOwn(s.url, id); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			break
		}
	}
	stop()
	pubWG.Wait()
}

// sendAndAwaitOwn connects, sends msg at once and reads until it comes back.
func sendAndAwaitOwn(url, msg string) error {
	c, _, err := gorilla.DefaultDialer.Dial(url, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for n := 0; ; n++ {
		_, got, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("after %d messages: %w", n, err)
		}
		if string(got) == msg {
			return nil
		}
	}
}
