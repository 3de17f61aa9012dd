package broadcast_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/fanout/fanout/broadcast"
)

// Shutdown returns when its context ends, handshakes in progress or not:
// a client that sends half a request line and stalls is cut short, not
// waited for until the handshake timeout (an hour here).
func TestShutdownDeadlineCutsHandshakesShort(t *testing.T) {
	srv, err := broadcast.New(broadcast.Config{HandshakeTimeout: time.Hour, HandshakeFirstByteTimeout: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("G")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the handshake to start", func() bool { return srv.Stats().Handshaking == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second): // liveness bound; the failure mode is an hour
		t.Fatal("Shutdown still waiting for a stalled handshake 30s after its deadline")
	}
	if got := srv.Stats().Rejects(broadcast.RejectShutdown); got != 1 {
		t.Fatalf("%d handshakes counted as cut short by shutdown, want 1", got)
	}
}
