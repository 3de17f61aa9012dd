package bench

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// FanoutStats is what receivers saw of the published messages. Only the
// stable receivers count (not slow ones, not churning ones).
type FanoutStats struct {
	Publishers     int     `json:"publishers"`
	Sent           uint64  `json:"sent"`
	Receivers      int     `json:"receivers"`
	Expected       uint64  `json:"expected"`
	Received       uint64  `json:"received"` // distinct (publisher, seq) per receiver
	Lost           uint64  `json:"lost"`
	LossRatio      float64 `json:"loss_ratio"`
	Duplicates     uint64  `json:"duplicates"`
	Reordered      uint64  `json:"reordered"`
	Foreign        uint64  `json:"foreign"` // messages without the bench header
	Seconds        float64 `json:"seconds"` // first send to last delivery
	PerSecond      float64 `json:"deliveries_per_second"`
	WindowTimeouts uint64  `json:"window_timeouts,omitempty"`
	Latency        Summary `json:"latency"`
	// PerPublisher splits the counts by publisher: each publisher's own
	// loss, duplicates and reordering, over all counted receivers.
	PerPublisher []PublisherStats `json:"per_publisher"`
}

// PublisherStats is one publisher's messages as the receivers saw them.
type PublisherStats struct {
	Publisher  int    `json:"publisher"`
	Sent       uint64 `json:"sent"`
	Expected   uint64 `json:"expected"`
	Received   uint64 `json:"received"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
}

// SlowStats is the slow scenario's view of the receivers that stopped.
type SlowStats struct {
	Receivers int              `json:"receivers"`
	Closes    map[string]int64 `json:"closes"` // close code (or "open", 1006 for no frame) -> count
}

// ServerCost is the server's resources as sampled from outside.
type ServerCost struct {
	Before       ServerSample   `json:"before"`
	Connected    ServerSample   `json:"connected"`
	PublishStart ServerSample   `json:"publish_start"`
	End          ServerSample   `json:"end"`
	AfterClose   *ServerSample  `json:"after_close,omitempty"`
	Samples      []ServerSample `json:"samples"`
	PeakRSS      int64          `json:"peak_rss_bytes"` // highest RSS sampled during the run
	BytesPerConn float64        `json:"rss_bytes_per_conn"`
	FDsPerConn   float64        `json:"fds_per_conn"`
	Baseline     *bool          `json:"fds_returned_to_baseline,omitempty"`
	// CPUPerDelivery is server CPU (user+system) from the first publish to
	// the end of the drain, divided by the deliveries counted.
	CPUPerDelivery time.Duration `json:"cpu_per_delivery_ns,omitempty"`
}

// Point is one second of the run.
type Point struct {
	Second     int     `json:"second"`
	Conns      int64   `json:"conns"`
	Deliveries float64 `json:"deliveries_per_second"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Errors     uint64  `json:"errors"`
	ServerRSS  int64   `json:"server_rss_bytes,omitempty"`
}

// Result is everything a run measured.
type Result struct {
	Env     Env              `json:"env"`
	Config  Config           `json:"config"`
	Procs   int              `json:"procs"`
	Connect ConnectStats     `json:"connect"`
	Fanout  *FanoutStats     `json:"fanout,omitempty"`
	Slow    *SlowStats       `json:"slow,omitempty"`
	Churn   *ChurnStats      `json:"churn,omitempty"`
	Server  *ServerCost      `json:"server,omitempty"`
	Closes  map[string]int64 `json:"closes"` // server close codes seen by receivers
	Series  []Point          `json:"series"`
	// WarmupIncomplete counts reading receivers that saw no warm-up
	// message within 10 s (their first messages may show as lost).
	WarmupIncomplete uint64 `json:"warmup_incomplete,omitempty"`
	// WarmupSent is the number of (uncounted) warm-up messages published.
	WarmupSent uint64 `json:"warmup_sent"`
	// PublisherErrors lists publishers that stopped early, and why.
	PublisherErrors []string   `json:"publisher_errors,omitempty"`
	Histogram       [][2]int64 `json:"latency_histogram"`
}

// Progress, if set, gets one line per second while the run goes.
type Progress func(p Point, phase string)

// Run performs one scenario and returns its result.
func Run(ctx context.Context, cfg Config, progress Progress) (*Result, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(Point, string) {}
	}
	res := &Result{Env: ReadEnv(), Config: cfg, Procs: cfg.procs(), Closes: map[string]int64{}}
	t0 := time.Now()
	watchServer := len(cfg.ServerPIDs) > 0 || cfg.MetricsURL != ""
	sample := func(conns int64) ServerSample {
		s, err := sampleServers(cfg.ServerPIDs, cfg.MetricsURL)
		if err != nil {
			return ServerSample{}
		}
		s.At, s.Conns = time.Since(t0).Seconds(), conns
		return s
	}
	if watchServer {
		res.Server = &ServerCost{Before: sample(0)}
	}

	// Receivers: here, or spread over child processes.
	events := make(chan procMsg, 1024)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := res.Procs
	procs := make([]proc, n)
	for i := range procs {
		share := cfg.Conns / n
		if i < cfg.Conns%n {
			share++
		}
		spec := procSpec{
			Config: cfg, Index: i, Conns: share, Offset: i * cfg.ConnsPerProc,
			ConnectRate: cfg.ConnectRate / float64(n), ChurnRate: cfg.ChurnRate / float64(n),
		}
		if n == 1 {
			procs[i] = startLocal(ctx, spec, events)
			continue
		}
		c, err := startChild(ctx, spec, events)
		if err != nil {
			return nil, fmt.Errorf("bench: child %d: %w", i, err)
		}
		procs[i] = c
	}
	defer func() {
		cancel() // a run that ends early must not leave procs waiting for a command
		for _, p := range procs {
			_ = p.wait()
		}
	}()

	// Connect phase.
	connStart := time.Now()
	var hs Histogram
	var stableTotal, readersTotal uint64
	for got := 0; got < n; {
		select {
		case m := <-events:
			switch m.Event {
			case "connected":
				got++
				stableTotal += uint64(m.Stable)
				readersTotal += uint64(m.Readers)
				c := m.Connected
				res.Connect.Attempted += c.Attempted
				res.Connect.Connected += c.Connected
				res.Connect.Failed += c.Failed
				res.Connect.Retries += c.Retries
			case "error":
				return nil, fmt.Errorf("bench: proc %d: %s", m.proc, m.Error)
			}
		case <-time.After(time.Second):
			progress(Point{Second: int(time.Since(t0).Seconds())}, "connecting")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	res.Connect.Seconds = time.Since(connStart).Seconds()
	res.Connect.PerSecond = float64(res.Connect.Connected) / max(res.Connect.Seconds, 1e-9)
	if watchServer {
		res.Server.Connected = sample(int64(res.Connect.Connected))
	}

	// Publishers (not for connect).
	var pubs []*publisher
	if cfg.Scenario != ScenarioConnect {
		for i := 0; i < cfg.Publishers; i++ {
			p, err := connectPublisher(ctx, cfg, 1_000_000+i)
			if err != nil {
				return nil, fmt.Errorf("bench: publisher %d: %w", i, err)
			}
			p.id = uint16(i)
			pubs = append(pubs, p)
		}
	}
	// Warm-up: until every reading receiver has seen a message, it may
	// not be registered with the server yet (a client sees the 101 before
	// the server adds it to its table), and a message it misses then would
	// count as lost. Publisher 0 sends uncounted warm-up messages until
	// all have seen one, or 10 s pass (the rest then count as they are).
	if len(pubs) > 0 && readersTotal > 0 {
		warm := make([]int64, n)
		deadline := time.After(10 * time.Second)
		// The gap between warm-ups doubles (20 ms, 40 ms, ... 1 s): with
		// many receivers one warm-up takes seconds to reach them all, and a
		// fixed pace would queue a flood of them ahead of the measurement.
		gap := 20 * time.Millisecond
		next := time.NewTimer(0)
		defer next.Stop()
		payload := make([]byte, cfg.Size)
	warmup:
		for seq := uint64(0); ; {
			var total int64
			for _, w := range warm {
				total += w
			}
			if uint64(total) >= readersTotal {
				break
			}
			select {
			case m := <-events:
				switch m.Event {
				case "warm":
					warm[m.proc] = m.Warm
				case "error":
					return nil, fmt.Errorf("bench: proc %d: %s", m.proc, m.Error)
				}
			case <-next.C:
				next.Reset(gap)
				gap = min(2*gap, time.Second)
				putPayload(payload, warmPub, seq, time.Now().UnixNano())
				seq++
				res.WarmupSent++
				if err := pubs[0].write(frame.CompileMasked(ws.OpBinary, payload)); err != nil {
					return nil, fmt.Errorf("bench: warm-up: %w", err)
				}
			case <-deadline:
				res.WarmupIncomplete = readersTotal - uint64(total)
				break warmup
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if watchServer {
		res.Server.PublishStart = sample(int64(res.Connect.Connected))
	}
	for _, p := range procs {
		p.send("start")
	}
	for started := 0; started < n; {
		select {
		case m := <-events:
			switch m.Event {
			case "warm": // late warm-up reports
			case "started":
				started++
			case "error":
				return nil, fmt.Errorf("bench: proc %d: %s", m.proc, m.Error)
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	start := time.Now()
	var pubWG sync.WaitGroup
	pubErrs := make(chan error, len(pubs))
	for _, p := range pubs {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			if err := p.run(ctx, start); err != nil {
				pubErrs <- err
			}
		}()
	}
	allPublished := make(chan struct{})
	go func() { pubWG.Wait(); close(allPublished) }()
	pubsDone := allPublished

	// Run: gather ticks into seconds until the scenario's end.
	type procState struct {
		last    procTick
		results *procResult
	}
	state := make([]procState, n)
	var (
		curSecond  = -1
		secHist    Histogram
		secFrames  uint64
		lastFrames uint64
		lastUnique uint64
		lastGrowth = start
		holdEnd    = start.Add(cfg.Hold)
		drainEnd   time.Time
		phase      = "publishing"
		stopped    bool
	)
	if cfg.Scenario == ScenarioConnect {
		phase = "holding"
		pubsDone = nil // connect ends when the hold does
	}
	totals := func() (alive int64, frames, unique, errs uint64) {
		for _, s := range state {
			alive += s.last.Alive
			frames += s.last.Frames
			unique += s.last.Unique
			errs += s.last.Errors
		}
		return
	}
	expected := func() uint64 {
		var sent uint64
		for _, p := range pubs {
			sent += p.sent.Load()
		}
		return sent * stableTotal
	}
	// The series is built from the procs' own clocks (each tick says
	// which second of the run it belongs to), so a parent that is slow to
	// read its children's ticks on a saturated machine still files every
	// delivery under the second it happened. The progress line is live.
	type secAgg struct {
		frames uint64
		hist   Histogram
		alive  map[int]int64
		errs   uint64
	}
	agg := map[int]*secAgg{}
	addTick := func(proc int, t *procTick) {
		a := agg[t.Sec]
		if a == nil {
			a = &secAgg{alive: map[int]int64{}}
			agg[t.Sec] = a
		}
		a.frames += t.Frames - state[proc].last.Frames
		a.hist.Merge(t.Latency.hist())
		a.alive[proc] = t.Alive
		a.errs = max(a.errs, t.Errors)
	}
	var rss = map[int]int64{}
	flushSecond := func(sec int) {
		alive, frames, _, errs := totals()
		pt := Point{Second: sec, Conns: alive, Deliveries: float64(frames - secFrames), Errors: errs}
		secFrames = frames
		if secHist.Count() > 0 {
			pt.P50 = float64(secHist.Quantile(0.5)) / 1e6
			pt.P99 = float64(secHist.Quantile(0.99)) / 1e6
		}
		secHist.Reset()
		if watchServer {
			s := sample(alive)
			res.Server.Samples = append(res.Server.Samples, s)
			rss[sec] = s.RSS
		}
		progress(pt, phase)
	}
	ticker := time.NewTicker(tickEvery)
	defer ticker.Stop()
	for results := 0; results < n; {
		select {
		case m := <-events:
			switch m.Event {
			case "tick":
				addTick(m.proc, m.Tick)
				state[m.proc].last = *m.Tick
				secHist.Merge(m.Tick.Latency.hist())
			case "result":
				state[m.proc].results = m.Result
				results++
			case "error":
				return nil, fmt.Errorf("bench: proc %d: %s", m.proc, m.Error)
			}
			continue
		case err := <-pubErrs:
			// A server may close a publisher (the classic hub does, as a
			// slow consumer): that publisher stops, the run goes on, and
			// the result says so.
			res.PublisherErrors = append(res.PublisherErrors, err.Error())
			continue
		case <-pubsDone:
			pubsDone = nil
			phase = "draining"
			drainEnd = time.Now().Add(cfg.Drain)
		case <-ticker.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if sec := int(time.Since(start) / time.Second); sec > curSecond {
			if curSecond >= 0 {
				flushSecond(curSecond)
			}
			curSecond = sec
		}
		_, frames, unique, _ := totals()
		if frames != lastFrames || unique != lastUnique {
			lastFrames, lastUnique, lastGrowth = frames, unique, time.Now()
		}
		if stopped {
			continue
		}
		end := false
		switch {
		case cfg.Scenario == ScenarioConnect:
			end = time.Now().After(holdEnd)
		case phase == "draining":
			end = unique >= expected() || time.Now().After(drainEnd)
		}
		if end {
			stopped = true
			for _, p := range procs {
				p.send("stop")
			}
		}
	}
	flushSecond(curSecond)
	for _, p := range pubs {
		p.close()
	}
	for sec, a := range agg {
		pt := Point{Second: sec, Deliveries: float64(a.frames), Errors: a.errs, ServerRSS: rss[sec]}
		for _, v := range a.alive {
			pt.Conns += v
		}
		if a.hist.Count() > 0 {
			pt.P50 = float64(a.hist.Quantile(0.5)) / 1e6
			pt.P99 = float64(a.hist.Quantile(0.99)) / 1e6
		}
		res.Series = append(res.Series, pt)
	}

	// Merge.
	var lat Histogram
	perPub := make([]pubCounts, cfg.Publishers)
	fs := &FanoutStats{Publishers: cfg.Publishers}
	slow := &SlowStats{Closes: map[string]int64{}}
	churn := &ChurnStats{}
	for _, s := range state {
		r := s.results
		hs.Merge(r.Handshake.hist())
		lat.Merge(r.Latency.hist())
		for i, u := range r.PerPub {
			perPub[i].Unique += u.Unique
			perPub[i].Dups += u.Dups
			perPub[i].Reorder += u.Reorder
		}
		fs.Receivers += r.Stable
		fs.Foreign += r.Foreign
		for k, v := range r.Closes {
			res.Closes[k] += v
		}
		slow.Receivers += r.Slow
		for k, v := range r.SlowCloses {
			slow.Closes[k] += v
		}
		churn.Closed += r.Churn.Closed
		churn.Reconnected += r.Churn.Reconnected
		churn.Failed += r.Churn.Failed
	}
	res.Connect.Handshake = hs.Summary()
	res.Histogram = lat.Buckets()
	if cfg.Scenario != ScenarioConnect {
		for i, p := range pubs {
			ps := PublisherStats{Publisher: i, Sent: p.sent.Load(), Received: perPub[i].Unique,
				Duplicates: perPub[i].Dups, Reordered: perPub[i].Reorder}
			ps.Expected = ps.Sent * uint64(fs.Receivers)
			if ps.Expected > ps.Received {
				ps.Lost = ps.Expected - ps.Received
			}
			fs.PerPublisher = append(fs.PerPublisher, ps)
			fs.Sent += ps.Sent
			fs.Received += ps.Received
			fs.Duplicates += ps.Duplicates
			fs.Reordered += ps.Reordered
			fs.WindowTimeouts += p.timeouts.Load()
		}
		fs.Expected = fs.Sent * uint64(fs.Receivers)
		if fs.Expected > fs.Received {
			fs.Lost = fs.Expected - fs.Received
		}
		if fs.Expected > 0 {
			fs.LossRatio = float64(fs.Lost) / float64(fs.Expected)
		}
		fs.Seconds = lastGrowth.Sub(start).Seconds()
		fs.PerSecond = float64(fs.Received) / max(fs.Seconds, 1e-9)
		fs.Latency = lat.Summary()
		res.Fanout = fs
	}
	if cfg.Scenario == ScenarioSlow {
		res.Slow = slow
	}
	if cfg.Scenario == ScenarioChurn {
		res.Churn = churn
	}
	if watchServer {
		sv := res.Server
		sv.End = sample(0)
		for _, x := range append(sv.Samples, sv.Connected, sv.End) {
			sv.PeakRSS = max(sv.PeakRSS, x.RSS)
		}
		if res.Fanout != nil && res.Fanout.Received > 0 && sv.End.CPU > 0 {
			sv.CPUPerDelivery = time.Duration((sv.End.CPU - sv.PublishStart.CPU) / float64(res.Fanout.Received) * 1e9)
		}
		if c := int64(res.Connect.Connected); c > 0 && sv.Connected.RSS > 0 {
			sv.BytesPerConn = float64(sv.Connected.RSS-sv.Before.RSS) / float64(c)
			sv.FDsPerConn = float64(sv.Connected.FDs-sv.Before.FDs) / float64(c)
		}
		// After every client left, does the server return to where it
		// started? File descriptors must (give or take a few); RSS is
		// reported beside it but not judged: the Go runtime gives freed
		// memory back to the OS lazily, over minutes.
		waitUntil := time.Now().Add(10 * time.Second)
		var after ServerSample
		for {
			after = sample(0)
			if after.FDs <= sv.Before.FDs+4 || time.Now().After(waitUntil) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		sv.AfterClose = &after
		ok := after.FDs <= sv.Before.FDs+4
		sv.Baseline = &ok
	}
	sort.Slice(res.Series, func(i, j int) bool { return res.Series[i].Second < res.Series[j].Second })
	for i := 1; i < len(res.Series); i++ { // a second the parent did not sample keeps the last RSS
		if res.Series[i].ServerRSS == 0 {
			res.Series[i].ServerRSS = res.Series[i-1].ServerRSS
		}
	}
	return res, nil
}
