package bench

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

func TestMain(m *testing.M) {
	if RunChild() { // the multi-process test re-runs this binary as children
		return
	}
	os.Exit(m.Run())
}

// cheatingHub is a broadcast server that misbehaves towards its first
// client on purpose: it drops every 10th message, sends message 20 twice
// and swaps messages 30 and 31. The bench must report exactly that.
type cheatingHub struct {
	mu      sync.Mutex
	clients []*cheatClient
	n       int // messages broadcast so far
	held    *msg
}

type msg struct {
	typ  int
	data []byte
}

type cheatClient struct {
	mu   sync.Mutex
	conn *websocket.Conn
}

func (c *cheatClient) send(m msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.conn.WriteMessage(m.typ, m.data)
}

func (h *cheatingHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &cheatClient{conn: conn}
	h.mu.Lock()
	h.clients = append(h.clients, c)
	h.mu.Unlock()
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		h.broadcast(msg{typ, data})
	}
}

func (h *cheatingHub) broadcast(m msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if pub, _, _, err := parsePayload(m.data); err == nil && pub == warmPub {
		for _, c := range h.clients {
			c.send(m) // the warm-up goes to everyone, untouched
		}
		return
	}
	k := h.n
	h.n++
	for i, c := range h.clients {
		if i != 0 {
			c.send(m)
			continue
		}
		switch {
		case k%10 == 9:
			// dropped
		case k == 20:
			c.send(m)
			c.send(m)
		case k == 30:
			h.held = &m
		case k == 31:
			c.send(m)
			c.send(*h.held)
		default:
			c.send(m)
		}
	}
}

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws"
}

func TestBenchReportsExactlyWhatTheServerDid(t *testing.T) {
	url := serve(t, &cheatingHub{})
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: url, Conns: 5, Publishers: 1,
		Messages: 100, Rate: 2000, Duration: time.Minute, Drain: 2 * time.Second,
		ConnectWorkers: 1, // the first receiver to connect is the cheated one
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Fanout
	if f.Sent != 100 || f.Receivers != 5 || f.Expected != 500 {
		t.Fatalf("sent %d receivers %d expected %d", f.Sent, f.Receivers, f.Expected)
	}
	if f.Lost != 10 || f.Duplicates != 1 || f.Reordered != 1 || f.Received != 490 {
		t.Fatalf("lost %d dups %d reordered %d received %d; want 10, 1, 1, 490", f.Lost, f.Duplicates, f.Reordered, f.Received)
	}
	if p := f.PerPublisher; len(p) != 1 || p[0].Lost != 10 || p[0].Duplicates != 1 || p[0].Reordered != 1 {
		t.Fatalf("per publisher: %+v", p)
	}
	if f.Latency.Count != 490 {
		t.Fatalf("latency samples %d, want one per first delivery (490)", f.Latency.Count)
	}
}

func startFanout(t *testing.T) (string, *broadcast.Server) {
	t.Helper()
	srv, err := broadcast.New(broadcast.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws", srv
}

// Two child processes aggregate to the same totals as one process.
func TestMultiProcessAggregates(t *testing.T) {
	url, srv := startFanout(t)
	base := Config{
		Scenario: ScenarioFanout, URL: url, Conns: 40, Publishers: 2,
		Messages: 50, Rate: 1000, Duration: time.Minute, Drain: 5 * time.Second,
		SourceIPs: []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)},
	}
	one, err := Run(context.Background(), base, nil)
	if err != nil {
		t.Fatal(err)
	}
	split := base
	split.ConnsPerProc = 20
	two, err := Run(context.Background(), split, nil)
	if err != nil {
		t.Fatal(err)
	}
	if two.Procs != 2 || one.Procs != 1 {
		t.Fatalf("procs %d and %d, want 1 and 2", one.Procs, two.Procs)
	}
	for _, r := range []*Result{one, two} {
		f := r.Fanout
		if r.Connect.Connected != 40 || f.Sent != 100 || f.Expected != 4000 || f.Received != 4000 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 {
			t.Fatalf("procs=%d: connected %d sent %d expected %d received %d lost %d dups %d reordered %d",
				r.Procs, r.Connect.Connected, f.Sent, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered)
		}
		for _, p := range f.PerPublisher {
			if p.Sent != 50 || p.Received != 2000 || p.Lost != 0 {
				t.Fatalf("procs=%d: publisher %+v", r.Procs, p)
			}
		}
		if f.Latency.Count != 4000 {
			t.Fatalf("procs=%d: %d latency samples", r.Procs, f.Latency.Count)
		}
	}
	if st, want := srv.Stats(), 200+one.WarmupSent+two.WarmupSent; st.Published != want {
		t.Fatalf("server published %d, want %d (200 and the warm-ups)", st.Published, want)
	}
}

func TestParseIPs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		last string
	}{
		{"127.0.0.2-127.0.0.40", 39, "127.0.0.40"},
		{"127.0.1.0/30", 4, "127.0.1.3"},
		{"127.0.0.5, 127.0.0.9-127.0.0.10", 3, "127.0.0.10"},
	} {
		ips, err := ParseIPs(tc.in)
		if err != nil || len(ips) != tc.n || ips[len(ips)-1].String() != tc.last {
			t.Errorf("%q: %v %v", tc.in, ips, err)
		}
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.1", "nope", "10.0.0.0/8", "::1/64"} {
		if _, err := ParseIPs(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Churning receivers come and go during the run (each comes back as a new
// receiver while the old one's read handler may still be running: the race
// detector watches that) and leave the counted receivers' figures exact.
func TestChurnLeavesTheCountedReceiversExact(t *testing.T) {
	url := serve(t, &cheatingHub{})
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioChurn, URL: url, Conns: 20, Publishers: 1,
		Messages: 100, Rate: 100, Duration: time.Minute, Drain: time.Second,
		ChurnRate:      40,
		ConnectWorkers: 1, // the first receiver to connect is the cheated one, and counted
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, f := res.Churn, res.Fanout
	if c == nil || c.Closed == 0 || c.Reconnected == 0 || c.Failed != 0 {
		t.Fatalf("churn %+v: want some closed and reconnected, none failed", c)
	}
	if f.Receivers != 18 || f.Sent != 100 || f.Lost != 10 || f.Duplicates != 1 || f.Reordered != 1 {
		t.Fatalf("receivers %d sent %d lost %d dups %d reordered %d; want 18, 100, 10, 1, 1", f.Receivers, f.Sent, f.Lost, f.Duplicates, f.Reordered)
	}
}
