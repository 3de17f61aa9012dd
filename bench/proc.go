package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sync"
	"time"
)

// A run's receivers live in one or more "procs": in this process, or in
// child processes of the same binary (when one process may not hold them
// all under its file limit). A proc connects its share, reports
// "connected", counts from "start", ticks every tickEvery, and on "stop"
// sends its result. In the rooms scenario its receivers publish too: they
// warm up on "warm" and publish from "start". Children speak JSON lines:
// commands on stdin, procMsg on stdout.

const tickEvery = 200 * time.Millisecond

// ConnectStats is the connect phase.
type ConnectStats struct {
	Attempted uint64 `json:"attempted"`
	Connected uint64 `json:"connected"`
	Failed    uint64 `json:"failed"`
	Retries   uint64 `json:"retries"`
	// Compressed counts the connections that negotiated
	// permessage-deflate (Config.Compression).
	Compressed uint64 `json:"compressed,omitempty"`
	// Joined counts, with the Pusher protocol, the subscriptions that
	// succeeded (pusher_internal:subscription_succeeded): a receiver
	// connects only once subscribed, so churn's reconnections count too.
	Joined    uint64  `json:"joined,omitempty"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	Handshake Summary `json:"handshake_latency"`
	// FirstError is why the first connection that failed for good
	// failed: the server's status line, the TLS error, the refusal.
	FirstError string `json:"first_error,omitempty"`
}

// add adds one proc's connect phase to c (all but the times and the
// handshake latency, which the run takes as a whole).
func (c *ConnectStats) add(o *ConnectStats) {
	c.Attempted += o.Attempted
	c.Connected += o.Connected
	c.Failed += o.Failed
	c.Retries += o.Retries
	c.Compressed += o.Compressed
	c.Joined += o.Joined
	if c.FirstError == "" {
		c.FirstError = o.FirstError
	}
}

type wireHist struct {
	Buckets [][2]int64 `json:"buckets,omitempty"`
	Max     int64      `json:"max,omitempty"`
	Sum     int64      `json:"sum,omitempty"`
}

func toWire(h *Histogram) wireHist {
	return wireHist{Buckets: h.Buckets(), Max: h.max.Load(), Sum: h.sum.Load()}
}

func (w wireHist) hist() *Histogram { return HistogramFrom(w.Buckets, w.Max, w.Sum) }

type procTick struct {
	Sec     int      `json:"sec"` // whole seconds since this proc got "start"
	Alive   int64    `json:"alive"`
	Frames  uint64   `json:"frames"` // cumulative
	Unique  uint64   `json:"unique"` // cumulative
	Errors  uint64   `json:"errors"`
	Latency wireHist `json:"latency"` // since the previous tick
	// Scenario rooms: messages the proc's clients wrote (cumulative), and
	// whether they have written all they will (Sent is then final).
	Sent      uint64 `json:"sent,omitempty"`
	Published bool   `json:"published,omitempty"`
	Last      int64  `json:"last,omitempty"` // when the latest counted message was read (unix ns)
}

// ChurnStats is the churn scenario's replacement work.
type ChurnStats struct {
	Closed      uint64 `json:"closed"`
	Reconnected uint64 `json:"reconnected"`
	Failed      uint64 `json:"failed"`
}

type procResult struct {
	Connect    ConnectStats     `json:"connect"`
	Handshake  wireHist         `json:"handshake"`
	Latency    wireHist         `json:"latency"`
	Stable     int              `json:"stable"`
	PerPub     []pubCounts      `json:"per_publisher"`
	Frames     uint64           `json:"frames"`
	Foreign    uint64           `json:"foreign"`
	Corrupt    uint64           `json:"corrupt"`
	Misrouted  uint64           `json:"misrouted,omitempty"`    // scenario fanout with spread channels
	OutOfOrder uint64           `json:"out_of_order,omitempty"` // json format: seq not above the connection's last`
	Wire       uint64           `json:"wire_bytes"`             // read by stable receivers while counting
	Errors     uint64           `json:"errors"`
	FirstError string           `json:"first_error,omitempty"` // the first of Errors
	Closes     map[string]int64 `json:"closes"`
	Slow       int              `json:"slow"`
	SlowCloses map[string]int64 `json:"slow_closes"`
	Churn      ChurnStats       `json:"churn"`
	Rooms      *roomCounts      `json:"rooms,omitempty"` // scenario rooms
}

type procMsg struct {
	Event     string        `json:"event"` // connecting | connected | warm | started | tick | result | error
	Connected *ConnectStats `json:"connected,omitempty"`
	Tick      *procTick     `json:"tick,omitempty"`
	Result    *procResult   `json:"result,omitempty"`
	Error     string        `json:"error,omitempty"`
	Stable    int           `json:"stable,omitempty"`  // with connected: receivers counted for loss
	Readers   int           `json:"readers,omitempty"` // with connected: receivers that read (not slow)
	Warm      int64         `json:"warm,omitempty"`    // with warm: readers that saw a warm-up message
	// With connected: of Stable, those on each spread channel (Config.Channels).
	SpreadStable []int `json:"spread_stable,omitempty"`
	// With connecting: receivers connected so far (cumulative).
	Connecting uint64 `json:"connecting,omitempty"`
	proc       int
}

// procSpec is what a proc is told to do.
type procSpec struct {
	Config      Config  `json:"config"`
	Index       int     `json:"index"`
	Conns       int     `json:"conns"`
	Offset      int     `json:"offset"` // first receiver's index over all procs (source addresses, rooms)
	ConnectRate float64 `json:"connect_rate"`
	ChurnRate   float64 `json:"churn_rate"`
}

// serveProc runs one proc's receivers: connect, report, wait for "start",
// count until "stop", report the result.
func serveProc(ctx context.Context, spec procSpec, cmds <-chan string, out func(procMsg)) {
	pool, err := newRecvPool(spec.Config, spec.Offset)
	if err != nil {
		out(procMsg{Event: "error", Error: err.Error()})
		return
	}
	pr := &procRun{spec: spec, pool: pool, out: out}
	pr.connect(ctx)
	if !pr.waitStart(ctx, cmds) {
		pool.close()
		return
	}
	pr.count(ctx, cmds)
	pr.report()
}

// procRun is one serveProc in progress. Only its goroutine touches it.
type procRun struct {
	spec       procSpec
	pool       *recvPool
	out        func(procMsg)
	churnEvery int          // every churnEvery-th receiver churns (0: none)
	connected  ConnectStats // the connect phase, as reported
	startedAt  time.Time    // "start": the ticks' seconds count from here
	churn      ChurnStats
}

// connect opens the proc's share of receivers and reports "connected".
func (pr *procRun) connect(ctx context.Context) {
	cfg, pool := pr.spec.Config, pr.pool
	slowEvery := 0
	switch cfg.Scenario {
	case ScenarioSlow:
		slowEvery = int(math.Round(1 / cfg.SlowFraction))
	case ScenarioChurn:
		pr.churnEvery = 10 // a tenth of the receivers come and go; the rest are counted
	}
	start := time.Now()
	ramp := make(chan struct{})
	var ramping sync.WaitGroup
	ramping.Add(1)
	go func() { // the ramp as it goes, for the live progress line
		defer ramping.Done()
		t := time.NewTicker(tickEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				pr.out(procMsg{Event: "connecting", Connecting: pool.connected.Load()})
			case <-ramp:
				return
			}
		}
	}()
	pool.connectAll(ctx, pr.spec.Conns, slowEvery, pr.churnEvery, pr.spec.ConnectRate)
	close(ramp)
	ramping.Wait() // "connected" is the last word on the ramp
	secs := time.Since(start).Seconds()
	pr.connected = ConnectStats{
		Attempted: pool.attempted.Load(), Connected: pool.connected.Load(),
		Failed: pool.failed.Load(), Retries: pool.retries.Load(), Compressed: pool.deflated.Load(), Joined: pool.joined.Load(),
		Seconds: secs, PerSecond: float64(pool.connected.Load()) / max(secs, 1e-9),
		Handshake: pool.handshake.Summary(), FirstError: pool.firstErr.text(),
	}
	stable, readers := 0, 0
	var spread []int
	if cfg.Channels > 0 {
		spread = make([]int, cfg.Channels)
	}
	pool.mu.Lock()
	for _, r := range pool.recvs {
		if r.stable {
			stable++
			if r.spread >= 0 {
				spread[r.spread]++
			}
		}
		if !r.slow {
			readers++
		}
	}
	pool.mu.Unlock()
	cs := pr.connected
	pr.out(procMsg{Event: "connected", Connected: &cs, Stable: stable, Readers: readers, SpreadStable: spread})
}

// waitStart reports the warm-up until "start" comes (or cmds closes); it
// returns false if ctx ended first. In rooms, "warm" has the clients warm
// themselves up (warmRooms) until "start".
func (pr *procRun) waitStart(ctx context.Context, cmds <-chan string) bool {
	warmTick := time.NewTicker(tickEvery / 4)
	defer warmTick.Stop()
	warmCtx, stopWarm := context.WithCancel(ctx)
	var warming sync.WaitGroup
	defer func() { stopWarm(); warming.Wait() }()
	for {
		select {
		case <-warmTick.C:
			pr.out(procMsg{Event: "warm", Warm: pr.pool.warm.Load()})
		case cmd, ok := <-cmds:
			switch {
			case !ok || cmd == "start":
				return true
			case cmd == "warm" && pr.pool.rooms:
				warming.Add(1)
				go func() {
					defer warming.Done()
					pr.pool.warmRooms(warmCtx)
				}()
			}
		case <-ctx.Done():
			return false
		}
	}
}

// count counts deliveries, ticking every tickEvery, churning receivers
// or having them publish (rooms) if the scenario says so, until "stop"
// (or ctx ends).
func (pr *procRun) count(ctx context.Context, cmds <-chan string) {
	pr.pool.counting.Store(true)
	pr.startedAt = time.Now()
	// The parent publishes only once every proc is counting: a message
	// that reached a proc still waiting for "start" would show as lost.
	// (Rooms' messages never leave their proc: its clients start now.)
	pr.out(procMsg{Event: "started"})
	bgCtx, stopBG := context.WithCancel(ctx)
	var bg sync.WaitGroup
	switch {
	case pr.churnEvery > 0 && pr.spec.ChurnRate > 0:
		bg.Add(1)
		go func() {
			defer bg.Done()
			pr.churn = pr.pool.churn(bgCtx, pr.spec.ChurnRate)
		}()
	case pr.pool.rooms:
		bg.Add(1)
		go func() {
			defer bg.Done()
			pr.pool.publishRooms(bgCtx, pr.startedAt)
		}()
	}
	ticker := time.NewTicker(tickEvery)
	defer ticker.Stop()
loop:
	for {
		select {
		case <-ticker.C:
			pr.tick()
		case cmd, ok := <-cmds:
			if !ok || cmd == "stop" {
				break loop
			}
		case <-ctx.Done():
			break loop
		}
	}
	stopBG()
	bg.Wait()
	pr.pool.counting.Store(false)
	pr.tick()
}

// tick reports the counters and the latency since the last tick.
func (pr *procRun) tick() {
	pool := pr.pool
	// Published before Sent: once it says so, Sent is final.
	t := procTick{Sec: int(time.Since(pr.startedAt) / time.Second), Alive: pool.alive.Load(),
		Published: pool.rooms && pool.published.Load(), Sent: pool.sent.Load(),
		Frames: pool.frames.Load(), Unique: pool.unique.Load(), Errors: pool.errs.Load(), Last: pool.lastAt.Load()}
	t.Latency = toWire(&pool.tick)
	pool.tick.Reset()
	pr.out(procMsg{Event: "tick", Tick: &t})
}

// report lets the slow receivers read at last, to learn how the server
// treated them, then sends the proc's result and closes its receivers.
func (pr *procRun) report() {
	pool := pr.pool
	res := procResult{Connect: pr.connected, Churn: pr.churn}
	res.Slow, res.SlowCloses = pr.readSlow()
	res.PerPub, res.Stable = pool.snapshot(pr.spec.Config.allPublishers())
	res.Handshake = toWire(&pool.handshake)
	res.Latency = toWire(&pool.lat)
	res.Frames = pool.frames.Load()
	res.Foreign = pool.foreign.Load()
	res.Corrupt = pool.corrupt.Load()
	res.OutOfOrder = pool.outOfOrder.Load()
	if !pool.rooms {
		res.Misrouted = pool.misrouted.Load()
	}
	res.Wire = pool.wire.Load()
	res.Errors = pool.errs.Load()
	res.FirstError = pool.firstRunErr.text()
	res.Closes = pool.closeCodes()
	if pool.rooms {
		rc := pool.roomSnapshot()
		res.Rooms = &rc
	}
	pool.close()
	pr.out(procMsg{Event: "result", Result: &res})
}

// readSlow reads every slow receiver for up to 3 s, 256 at a time, and
// counts how each ended: its close code, 1006 for none, or "open".
func (pr *procRun) readSlow() (n int, closes map[string]int64) {
	slow := pr.pool.filter(func(r *receiver) bool { return r.slow })
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, r := range slow {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.readSlow(3 * time.Second)
		}()
	}
	wg.Wait()
	closes = map[string]int64{}
	for _, r := range slow {
		r.mu.Lock()
		code := fmt.Sprint(int(r.closeCode))
		if !r.done {
			code = "open"
		}
		r.mu.Unlock()
		closes[code]++
	}
	return len(slow), closes
}

// churn replaces churn receivers, one at a time, at rate per second.
func (p *recvPool) churn(ctx context.Context, rate float64) ChurnStats {
	var st ChurnStats
	pool := p.filter(func(r *receiver) bool { return r.churn })
	if len(pool) == 0 {
		return st
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return st
		case <-t.C:
		}
		k := i % len(pool)
		old := pool[k]
		old.hangUp()
		st.Closed++
		// A new receiver, not old reconnected: old's read handler may still
		// be running after hangUp (netpoll runs one already submitted), and
		// must find only its own, closed connection.
		r := &receiver{pool: p, idx: old.idx, room: old.room, spread: old.spread, slot: old.slot, churn: true}
		if err := p.open(ctx, r); err != nil {
			if ctx.Err() != nil {
				return st
			}
			st.Failed++
			continue
		}
		pool[k] = r
		p.mu.Lock()
		p.recvs[r.slot] = r
		p.mu.Unlock()
		st.Reconnected++
	}
}

// proc is the parent's handle on one proc.
type proc interface {
	send(cmd string)
	wait() error
}

type localProc struct {
	cmds chan string
	done chan struct{}
}

func (l *localProc) send(cmd string) { l.cmds <- cmd }
func (l *localProc) wait() error     { <-l.done; return nil }

func startLocal(ctx context.Context, spec procSpec, events chan<- procMsg) *localProc {
	l := &localProc{cmds: make(chan string, 4), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		serveProc(ctx, spec, l.cmds, func(m procMsg) { m.proc = spec.Index; events <- m })
	}()
	return l
}

type childProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
}

func (c *childProc) send(cmd string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.stdin, cmd)
}

func (c *childProc) wait() error {
	c.stdin.Close()
	return c.cmd.Wait()
}

// ChildEnv names the environment variable that turns the bench binary
// into a child proc; its value is the procSpec in JSON.
const ChildEnv = "FANOUT_BENCH_CHILD"

func startChild(ctx context.Context, spec procSpec, events chan<- procMsg) (*childProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), ChildEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var m procMsg
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				continue // not ours (a stray print)
			}
			m.proc = spec.Index
			events <- m
		}
	}()
	return &childProc{cmd: cmd, stdin: stdin}, nil
}

// RunChild runs this process as a child proc if ChildEnv is set; it
// returns false otherwise. Binaries that use Run call it first thing.
func RunChild() bool {
	js := os.Getenv(ChildEnv)
	if js == "" {
		return false
	}
	var spec procSpec
	err := json.Unmarshal([]byte(js), &spec)
	if err == nil {
		spec.Config, err = spec.Config.WithDefaults() // rebuilds what JSON does not carry
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fanout-bench child:", err)
		os.Exit(2)
	}
	cmds := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	enc := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	serveProc(context.Background(), spec, cmds, func(m procMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	})
	os.Exit(0)
	return true
}
