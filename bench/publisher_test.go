package bench

import (
	"context"
	"net"
	"testing"
	"time"
)

// stuckConn is a publisher's connection whose first write takes until the
// publishing is over: the publisher cannot keep its rate.
type stuckConn struct {
	net.Conn
	until time.Time
}

func (c stuckConn) Write(b []byte) (int, error) {
	time.Sleep(time.Until(c.until)) // the fake's slowness, not a synchronisation
	return len(b), nil
}
func (stuckConn) SetWriteDeadline(time.Time) error { return nil }

// A publisher whose writes cannot keep up is reported behind its rate,
// by how much, in the stats and the table.
func TestPublisherBehind(t *testing.T) {
	cfg, err := Config{URL: "ws://127.0.0.1:1/ws", Rate: 1000, Duration: 200 * time.Millisecond, Publishers: 2}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	p := &publisher{cfg: cfg, nc: stuckConn{until: t0.Add(cfg.Duration)}, done: make(chan struct{}), payload: newPayload(cfg)}
	if err := p.runRate(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if got := p.sent.Load(); got != 1 {
		t.Fatalf("sent %d, want 1 (the first write took the whole run)", got)
	}
	r := &run{cfg: cfg, res: &Result{Config: cfg}, pubs: []*publisher{p}}
	fs := &FanoutStats{Publishers: 1}
	r.fanoutStats(fs, make([]pubCounts, 1), &Histogram{})
	ps := fs.PerPublisher[0]
	if ps.Due != 100 || ps.Behind != 99 || fs.PublishersBehind != 1 || fs.Behind != 99 {
		t.Fatalf("due %d behind %d; %d publishers behind by %d; want 100, 99, 1, 99", ps.Due, ps.Behind, fs.PublishersBehind, fs.Behind)
	}
}

// A publisher whose wake for its last message comes after the deadline
// (its first write returned late) still sends that message, due before
// the deadline: it is not behind for a late wake.
func TestPublisherSendsItsLastMessageLate(t *testing.T) {
	cfg, err := Config{URL: "ws://127.0.0.1:1/ws", Rate: 10, Duration: 200 * time.Millisecond}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// Due at 50 and 150 ms; the first write returns at 210 ms.
	p := &publisher{cfg: cfg, nc: stuckConn{until: t0.Add(210 * time.Millisecond)}, done: make(chan struct{}), payload: newPayload(cfg),
		offset: 50 * time.Millisecond}
	if err := p.runRate(context.Background(), t0); err != nil {
		t.Fatal(err)
	}
	if got := p.sent.Load(); got != 2 || behind(p.due(), got) != 0 {
		t.Fatalf("sent %d of %d due, %d behind; want 2 of 2, none", got, p.due(), behind(p.due(), got))
	}
}

func TestBehind(t *testing.T) {
	for _, c := range []struct{ due, sent, want uint64 }{
		{0, 0, 0}, {0, 5, 0}, {10, 10, 0}, {10, 11, 0}, {10, 9, 1},
		{10000, 9901, 0}, {10000, 9900, 100}, {10000, 4815, 5185},
	} {
		if got := behind(c.due, c.sent); got != c.want {
			t.Errorf("behind(%d, %d) = %d, want %d", c.due, c.sent, got, c.want)
		}
	}
}

// The progress line counts the connections while they come: the
// connecting phase's last point has every one of them (it was 0 for the
// whole ramp), in one process and over two.
func TestProgressCountsTheRamp(t *testing.T) {
	url, _ := startFanout(t)
	for _, perProc := range []int{20, 10} {
		var last Point
		phases := map[string]bool{}
		progress := func(p Point, phase string) { // called from Run's goroutine only
			phases[phase] = true
			if phase == "connecting" {
				last = p
			}
		}
		cfg := Config{Scenario: ScenarioConnect, URL: url, Conns: 20, ConnsPerProc: perProc, Hold: time.Millisecond}
		res, err := Run(context.Background(), cfg, progress)
		if err != nil {
			t.Fatal(err)
		}
		if res.Connect.Connected != 20 || !phases["connecting"] || last.Conns != 20 {
			t.Fatalf("conns-per-proc %d: %d connected, phases %v, last connecting point %+v", perProc, res.Connect.Connected, phases, last)
		}
	}
}
