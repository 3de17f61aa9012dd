package broadcast_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// TestMain doubles as a client process: the invariant test needs its
// clients' sockets outside the server's process to count the server's fds.
func TestMain(m *testing.M) {
	if addr := os.Getenv("FANOUT_TEST_HOLD_ADDR"); addr != "" {
		n, _ := strconv.Atoi(os.Getenv("FANOUT_TEST_HOLD_N"))
		os.Exit(holdClients(addr, n))
	}
	os.Exit(m.Run())
}

// holdClients opens n upgraded connections, says "ready", and holds them
// idle until its stdin closes.
func holdClients(addr string, n int) int {
	conns := make([]net.Conn, n)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				c, err := rawUpgrade(addr)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		fmt.Println("error", err)
		return 1
	default:
	}
	fmt.Println("ready", n)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	return 0
}

func rawUpgrade(addr string) (net.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, handshakeRequest(addr, "/ws")); err != nil {
		nc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("upgrade: %v %v", resp, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// With 2,000 idle clients the server holds one fd per client and no
// goroutine per client; when they leave, both return to the baseline.
func TestIdleConnectionsCostNoGoroutineAndOneFD(t *testing.T) {
	const n = 2000
	s := startServer(t, broadcast.Config{})
	// Let the server's own goroutines (pool, shards, pollers) start.
	warm := dialGorilla(t, s.url)
	s.waitConns(t, 1)
	warm.Close()
	waitFor(t, "the warm-up client's close counted", func() bool { return s.Stats().Closed(broadcast.ReasonClientGone) == 1 })
	s.waitConns(t, 0)
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), countFDs(t)
	baseGone := s.Stats().Closed(broadcast.ReasonClientGone)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FANOUT_TEST_HOLD_ADDR="+s.addr, "FANOUT_TEST_HOLD_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("client process: %q %v", line, err)
	}
	s.waitConns(t, n)
	waitFor(t, "handshakes done", func() bool { return s.Stats().Handshaking == 0 })

	g, fds := runtime.NumGoroutine(), countFDs(t)
	t.Logf("%d idle clients: goroutines %d -> %d, fds %d -> %d", n, baseG, g, baseFD, fds)
	if g-baseG >= 50 {
		t.Errorf("goroutines grew by %d with %d idle clients, want < 50", g-baseG, n)
	}
	if d := fds - baseFD; d < n-20 || d > n+20 {
		t.Errorf("fds grew by %d, want %d ± 20 (one per connection)", d, n)
	}

	// A broadcast still reaches everyone: one healthy reader among them.
	r := dialGorilla(t, s.url)
	s.waitConns(t, n+1)
	if _, err := s.Publish(broadcast.Message{Payload: []byte("to all")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, r, gorilla.TextMessage, []byte("to all"))
	waitFor(t, "delivered to all", func() bool { return s.Stats().Deliveries == n+1 })
	r.Close()

	stdin.Close() // the client process closes its sockets and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client process: %v", err)
	}
	s.waitConns(t, 0)
	waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= baseG+5 })
	waitFor(t, "fds back to baseline", func() bool { return countFDs(t) <= baseFD+2 })
	if got := s.Stats().Closed(broadcast.ReasonClientGone) - baseGone; got != n+1 {
		st := s.Stats()
		byReason := map[string]uint64{}
		for _, r := range broadcast.Reasons() {
			if v := st.Closed(r); v > 0 {
				byReason[r.String()] = v
			}
		}
		t.Errorf("client_gone closes %d, want %d (all closes by reason: %v)", got, n+1, byReason)
	}
}

// 4 publishers × 200 messages, 200 receivers: every receiver gets all 800
// in one identical order, each publisher's in its own order.
func TestBroadcastOrder(t *testing.T) {
	const pubs, per, recvs = 4, 200, 200
	s := startServer(t, broadcast.Config{})
	receivers := make([]*rawClient, recvs)
	for i := range receivers {
		receivers[i] = dialRaw(t, s.addr)
	}
	publishers := make([]*gorilla.Conn, pubs)
	for i := range publishers {
		publishers[i] = dialGorilla(t, s.url)
	}
	s.waitConns(t, pubs+recvs)

	var wg sync.WaitGroup
	for p, c := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := c.WriteMessage(gorilla.BinaryMessage, binary.BigEndian.AppendUint32([]byte{byte(p)}, uint32(i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		// Publishers also receive everything; drain them.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < pubs*per; i++ {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, _, err := c.ReadMessage(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	orders := make([][]byte, recvs)
	for r, c := range receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := make([]uint32, pubs)
			var order bytes.Buffer
			for i := 0; i < pubs*per; i++ {
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				f, err := ws.ReadFrame(c.br)
				if err != nil {
					t.Errorf("receiver %d after %d messages: %v", r, i, err)
					return
				}
				if f.Header.OpCode == ws.OpPing {
					i--
					continue
				}
				p, seq := int(f.Payload[0]), binary.BigEndian.Uint32(f.Payload[1:])
				if seq != next[p] {
					t.Errorf("receiver %d: publisher %d seq %d, want %d", r, p, seq, next[p])
					return
				}
				next[p]++
				order.Write(f.Payload)
			}
			orders[r] = order.Bytes()
		}()
	}
	wg.Wait()
	for r := 1; r < recvs; r++ {
		if !bytes.Equal(orders[r], orders[0]) {
			t.Fatalf("receiver %d saw a different order than receiver 0", r)
		}
	}
	if st := s.Stats(); st.Published != pubs*per {
		t.Fatalf("published %d, want %d", st.Published, pubs*per)
	}
}

// A client that stops reading is closed with 1008 once its queue passes
// -queue-bytes; everyone else keeps receiving every message.
func TestSlowConsumerIsClosed(t *testing.T) {
	// Enough bytes to fill the kernel's socket buffers (several MiB on
	// loopback) and then the queue.
	const queue, size, count = 256 << 10, 64 << 10, 300
	s := startServer(t, broadcast.Config{QueueBytes: queue, MaxMessage: size, CloseTimeout: 30 * time.Second})
	slow := dialRaw(t, s.addr)
	healthy := dialGorilla(t, s.url)
	s.waitConns(t, 2)
	payload := bytes.Repeat([]byte("s"), size)
	for i := 0; i < count; i++ {
		if _, err := s.Publish(broadcast.Message{Kind: broadcast.KindBinary, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		// Paced by the healthy reader, so only the slow one falls behind.
		expectMessage(t, healthy, gorilla.BinaryMessage, payload)
	}
	// The slow client resumes reading: what fit, then a 1008 close.
	reason := slow.expectClose(t, ws.StatusPolicyViolation)
	if reason != "slow consumer" {
		t.Fatalf("close reason %q", reason)
	}
	waitFor(t, "slow consumer counted", func() bool { return s.Stats().Closed(broadcast.ReasonSlowConsumer) == 1 })
	if st := s.Stats(); st.Dropped != 0 {
		t.Fatalf("dropped %d under the close policy", st.Dropped)
	}
}

// Under -slow-policy=drop the slow client stays connected and misses
// messages, counted; the healthy one gets them all.
func TestSlowConsumerDropPolicy(t *testing.T) {
	const queue, size, count = 256 << 10, 64 << 10, 300
	s := startServer(t, broadcast.Config{QueueBytes: queue, MaxMessage: size, SlowPolicy: broadcast.SlowDrop})
	slow := dialRaw(t, s.addr)
	healthy := dialGorilla(t, s.url)
	s.waitConns(t, 2)
	payload := bytes.Repeat([]byte("d"), size)
	for i := 0; i < count; i++ {
		if _, err := s.Publish(broadcast.Message{Kind: broadcast.KindBinary, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		expectMessage(t, healthy, gorilla.BinaryMessage, payload)
	}
	// Every frame is either delivered or dropped, none unaccounted (the
	// shard adds its counts when a batch is done: wait for the last one).
	waitFor(t, "every frame accounted for", func() bool { st := s.Stats(); return st.Deliveries+st.Dropped == 2*count })
	st := s.Stats()
	if st.Dropped == 0 {
		t.Fatal("no frame dropped for a client that does not read")
	}
	// The slow client reads again: whole frames, then the next message.
	received := 0
	_ = slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	for received < count-int(st.Dropped) {
		f := slow.next(t)
		if f.Header.OpCode == ws.OpBinary {
			if !bytes.Equal(f.Payload, payload) {
				t.Fatal("slow client got a corrupted frame")
			}
			received++
		}
	}
	if _, err := s.Publish(broadcast.Message{Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	for {
		if f := slow.next(t); f.Header.OpCode == ws.OpText {
			if string(f.Payload) != "after" {
				t.Fatalf("got %q", f.Payload)
			}
			break
		}
	}
	if n := s.Conns(); n != 2 {
		t.Fatalf("%d connections, want both still open", n)
	}
}

// With -flush-delay, a burst goes to each client in far fewer writes than
// messages, every message still there, in order.
func TestFlushDelayCoalesces(t *testing.T) {
	const n = 50
	s := startServer(t, broadcast.Config{FlushDelay: 300 * time.Millisecond})
	c := dialRaw(t, s.addr)
	s.waitConns(t, 1)
	before := s.Stats().Writes
	for i := 0; i < n; i++ {
		if _, err := s.Publish(broadcast.Message{Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		f := c.next(t)
		if f.Header.OpCode == ws.OpPing {
			i--
			continue
		}
		if string(f.Payload) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, f.Payload)
		}
	}
	if w := s.Stats().Writes - before; w > n/5 {
		t.Fatalf("%d writes for %d messages: not coalesced", w, n)
	}
}

// A ping flood costs the server at most one pong and one write per read
// event, and never more than QueueBytes: pings read together are answered
// by one pong, to the most recent (RFC 6455 5.5.3). Before, each ping was
// one writev, and a flooder that never read was bounded only by the
// slow-consumer close; everyone else keeps receiving either way.
func TestPingFloodIsBounded(t *testing.T) {
	const queueBytes = 4096
	s := startServer(t, broadcast.Config{QueueBytes: queueBytes, CloseTimeout: 200 * time.Millisecond})
	healthy := dialGorilla(t, s.url)
	flood := dialRaw(t, s.addr)
	s.waitConns(t, 2)
	ping := masked(0x89, bytes.Repeat([]byte("p"), 125))
	burst := bytes.Repeat(ping, 1000)
	writesBefore := s.Stats().Writes
	const bursts = 200
	for i := 0; i < bursts; i++ {
		_ = flood.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := flood.Write(burst); err != nil {
			t.Fatalf("burst %d: %v", i, err)
		}
	}
	waitFor(t, "every ping read", func() bool { return s.Stats().BytesIn >= uint64(bursts*len(burst)) })
	st := s.Stats()
	if writes := st.Writes - writesBefore; writes*10 > bursts*1000 {
		t.Fatalf("%d socket writes for %d pings: pongs are not coalesced", writes, bursts*1000)
	}
	if st.QueuedBytes > queueBytes {
		t.Fatalf("%d bytes queued, over the %d-byte limit", st.QueuedBytes, queueBytes)
	}
	flood.Close()
	if _, err := s.Publish(broadcast.Message{Payload: []byte("still fine")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, healthy, gorilla.TextMessage, []byte("still fine"))
}
