package broadcast_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast"
)

// Pings read together are answered together: by one pong, carrying the
// most recent ping's payload (RFC 6455 5.5.3), not one pong and one
// syscall each.
func TestPingsReadTogetherGetOnePong(t *testing.T) {
	s := startServer(t, broadcast.Config{PingInterval: -1})
	c := dialRaw(t, s.addr)
	s.waitConns(t, 1)
	const n = 200
	var burst bytes.Buffer
	for i := 0; i < n; i++ {
		burst.Write(masked(0x89, []byte(fmt.Sprintf("%03d", i))))
	}
	c.send(t, burst.Bytes()) // 1,800 bytes: one segment, read at once
	pongs := 0
	for {
		f := c.next(t)
		if f.Header.OpCode != ws.OpPong {
			t.Fatalf("got opcode %v, want pongs only", f.Header.OpCode)
		}
		pongs++
		if string(f.Payload) == fmt.Sprintf("%03d", n-1) {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	}
	if pongs > n/10 {
		t.Fatalf("%d pongs for %d pings read together; want them coalesced", pongs, n)
	}
}
