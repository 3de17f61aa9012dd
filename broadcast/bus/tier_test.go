package bus_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/bus"
	"github.com/fanout/fanout/broadcast/bus/bustest"
	"github.com/fanout/fanout/broadcast/internal/servertest"
	"github.com/fanout/fanout/broadcast/pusher"
)

// natsAt runs an in-process NATS server with JetStream (bustest).
func natsAt(t *testing.T, dir string, port int, opts func(*natsserver.Options)) *natsserver.Server {
	t.Helper()
	return bustest.StartJetStream(t, dir, port, opts)
}

// oneNode is a NATS server, one node on it and a raw client of the node.
func oneNode(t *testing.T) (*natsserver.Server, *node, *client) {
	t.Helper()
	ns := natsAt(t, t.TempDir(), 0, nil)
	n := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	c := dial(t, n, "raw")
	servertest.WaitConns(t, n.Server.Server, 1)
	return ns, n, c
}

// node is one fanout server joined to the tier through its bus.
type node struct {
	*servertest.Server
	bus *bus.JetStream
}

// joinTier starts a server on the tier at url and waits until its bus has
// joined (the stream's messages so far delivered), before it serves.
func joinTier(t *testing.T, url string, cfg broadcast.Config, bcfg bus.Config) *node {
	t.Helper()
	n := &node{}
	bcfg.URL = url
	if bcfg.Logger == nil {
		bcfg.Logger = servertest.QuietLogger()
	}
	if bcfg.Storage == 0 {
		bcfg.Storage = jetstream.FileStorage
	}
	cfg.ClientRate = 0
	n.Server = servertest.StartWith(t, cfg, func(s *broadcast.Server) {
		b, err := bus.New(bcfg, s)
		if err != nil {
			t.Fatal(err)
		}
		s.SetBus(b)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := b.Start(ctx); err != nil {
			_ = b.Close()
			t.Fatal(err)
		}
		n.bus = b
	})
	t.Cleanup(func() { _ = n.bus.Close() }) // before the server shuts down
	return n
}

// client is a raw-format client on the default channel that reads every
// message into a list, in order, until the test ends.
type client struct {
	name string
	conn *websocket.Conn
	mu   sync.Mutex
	got  []string // guarded by mu
	err  error    // guarded by mu: why reading stopped
}

func dial(t *testing.T, n *node, name string) *client {
	t.Helper()
	c := &client{name: name, conn: servertest.DialGorilla(t, n.URL)}
	go func() {
		for {
			_, p, err := c.conn.ReadMessage()
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.got = append(c.got, string(p))
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *client) messages() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// waitCount waits until c has n messages (or more: checked by the caller).
func (c *client) waitCount(t *testing.T, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c.mu.Lock()
		got, err := len(c.got), c.err
		c.mu.Unlock()
		if got >= n {
			return c.messages()
		}
		if err != nil {
			t.Fatalf("%s: reading stopped after %d of %d messages: %v", c.name, got, n, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d messages after 30s", c.name, got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectSameOnce checks that every client got exactly want's messages,
// each once, and all of them in the same order; then that nothing more
// arrives behind a last message published through first.
func expectSameOnce(t *testing.T, want []string, first *node, clients ...*client) {
	t.Helper()
	var order []string
	for _, c := range clients {
		got := c.waitCount(t, len(want))
		seen := map[string]int{}
		for _, m := range got {
			seen[m]++
		}
		for _, m := range want {
			if seen[m] != 1 {
				t.Fatalf("%s got %q %d times, want once (%d messages)", c.name, m, seen[m], len(got))
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s got %d messages, want %d", c.name, len(got), len(want))
		}
		if order == nil {
			order = got
		} else if !slices.Equal(order, got) {
			i := 0
			for i < len(got) && got[i] == order[i] {
				i++
			}
			t.Fatalf("%s's order differs from %s's at %d: %q, not %q", c.name, clients[0].name, i, got[i], order[i])
		}
	}
	// A last message through the tier: each client's next is that one,
	// so nothing else (a duplicate, a straggler) came in between.
	publish(t, first, "", "the end", "")
	for _, c := range clients {
		got := c.waitCount(t, len(want)+1)
		if len(got) != len(want)+1 || got[len(want)] != "the end" {
			t.Fatalf("%s: after the %d messages got %q, want only \"the end\"", c.name, len(want), got[len(want):])
		}
	}
}

// publish publishes text through n's API path (acknowledged by
// JetStream); key is its idempotency key, if any.
func publish(t *testing.T, n *node, channel, text, key string) broadcast.Receipt {
	t.Helper()
	kind := broadcast.KindText
	if strings.HasPrefix(text, `"`) {
		kind = broadcast.KindJSON // a JSON string: itself in the envelope
	}
	r, err := n.Publish(broadcast.Message{Channel: channel, Kind: kind, Payload: []byte(text), IdempotencyKey: key})
	if err != nil {
		t.Fatalf("publish %q: %v", text, err)
	}
	return r
}

// Three nodes, clients on each, publishers on each (a client's messages
// and backends' publishes, at once): every client receives every message
// once, and all clients in the same order, the stream's.
func TestTierOneOrder(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	var nodes []*node
	var clients []*client
	for i := range 3 {
		n := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
		nodes = append(nodes, n)
		for j := range 2 {
			clients = append(clients, dial(t, n, fmt.Sprintf("node%d/client%d", i, j)))
		}
		servertest.WaitConns(t, n.Server.Server, 2)
	}
	const each = 100
	var want []string
	var wg sync.WaitGroup
	seqs := make([][]uint64, len(nodes))
	for i, n := range nodes {
		for k := range each {
			want = append(want, fmt.Sprintf("ws %d/%d", i, k), fmt.Sprintf("api %d/%d", i, k))
		}
		wg.Add(2)
		go func() { // a client of the node publishes
			defer wg.Done()
			for k := range each {
				if err := clients[2*i].conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "ws %d/%d", i, k)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // and a backend, through the node's API
			defer wg.Done()
			for k := range each {
				r, err := n.Publish(broadcast.Message{Payload: fmt.Appendf(nil, "api %d/%d", i, k)})
				if err != nil {
					t.Error(err)
					return
				}
				seqs[i] = append(seqs[i], r.Seq)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	expectSameOnce(t, want, nodes[0], clients...)
	// Receipts carry the stream's seq: distinct over the tier, rising per
	// publisher.
	all := map[uint64]bool{}
	for i, s := range seqs {
		if !slices.IsSorted(s) {
			t.Errorf("node %d's receipts' seqs do not rise: %v", i, s)
		}
		for _, q := range s {
			if all[q] {
				t.Errorf("seq %d given twice", q)
			}
			all[q] = true
		}
	}
}

// proxy is a TCP proxy between a node and NATS that the test can cut:
// every connection through it is closed, and new ones are closed at once,
// until it is restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool                // guarded by mu
	conns  map[net.Conn]string // guarded by mu
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]string{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c], p.conns[up] = "client", "server"
	p.mu.Unlock()
	go func() { io.Copy(up, c); up.Close(); c.Close() }()
	io.Copy(c, up)
	c.Close()
	up.Close()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// One node's own link to NATS is cut alone for 2 s while the other nodes
// publish: when it is back, its clients receive everything, in the order
// the others' did (the old bus lost it all, for good).
func TestTierLinkCut(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	p := startProxy(t, ns.Addr().String())
	c := joinTier(t, p.url(), broadcast.Config{}, bus.Config{})
	ca, cb, cc := dial(t, a, "a"), dial(t, b, "b"), dial(t, c, "c")
	for _, n := range []*node{a, b, c} {
		servertest.WaitConns(t, n.Server.Server, 1)
	}
	var want []string
	send := func(n *node, text string) {
		publish(t, n, "", text, "")
		want = append(want, text)
	}
	for k := range 20 {
		send(a, fmt.Sprintf("before %d", k))
	}
	cc.waitCount(t, 20) // c is live on the tier before its link goes
	p.cut()
	servertest.WaitFor(t, "c's bus to see its link gone", func() bool { return !c.bus.Connected() })
	if _, err := c.Publish(broadcast.Message{Payload: []byte("from c, cut off")}); err == nil {
		t.Fatal("c published while cut off from NATS: want a refusal")
	}
	outage := time.Now().Add(2 * time.Second) // the scenario: 2 s without a link
	for k := 0; time.Now().Before(outage); k++ {
		send([]*node{a, b}[k%2], fmt.Sprintf("during %d", k))
		time.Sleep(5 * time.Millisecond) // a publisher's pace, not a synchronization
	}
	if got := len(cc.messages()); got != 20 {
		t.Fatalf("c's client got %d messages while c was cut off, want the 20 from before", got)
	}
	p.restore()
	servertest.WaitFor(t, "c's bus to reconnect", c.bus.Connected)
	for k := range 20 {
		send(b, fmt.Sprintf("after %d", k))
	}
	t.Logf("%d messages, %d of them while c was cut off", len(want), len(want)-40)
	expectSameOnce(t, want, a, ca, cb, cc)
	if st := c.bus.Stats(); st.Gaps != 0 || st.Reconnects == 0 {
		t.Errorf("c's bus: %d gaps, %d reconnects; want 0 gaps, a reconnect", st.Gaps, st.Reconnects)
	}
}

// NATS is restarted mid-run, on the same port and store (file storage):
// publishers that retry what was refused, with the same idempotency key,
// lose nothing and duplicate nothing; every client gets every message
// once, in one order.
func TestTierNATSRestart(t *testing.T) {
	dir := t.TempDir()
	ns := natsAt(t, dir, 0, nil)
	port := ns.Addr().(*net.TCPAddr).Port
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	ca, cb := dial(t, a, "a"), dial(t, b, "b")
	servertest.WaitConns(t, a.Server.Server, 1)
	servertest.WaitConns(t, b.Server.Server, 1)
	const total = 300
	var want []string
	refused := 0
	restarted := false
	deadline := time.Now().Add(60 * time.Second)
	for k := 0; k < total; k++ {
		if k == total/3 && !restarted {
			ns.Shutdown()
			ns.WaitForShutdown()
			ns = natsAt(t, dir, port, nil)
			restarted = true
		}
		text, key := fmt.Sprintf("m%d", k), fmt.Sprintf("key-%d", k)
		for n := []*node{a, b}[k%2]; ; refused++ {
			_, err := n.Publish(broadcast.Message{Payload: []byte(text), IdempotencyKey: key})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %q still refused after 60s: %v", text, err)
			}
			time.Sleep(20 * time.Millisecond) // a publisher's retry pace
		}
		want = append(want, text)
	}
	t.Logf("%d messages published across the restart; %d publishes refused and retried", total, refused)
	expectSameOnce(t, want, a, ca, cb)
}

// welcome and message of the json format.
type envelope struct {
	Type      string          `json:"type"`
	Epoch     string          `json:"epoch"`
	Seq       uint64          `json:"seq"`
	Recovered *bool           `json:"recovered"`
	Channel   string          `json:"channel"`
	Data      json.RawMessage `json:"data"`
}

func readEnvelope(t *testing.T, c *websocket.Conn) envelope {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, p, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e envelope
	if err := json.Unmarshal(p, &e); err != nil {
		t.Fatalf("%q: %v", p, err)
	}
	return e
}

// A client reads on one node, drops, and resumes on another with its
// cursor: it gets exactly what it missed on its channel, recovered, then
// the live messages.
func TestTierResumeOnAnotherNode(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	conn := servertest.DialGorilla(t, a.URL+"?channel=room&format=json")
	w := readEnvelope(t, conn)
	if w.Type != "welcome" || w.Epoch != a.Epoch() || w.Epoch != b.Epoch() {
		t.Fatalf("welcome %+v; want the stream's epoch, the same on both nodes (%s, %s)", w, a.Epoch(), b.Epoch())
	}
	for k := range 5 {
		publish(t, b, "room", fmt.Sprintf(`"seen %d"`, k), "")
		publish(t, a, "other", `"not for it"`, "")
	}
	var last uint64
	for k := range 5 {
		e := readEnvelope(t, conn)
		if e.Channel != "room" || string(e.Data) != fmt.Sprintf(`"seen %d"`, k) {
			t.Fatalf("message %d: %+v", k, e)
		}
		last = e.Seq
	}
	conn.Close()
	var missed []uint64
	for k := range 5 {
		r := publish(t, a, "room", fmt.Sprintf(`"missed %d"`, k), "")
		publish(t, b, "other", `"not for it"`, "")
		missed = append(missed, r.Seq)
	}
	// Straight to b, with the seq a's receipt gave: b may not have it
	// yet, and waits for it rather than answer "not recovered".
	conn = servertest.DialGorilla(t, fmt.Sprintf("%s?channel=room&since=%s:%d", b.URL, w.Epoch, last))
	w2 := readEnvelope(t, conn)
	if w2.Type != "welcome" || w2.Recovered == nil || !*w2.Recovered || w2.Epoch != w.Epoch {
		t.Fatalf("welcome on the other node %+v, want recovered in epoch %s", w2, w.Epoch)
	}
	for k := range 5 {
		e := readEnvelope(t, conn)
		if e.Channel != "room" || string(e.Data) != fmt.Sprintf(`"missed %d"`, k) || e.Seq != missed[k] {
			t.Fatalf("replayed %d: %+v, want \"missed %d\" at seq %d", k, e, k, missed[k])
		}
	}
	r := publish(t, a, "room", `"live"`, "")
	if e := readEnvelope(t, conn); string(e.Data) != `"live"` || e.Seq != r.Seq {
		t.Fatalf("after the replay: %+v, want the live message at seq %d", e, r.Seq)
	}
}

// A burst far over a node's local backlog: the node takes the stream's
// messages only as its shards free room (back-pressure), so everything
// the stream acknowledged reaches its clients, in order.
func TestTierBurstOverBacklog(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	pub := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	// A backlog of 8 and shards that wait 5 ms before each batch: the
	// burst cannot fit.
	slow := joinTier(t, ns.ClientURL(), broadcast.Config{Backlog: 8, FlushDelay: 5 * time.Millisecond, Shards: 2}, bus.Config{})
	c1, c2 := dial(t, slow, "slow/1"), dial(t, slow, "slow/2")
	servertest.WaitConns(t, slow.Server.Server, 2)
	const burst = 2000
	want := make([]string, burst)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < burst; k += 4 {
				want[k] = fmt.Sprintf("burst %d", k)
				if _, err := pub.Publish(broadcast.Message{Payload: []byte(want[k])}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got := c1.waitCount(t, burst)
	slices.Sort(want) // the stream's order interleaves the 4 publishers
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if !slices.Equal(sorted, want) {
		t.Fatalf("the slow node's client got %d messages, not the %d acknowledged", len(got), burst)
	}
	expectSameOnce(t, got, pub, c1, c2)
	st := slow.Stats()
	if st.BacklogWaits == 0 {
		t.Errorf("the consumer never waited for the backlog: the test did not test back-pressure")
	}
	if st.Refused != 0 {
		t.Errorf("%d messages refused locally", st.Refused)
	}
	t.Logf("the consumer waited for the backlog %d times", st.BacklogWaits)
}

// A message over the NATS server's max_payload is refused at the API with
// an error that says so (413), before anything is sent; a client's is
// refused the same way, and counted.
func TestTierMaxPayload(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, func(o *natsserver.Options) { o.MaxPayload = 8192 })
	n := joinTier(t, ns.ClientURL(), broadcast.Config{MaxMessage: 64 << 10}, bus.Config{MaxMessage: 4096})
	srv := httptest.NewServer(api.PublishHandler(n.Server.Server, []string{"k"}, 64<<10))
	defer srv.Close()
	post := func(size int) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+"/publish", strings.NewReader(strings.Repeat("x", size)))
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	c := dial(t, n, "client")
	servertest.WaitConns(t, n.Server.Server, 1)
	if code, body := post(10_000); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "max_payload") {
		t.Fatalf("10,000 bytes over a max_payload of 8192: %d %s, want 413 naming max_payload", code, body)
	}
	if code, body := post(1000); code != http.StatusAccepted {
		t.Fatalf("1,000 bytes: %d %s, want 202", code, body)
	}
	c.waitCount(t, 1)
	refused := n.Stats().Refused
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("y", 10_000))); err != nil {
		t.Fatal(err)
	}
	servertest.WaitFor(t, "the client's message to be refused and counted", func() bool { return n.Stats().Refused > refused })
	expectSameOnce(t, []string{strings.Repeat("x", 1000)}, n, c)
}

// Channel names that are not NATS subject tokens (dots anywhere) travel
// on subjects of their own and arrive under their own names only.
func TestTierChannelNames(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	n := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	names := []string{"a..b", ".x", "y.", "a.b", "a-b", "room:1/blue=ok@home"}
	conns := map[string]*websocket.Conn{}
	for _, name := range names {
		c := servertest.DialGorilla(t, n.URL+"?format=json&channel="+name)
		if w := readEnvelope(t, c); w.Type != "welcome" {
			t.Fatalf("%q: %+v", name, w)
		}
		conns[name] = c
	}
	servertest.WaitConns(t, n.Server.Server, len(names))
	for _, name := range names {
		publish(t, n, name, `"to `+name+`"`, "")
	}
	for _, name := range names {
		e := readEnvelope(t, conns[name])
		if e.Channel != name || string(e.Data) != `"to `+name+`"` {
			t.Fatalf("on %q got %+v", name, e)
		}
	}
}

// A stream deleted and created again (a NATS server that lost its
// storage) is a new epoch: the node follows it from its first message,
// and a cursor of the old epoch is not recovered.
func TestTierStreamRecreated(t *testing.T) {
	ns, n, c := oneNode(t)
	old := publish(t, n, "", "old epoch", "")
	c.waitCount(t, 1)
	nc, err := natsConnect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), "fanout"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Publish(broadcast.Message{Payload: []byte("no stream")}); err == nil {
		t.Fatal("published with the stream gone")
	}
	servertest.WaitFor(t, "the node to find the stream gone and create it again", func() bool {
		return n.bus.Epoch() != old.Epoch
	})
	r := publish(t, n, "", "new epoch", "")
	if r.Epoch == old.Epoch || r.Seq != 1 {
		t.Fatalf("receipt %+v after the stream was recreated, want seq 1 in a new epoch (old %s)", r, old.Epoch)
	}
	if got := c.waitCount(t, 2); got[1] != "new epoch" {
		t.Fatalf("got %q", got)
	}
	conn := servertest.DialGorilla(t, fmt.Sprintf("%s?since=%s:%d", n.URL, old.Epoch, old.Seq))
	if w := readEnvelope(t, conn); w.Recovered == nil || *w.Recovered || w.Epoch != r.Epoch || w.Seq != 1 {
		t.Fatalf("resume from the old epoch: %+v, want not recovered, at %s:1", w, r.Epoch)
	}
	if st := n.bus.Stats(); st.Epochs != 1 {
		t.Errorf("%d epochs counted, want 1", st.Epochs)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                 "nats://127.0.0.1:4222",
		"nats://alice:pw@h:4222":                "nats://alice:redacted@h:4222",
		"nats://s3cr3t-token@h:4222":            "nats://redacted@h:4222",
		"nats://a:b@h1:4222, tls://c:d@h2:4222": "nats://a:redacted@h1:4222,tls://c:redacted@h2:4222",
		"h:4222":                                "h:4222",
		"user:pw@h:4222":                        "[redacted]@h:4222",
		"nats://al%ice:p%40ss@h:4222":           "[redacted]@h:4222", // unparsable: all of its user part goes
	} {
		if got := bus.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func natsConnect(url string) (*nats.Conn, error) { return nats.Connect(url) }

// An EventSource resuming on another node with Last-Event-ID (what it
// sends by itself after a drop) gets what it missed, each event's id the
// tier's cursor.
func TestTierSSEResumeOnAnotherNode(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	seen := publish(t, a, "news", "seen", "")
	var missed []broadcast.Receipt
	for k := range 3 {
		missed = append(missed, publish(t, a, "news", fmt.Sprintf("missed %d", k), ""))
		publish(t, a, "sports", "not for it", "")
	}
	req, _ := http.NewRequest("GET", "http://"+b.Addr+"/sse?channel=news", nil)
	req.Header.Set("Last-Event-ID", fmt.Sprintf("%s:%d", seen.Epoch, seen.Seq))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	event := func() (id string, data envelope) {
		t.Helper()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("event stream: %v", err)
			}
			switch line = strings.TrimSuffix(line, "\n"); {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &data); err != nil {
					t.Fatalf("%q: %v", line, err)
				}
			case line == "" && id != "":
				return id, data
			}
		}
	}
	if _, w := event(); w.Type != "welcome" || w.Recovered == nil || !*w.Recovered {
		t.Fatalf("welcome %+v, want recovered", w)
	}
	for k, r := range missed {
		id, e := event()
		if want := fmt.Sprintf("%s:%d", r.Epoch, r.Seq); id != want || string(e.Data) != fmt.Sprintf(`"missed %d"`, k) {
			t.Fatalf("event %d: id %s %+v, want id %s \"missed %d\"", k, id, e, want, k)
		}
	}
}

// A node starts on a stream whose last message was deleted (LastSeq names
// a message that is gone): it joins all the same, and serves.
func TestTierStartLastDeleted(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	for k := range 3 {
		publish(t, a, "", fmt.Sprint("m", k), "")
	}
	js := jetStreamOf(t, ns)
	s, err := js.Stream(context.Background(), "fanout")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{}) // fails the test if Start never returns
	if last := b.Server.Server.Stats().Published; last != 2 {
		t.Fatalf("the new node took %d messages from the stream, want the 2 left", last)
	}
}

func jetStreamOf(t *testing.T, ns *natsserver.Server) jetstream.JetStream {
	t.Helper()
	nc, err := natsConnect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// The stream is deleted, created again and filled by someone else before
// the node looks: the node finds the new stream as its consumer comes back
// on it, and delivers its messages once, under the new epoch, not under
// the old one first. Clients that resume by cursor are asked to reconnect
// (1001), for a welcome in the new epoch; raw ones carry on.
func TestTierRecreatedAndRefilled(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	n := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	c := dial(t, n, "raw")
	jsonConn := servertest.DialGorilla(t, n.URL+"?format=json")
	readEnvelope(t, jsonConn) // the welcome
	servertest.WaitConns(t, n.Server.Server, 2)
	old := publish(t, n, "", "old1", "")
	publish(t, n, "", "old2", "")
	c.waitCount(t, 2)
	readEnvelope(t, jsonConn)
	readEnvelope(t, jsonConn)
	js := jetStreamOf(t, ns)
	ctx := context.Background()
	s, err := js.Stream(ctx, "fanout")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "fanout"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	want := []string{"old1", "old2"}
	for k := 1; k <= 6; k++ {
		m := nats.NewMsg("fanout.d")
		m.Header.Set(bus.HeaderKind, "0")
		m.Data = fmt.Appendf(nil, "new%d", k)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, string(m.Data))
	}
	got := c.waitCount(t, len(want))
	if !slices.Equal(got[:len(want)], want) {
		t.Fatalf("raw client got %q, want %q", got, want)
	}
	_ = jsonConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = jsonConn.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("the json client, after the epoch changed: %v, want a 1001 close", err)
	}
	if n.Epoch() == old.Epoch {
		t.Fatalf("epoch still %s", old.Epoch)
	}
	expectSameOnce(t, want, n, c)
}

// Messages in the stream that fanout would not have published (another
// subject under the stream, a kind it does not know, text that is not
// UTF-8, JSON that is not JSON) are not delivered, and counted; the
// history stays whole across them (a resume over them is recovered).
func TestTierForeignMessages(t *testing.T) {
	ns, n, c := oneNode(t)
	first := publish(t, n, "", "first", "")
	js := jetStreamOf(t, ns)
	for _, f := range []struct{ subject, kind, data string }{
		{"fanout.other", "0", "not a channel subject"},
		{"fanout.d", "7", "an unknown kind"},
		{"fanout.d", "0", "\xff\xfe not UTF-8"},
		{"fanout.d", "2", "{not json"},
		{"fanout.d", "", "no kind at all"},
	} {
		m := nats.NewMsg(f.subject)
		if f.kind != "" {
			m.Header.Set(bus.HeaderKind, f.kind)
		}
		m.Data = []byte(f.data)
		if _, err := js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, n, "", "last", "")
	expectSameOnce(t, []string{"first", "last"}, n, c)
	if st := n.Stats(); st.TierInvalid != 5 {
		t.Errorf("%d invalid messages counted, want 5", st.TierInvalid)
	}
	conn := servertest.DialGorilla(t, fmt.Sprintf("%s?since=%s:%d", n.URL, first.Epoch, first.Seq))
	if w := readEnvelope(t, conn); w.Recovered == nil || !*w.Recovered {
		t.Fatalf("resume across the foreign messages: %+v, want recovered", w)
	}
	if e := readEnvelope(t, conn); string(e.Data) != `"last"` {
		t.Fatalf("replayed %+v, want only \"last\"", e)
	}
}

// An unparsable URL's error quotes the URL: the secret in it is scrubbed.
func TestNewScrubsURLErrors(t *testing.T) {
	_, err := bus.New(bus.Config{URL: "nats://alice:s3cr3t-pw@127.0.0.1:99999x", Logger: servertest.QuietLogger()}, nil)
	if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Fatalf("New: %v; want an error without the password", err)
	}
}

// Concurrent publishes cost JetStream one request each, nothing more: a
// publish must not look up the stream because acks came back out of
// order (it did, for most publishes: 8,754 API requests for 9,490).
func TestTierPublishCostsOneRequest(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	n := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	apiTotal := func() uint64 {
		info, err := ns.Jsz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return info.API.Total
	}
	before := apiTotal()
	const publishers, each = 8, 100
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				if _, err := n.Publish(broadcast.Message{Payload: fmt.Appendf(nil, "%d/%d", p, k)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Publishes are not API requests; the node's own stream reads (the
	// watch, every 5 s) are a few at most.
	if extra := apiTotal() - before; extra > 20 {
		t.Fatalf("%d JetStream API requests for %d publishes, want a few at most", extra, publishers*each)
	}
}

// An idempotency key is the message's Nats-Msg-Id: a repeat through
// another node is answered with the first one's seq, marked a repeat,
// and delivered once.
func TestTierIdempotencyAcrossNodes(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	a := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	b := joinTier(t, ns.ClientURL(), broadcast.Config{}, bus.Config{})
	c := dial(t, a, "a")
	servertest.WaitConns(t, a.Server.Server, 1)
	first := publish(t, a, "", "once", "order-42")
	again := publish(t, b, "", "once", "order-42")
	if !again.Repeat || again.Seq != first.Seq || first.Repeat {
		t.Fatalf("first %+v, repeat through another node %+v: want the same seq, marked a repeat", first, again)
	}
	expectSameOnce(t, []string{"once"}, a, c)
}

// Pusher clients on two nodes of the tier: an API event published through
// one reaches both with its event name; a client event from a node's
// client reaches every other subscriber, on both nodes, with its user,
// and not its sender (each node finds its own sender by socket_id); a
// channel name with ';' and ',' crosses as it is.
func TestTierPusher(t *testing.T) {
	ns := natsAt(t, t.TempDir(), 0, nil)
	app := pusher.App{ID: "1", Key: "k", Secret: "s"}
	apps, err := pusher.NewApps([]pusher.App{app})
	if err != nil {
		t.Fatal(err)
	}
	cfg := broadcast.Config{Pusher: &pusher.Config{Apps: apps}}
	a := joinTier(t, ns.ClientURL(), cfg, bus.Config{})
	b := joinTier(t, ns.ClientURL(), cfg, bus.Config{})
	const room = "presence-a;b,c"
	pa := servertest.DialPusher(t, a.Addr, "k")
	pb := servertest.DialPusher(t, b.Addr, "k")
	pb2 := servertest.DialPusher(t, b.Addr, "k")
	for i, p := range []*servertest.PusherClient{pa, pb, pb2} {
		e := p.Subscribe(t, app, room, fmt.Sprintf(`{"user_id":"u%d"}`, i))
		if e.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("subscribe: %s", e)
		}
	}
	// b's two clients see each other join (presence is per node).
	if e := pb.Next(t); e.Event != "pusher_internal:member_added" || !strings.Contains(e.Str(t), `"u2"`) {
		t.Fatalf("pb: %s", e)
	}
	if code, body := servertest.PusherAPI(t, a.Pusher(), app, "POST", "/events", map[string]any{"name": "news", "channel": room, "data": "hello"}); code != 200 {
		t.Fatalf("events: %d %s", code, body)
	}
	for _, p := range []*servertest.PusherClient{pa, pb, pb2} {
		if e := p.Next(t); e.Event != "news" || e.Channel != room || e.Str(t) != "hello" {
			t.Errorf("got %s", e)
		}
	}
	pb.Send(t, "client-typing", room, map[string]bool{"on": true})
	for _, p := range []*servertest.PusherClient{pa, pb2} {
		if e := p.Next(t); e.Event != "client-typing" || e.UserID != "u1" || e.Str(t) != `{"on":true}` {
			t.Errorf("client event got %s", e)
		}
	}
	// pb's next is this, not its own client event.
	publish(t, a, room, `"after"`, "")
	for _, p := range []*servertest.PusherClient{pb, pa, pb2} {
		if e := p.Next(t); e.Event != "message" || e.Str(t) != `"after"` {
			t.Errorf("got %s, want the message after (no echo of a client event)", e)
		}
	}
}
