package bus_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/bus"
)

func startNATS(t *testing.T, port int) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

type node struct {
	srv *broadcast.Server
	bus *bus.NATS
	url string
}

func startNode(t *testing.T, natsURL string, i int) *node {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := broadcast.New(broadcast.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bus.Connect(bus.Config{
		URL: natsURL, Name: fmt.Sprintf("node-%d", i), Logger: quiet,
		ReconnectWait: 50 * time.Millisecond, ResumeDelay: 400 * time.Millisecond,
	}, func(channel string, kind byte, p []byte) { srv.Deliver(channel, kind, p) })
	if err != nil {
		t.Fatal(err)
	}
	srv.SetBus(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		b.Close()
	})
	for !b.Connected() {
		time.Sleep(5 * time.Millisecond)
	}
	return &node{srv: srv, bus: b, url: "ws://" + ln.Addr().String() + "/ws"}
}

// receiver records every message one client gets.
type receiver struct {
	mu   sync.Mutex
	got  []string
	done chan struct{}
}

func receive(t *testing.T, url string, want int) *receiver {
	t.Helper()
	c, _, err := gorilla.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &receiver{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got = append(r.got, string(p))
			n := len(r.got)
			r.mu.Unlock()
			if n == want {
				return
			}
		}
	}()
	return r
}

// check: every message exactly once, each publisher's in order.
func (r *receiver) check(t *testing.T, name string, publishers, per int) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := map[string]int{}
	for _, m := range r.got {
		pub, seqs, _ := strings.Cut(m, ":")
		var seq int
		fmt.Sscan(seqs, &seq)
		if seq != next[pub] {
			t.Fatalf("%s: from %s got %d, want %d (duplicate, loss or reorder)", name, pub, seq, next[pub])
		}
		next[pub]++
	}
	if len(r.got) != publishers*per {
		t.Fatalf("%s: %d messages, want %d", name, len(r.got), publishers*per)
	}
}

func runTier(t *testing.T, restart bool) {
	ns := startNATS(t, natsserver.RANDOM_PORT)
	port := ns.Addr().(*net.TCPAddr).Port
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	defer func() { ns.Shutdown() }()
	const nodes, perNode, msgs = 3, 4, 150
	var ns3 []*node
	for i := 0; i < nodes; i++ {
		ns3 = append(ns3, startNode(t, natsURL, i))
	}
	var recvs []*receiver
	var pubs []*gorilla.Conn
	for i, n := range ns3 {
		for j := 0; j < perNode; j++ {
			recvs = append(recvs, receive(t, n.url, nodes*msgs))
		}
		p, _, err := gorilla.DefaultDialer.Dial(n.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		go func() { // the publisher's own copy: drain it
			for {
				if _, _, err := p.ReadMessage(); err != nil {
					return
				}
			}
		}()
		pubs = append(pubs, p)
		_ = i
	}
	for _, n := range ns3 {
		for n.srv.Conns() != perNode+1 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	for i, p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := 0; s < msgs; s++ {
				if err := p.WriteMessage(gorilla.TextMessage, []byte(fmt.Sprintf("node%d:%d", i, s))); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	if restart {
		time.Sleep(100 * time.Millisecond)
		ns.Shutdown()
		ns.WaitForShutdown()
		for _, n := range ns3 {
			for n.bus.Connected() {
				time.Sleep(5 * time.Millisecond)
			}
		}
		// Clients stay connected while the bus is away.
		time.Sleep(200 * time.Millisecond)
		for _, n := range ns3 {
			if c := n.srv.Conns(); c != perNode+1 {
				t.Fatalf("a node lost clients while the bus was down: %d", c)
			}
		}
		ns = startNATS(t, port)
	}
	wg.Wait()
	defer func() {
		if t.Failed() {
			for i, n := range ns3 {
				t.Logf("node %d: bus %+v", i, n.bus.Stats())
			}
		}
	}()
	for i, r := range recvs {
		r.check(t, fmt.Sprintf("receiver %d", i), nodes, msgs)
	}
	for i, n := range ns3 {
		st := n.bus.Stats()
		if st.Refused != 0 || st.Gaps != 0 || st.Published != msgs {
			t.Errorf("node %d bus stats %+v", i, st)
		}
		if restart && (st.Reconnects == 0 || st.Disconnects == 0) {
			t.Errorf("node %d: no reconnect recorded: %+v", i, st)
		}
		if srvSt := n.srv.Stats(); srvSt.Published != nodes*msgs {
			t.Errorf("node %d broadcast %d messages locally, want %d (each once)", i, srvSt.Published, nodes*msgs)
		}
	}
}

// Three nodes, clients on each: every client gets every message once, in
// per-publisher order; a node does not deliver its own messages twice.
func TestTierDeliversEverythingOnce(t *testing.T) { runTier(t, false) }

// The bus goes away mid-run and comes back: clients stay connected and
// nothing within the buffer bound is lost or duplicated.
func TestTierSurvivesBusRestart(t *testing.T) { runTier(t, true) }

// With the buffer full the bus refuses, and says so.
func TestBufferBound(t *testing.T) {
	b, err := bus.Connect(bus.Config{URL: "nats://127.0.0.1:1", BufferBytes: 100, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func(string, byte, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Publish("", 0, make([]byte, 50)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("", 0, make([]byte, 50)); err != bus.ErrBufferFull {
		t.Fatalf("second publish over the bound: %v", err)
	}
	if st := b.Stats(); st.Refused != 1 || st.Connected || st.PendingBytes != 68 { // 50 bytes and an 18-byte header
		t.Fatalf("stats %+v", st)
	}
}
