package broadcast_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast"
)

// A client that trickles an unfinished frame, a byte at a time, is
// closed with 1008 once the frame is older than MessageTimeout, whatever
// its bytes keep arriving; before, every byte counted as liveness and the
// client held its buffer forever.
func TestTrickledFrameTimesOut(t *testing.T) {
	s := startServer(t, broadcast.Config{MessageTimeout: 300 * time.Millisecond, PingInterval: -1, IdleTimeout: time.Hour, CloseTimeout: 200 * time.Millisecond})
	c := dialRaw(t, s.addr)
	f := masked(0x81, make([]byte, 100)) // a text frame, never finished
	stop := make(chan struct{})
	defer close(stop)
	go func() { // one byte every 50 ms until the server gives up
		for i := 0; i < len(f)-1; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write(f[i : i+1]); err != nil {
				return
			}
		}
	}()
	if reason := c.expectClose(t, ws.StatusPolicyViolation); reason != "message timeout" {
		t.Fatalf("close reason %q, want \"message timeout\"", reason)
	}
	waitFor(t, "the close to be counted", func() bool { return s.Stats().Closed(broadcast.ReasonMessageTimeout) == 1 })
}

// Read buffers held for incomplete frames are capped server-wide: the
// clients whose buffers would pass MaxPartialBytes are closed (1008),
// the rest keep theirs, and the total held stays under the cap.
func TestPartialReadsAreCapped(t *testing.T) {
	const limit = 64 << 10
	s := startServer(t, broadcast.Config{MaxPartialBytes: limit, MessageTimeout: time.Hour, ReadBufferSize: 4096, CloseTimeout: 50 * time.Millisecond})
	var clients []*rawClient
	for i := 0; i < 24; i++ {
		c := dialRaw(t, s.addr)
		// A 30 KiB frame's first 6 KiB: the server holds a buffer grown
		// to 8 KiB. One client at a time, so the first eight fit.
		f := masked(0x82, make([]byte, 30<<10))
		c.send(t, f[:6<<10])
		clients = append(clients, c)
		waitFor(t, fmt.Sprintf("client %d held or closed", i), func() bool {
			st := s.Stats()
			return st.PartialBytes+int64(8<<10)*int64(st.Closed(broadcast.ReasonPartialLimit)) >= int64(8<<10)*int64(i+1)
		})
	}
	waitFor(t, "clients closed for the partial cap", func() bool { return s.Stats().Closed(broadcast.ReasonPartialLimit) > 0 })
	if held := s.Stats().PartialBytes; held > limit {
		t.Fatalf("%d bytes held for partial frames, over the cap of %d", held, limit)
	}
	closed := int(s.Stats().Closed(broadcast.ReasonPartialLimit))
	if closed == len(clients) {
		t.Fatalf("all %d clients closed; the cap should leave room for some", closed)
	}
	// The others leave; then the first, which had room, finishes its
	// message (growing its buffer as the rest arrives, within the cap now
	// that the others' buffers are free) and it is published.
	for _, c := range clients[1:] {
		c.Close()
	}
	waitFor(t, "the others' buffers released", func() bool { return s.Stats().PartialBytes <= 8<<10 })
	f := masked(0x82, make([]byte, 30<<10))
	clients[0].send(t, f[6<<10:])
	waitFor(t, fmt.Sprintf("the first client's message (held %d)", s.Stats().PartialBytes), func() bool { return s.Stats().Published >= 1 })
}

// A fragmented message counts too: a client that sends a complete
// non-final fragment and waits holds the fragment in the parser, not in a
// read buffer, and must not escape the cap that way.
func TestFragmentsAreCapped(t *testing.T) {
	const limit = 64 << 10
	s := startServer(t, broadcast.Config{MaxPartialBytes: limit, MessageTimeout: time.Hour, CloseTimeout: 200 * time.Millisecond})
	for i := 0; i < 24; i++ {
		c := dialRaw(t, s.addr)
		c.send(t, masked(0x02, make([]byte, 30<<10))) // binary, FIN clear: the message goes on
	}
	waitFor(t, "clients closed for the partial cap", func() bool { return s.Stats().Closed(broadcast.ReasonPartialLimit) > 0 })
	if closed := s.Stats().Closed(broadcast.ReasonPartialLimit); closed == 24 {
		t.Fatalf("all %d clients closed; the cap should leave room for some", closed)
	}
}
