package bench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// ErrNoConnection is Run's error when not one receiver connected.
var ErrNoConnection = errors.New("bench: no connection")

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
	r := newRun(cfg, progress)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := r.startProcs(ctx); err != nil {
		return nil, err
	}
	defer func() {
		cancel() // a run that ends early must not leave procs waiting for a command
		for _, p := range r.procs {
			_ = p.wait()
		}
	}()
	if err := r.connect(ctx); err != nil {
		return nil, err
	}
	if err := r.connectPublishers(ctx); err != nil {
		return nil, err
	}
	if err := r.warmUp(ctx); err != nil {
		return nil, err
	}
	if err := r.startCounting(ctx); err != nil {
		return nil, err
	}
	pubsDone, pubErrs := r.publish(ctx)
	if err := r.measure(ctx, pubsDone, pubErrs); err != nil {
		return nil, err
	}
	for _, p := range r.pubs {
		p.close()
	}
	if r.api != nil {
		r.api.close()
	}
	r.buildSeries()
	r.merge()
	if r.watchServer {
		r.serverCost()
	}
	return r.res, nil
}

// run is one Run in progress, the parent's side of it: it drives the
// procs that hold the receivers and the publishers, and fills res. Only
// Run's goroutine touches it.
type run struct {
	cfg         Config
	progress    Progress
	res         *Result
	t0          time.Time // server samples are timed from here
	watchServer bool      // ServerPIDs or MetricsURL: sample the server's cost

	events chan procMsg // from every proc, each message stamped with its proc
	procs  []proc
	pubs   []*publisher
	api    *apiClient // the publishers' publish API client (Config.PublishURL), or nil

	// From the procs' "connected" reports.
	stableTotal  uint64   // receivers counted for loss
	readersTotal uint64   // receivers that read (not slow)
	spreadStable []uint64 // of stableTotal, those on each spread channel (Config.Channels)
	spreadTotal  uint64   // their sum

	// The measured phase: from the first publish to the procs' results.
	start      time.Time // first publish
	states     []procState
	agg        map[int]*secAgg // by the procs' clocks; see addTick
	rss        map[int]int64   // server RSS by second of the parent's clock
	curSecond  int             // parent's clock, for the live progress line
	secHist    Histogram       // latency within curSecond, for the progress line
	secFrames  uint64          // frames counted up to curSecond
	lastFrames uint64
	lastUnique uint64
	lastGrowth time.Time // when frames or unique last grew: the end of deliveries
	phase      string    // publishing, holding or draining
}

// procState is the parent's view of one proc during the measured phase.
type procState struct {
	last    procTick
	results *procResult
}

// secAgg is one second of the series, put together from every proc's
// ticks for that second.
type secAgg struct {
	frames uint64
	hist   Histogram
	alive  map[int]int64 // by proc
	errs   uint64
}

func newRun(cfg Config, progress Progress) *run {
	res := &Result{Env: ReadEnv(), Config: cfg, Procs: cfg.procs(), Closes: map[string]int64{}}
	r := &run{
		cfg: cfg, progress: progress, res: res, t0: time.Now(),
		watchServer: len(cfg.ServerPIDs) > 0 || cfg.MetricsURL != "",
		events:      make(chan procMsg, 1024),
		agg:         map[int]*secAgg{},
		rss:         map[int]int64{},
		curSecond:   -1,
	}
	if r.watchServer {
		r.res.Server = &ServerCost{Before: r.sample(0)}
	}
	return r
}

// sample is the server's cost now, with conns as the connection count.
func (r *run) sample(conns int64) ServerSample {
	s, err := sampleServers(r.cfg.ServerPIDs, r.cfg.MetricsURL)
	if err != nil {
		return ServerSample{}
	}
	s.At, s.Conns = time.Since(r.t0).Seconds(), conns
	return s
}

// procError is a proc's "error" report as an error.
func procError(m procMsg) error { return fmt.Errorf("bench: proc %d: %s", m.proc, m.Error) }

// startProcs starts the receivers: here, or spread over child processes.
// Receivers are numbered 0 … Conns-1 over all procs, each proc's in one
// run of numbers (a room per number, in the rooms scenario).
func (r *run) startProcs(ctx context.Context) error {
	cfg, n := r.cfg, r.res.Procs
	r.procs = make([]proc, n)
	first := 0
	for i := range r.procs {
		share := cfg.Conns / n
		if i < cfg.Conns%n {
			share++
		}
		spec := procSpec{
			Config: cfg, Index: i, Conns: share, Offset: first,
			ConnectRate: cfg.ConnectRate / float64(n), ChurnRate: cfg.ChurnRate / float64(n),
		}
		first += share
		if n == 1 {
			r.procs[i] = startLocal(ctx, spec, r.events)
			continue
		}
		c, err := startChild(ctx, spec, r.events)
		if err != nil {
			return fmt.Errorf("bench: child %d: %w", i, err)
		}
		r.procs[i] = c
	}
	return nil
}

// connect waits for every proc to report its receivers connected. The
// progress line shows the connections as they come: each proc reports
// its count while it connects, and its final one when it is done.
func (r *run) connect(ctx context.Context) error {
	res := r.res
	connStart := time.Now()
	sofar := make([]uint64, len(r.procs)) // by proc
	show := func() {
		var n uint64
		for _, c := range sofar {
			n += c
		}
		r.progress(Point{Second: int(time.Since(r.t0).Seconds()), Conns: int64(n)}, "connecting")
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for got := 0; got < len(r.procs); {
		select {
		case m := <-r.events:
			switch m.Event {
			case "connecting":
				sofar[m.proc] = m.Connecting
			case "connected":
				got++
				r.stableTotal += uint64(m.Stable)
				r.readersTotal += uint64(m.Readers)
				r.addSpread(m.SpreadStable)
				c := m.Connected
				sofar[m.proc] = c.Connected
				res.Connect.add(c)
				show()
			case "error":
				return procError(m)
			}
		case <-tick.C:
			show()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if res.Connect.Connected == 0 && res.Connect.Failed > 0 {
		return fmt.Errorf("%w: %s failed; the first: %s", ErrNoConnection, plural(int64(res.Connect.Failed), "connection", "connections"), res.Connect.FirstError)
	}
	res.Connect.Seconds = time.Since(connStart).Seconds()
	res.Connect.PerSecond = float64(res.Connect.Connected) / max(res.Connect.Seconds, 1e-9)
	if r.watchServer {
		res.Server.Connected = r.sample(int64(res.Connect.Connected))
	}
	return nil
}

// connectPublishers opens the publishing connections (not for connect,
// nor rooms, whose clients publish): Publishers on Channel, then one on
// each spread channel (Config.Channels), publisher i being r.pubs[i].
func (r *run) connectPublishers(ctx context.Context) error {
	if r.cfg.Scenario == ScenarioConnect || r.cfg.Scenario == ScenarioRooms {
		return nil
	}
	if r.cfg.PublishURL != "" {
		r.api = newAPIClient(r.cfg)
	}
	for i := 0; i < r.cfg.allPublishers(); i++ {
		cfg := r.cfg
		if k := i - r.cfg.Publishers; k >= 0 {
			cfg = r.cfg.channelPublisher(k)
		}
		p, err := connectPublisher(ctx, cfg, i, r.api)
		if err != nil {
			return fmt.Errorf("bench: publisher %d: %w", i, err)
		}
		if k := i - r.cfg.Publishers; k >= 0 {
			// Spread the channels' first messages over their interval:
			// all at once, they would come as a burst at each interval.
			p.offset = time.Duration(float64(p.interval()) * float64(k) / float64(r.cfg.Channels))
		}
		r.pubs = append(r.pubs, p)
	}
	return nil
}

// warmUpLimit is how long the warm-up may take at most.
const warmUpLimit = 10 * time.Second

// warmUp: until every reading receiver has seen a message, it may not be
// registered with the server yet (a client sees the 101 before the server
// adds it to its table), and a message it misses then would count as
// lost. Publisher 0 sends uncounted warm-up messages until all have seen
// one, or warmUpLimit passes (the rest then count as they are). In rooms,
// each room's one subscriber is its publisher: the procs have their
// clients warm up on their own (recvPool.warmRooms).
func (r *run) warmUp(ctx context.Context) error {
	if r.readersTotal == 0 {
		return nil
	}
	if r.cfg.Scenario == ScenarioRooms {
		for _, p := range r.procs {
			p.send("warm")
		}
		return r.awaitWarm(ctx, nil)
	}
	if len(r.pubs) == 0 {
		return nil
	}
	// Publisher 0 warms Channel up; each spread channel's publisher its own.
	warmers := append([]*publisher{r.pubs[0]}, r.pubs[r.cfg.Publishers:]...)
	seq := uint64(0)
	return r.awaitWarm(ctx, func() error {
		now := time.Now().UnixNano()
		err := eachPublisher(warmers, func(p *publisher) error {
			// p.payload: a warm-up looks like the messages that follow
			// (p does not publish yet).
			putMessage(p.cfg, p.payload, warmPub, seq, now)
			return p.warm(ctx, p.payload)
		})
		seq++
		r.res.WarmupSent += uint64(len(warmers))
		return err
	})
}

// warmWorkers bounds the warm-ups in flight at once: one per spread
// channel's publisher, POSTs among them.
const warmWorkers = 32

// eachPublisher calls f for every one of pubs, warmWorkers at a time,
// and returns the first error.
func eachPublisher(pubs []*publisher, f func(*publisher) error) error {
	if len(pubs) == 1 {
		return f(pubs[0])
	}
	next := make(chan *publisher)
	errs := make(chan error, warmWorkers)
	var wg sync.WaitGroup
	for range min(warmWorkers, len(pubs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for p := range next {
				if err := f(p); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for _, p := range pubs {
		next <- p
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// awaitWarm waits until the procs report every reading receiver warm, or
// warmUpLimit passes. send, if set, publishes one more warm-up: one at
// once, then another only once the last one reached receivers and
// stopped reaching more for a gap (100 ms, doubling up to 1 s), or
// reached none for a second: with many receivers one warm-up takes
// seconds to reach them all, and more sent meanwhile would queue a flood
// of them ahead of the measurement (sent at doubling gaps from 20 ms, a
// tier of 150,000 clients on two cores got four before the first had
// reached anyone, held 44,629 receivers cold after 10 s and started
// measuring behind 8 s of their queue). send runs beside the receivers'
// reports (a round of POSTs, one a spread channel, may take seconds) and
// awaitWarm returns only once it is done: the publishers' buffers are
// theirs again.
func (r *run) awaitWarm(ctx context.Context, send func() error) (err error) {
	warm := make([]int64, len(r.procs))
	deadline := time.After(warmUpLimit)
	gap := 100 * time.Millisecond
	next := time.NewTimer(0)
	defer next.Stop()
	nextC := next.C
	if send == nil {
		nextC = nil
	}
	var (
		checked  int64     // warm receivers when the timer last fired
		arrived  bool      // the last warm-up warmed receivers
		sentLast time.Time // when the last warm-up was out (zero: none yet)
		sending  bool      // a send is running
		sent     = make(chan error, 1)
	)
	defer func() {
		if sending {
			if serr := <-sent; err == nil && serr != nil {
				err = fmt.Errorf("bench: warm-up: %w", serr)
			}
		}
	}()
	total := func() (n int64) {
		for _, w := range warm {
			n += w
		}
		return n
	}
	// report takes a proc's report: how many of its receivers are warm,
	// or its failure.
	report := func(m procMsg) error {
		switch m.Event {
		case "warm":
			warm[m.proc] = m.Warm
		case "error":
			return procError(m)
		}
		return nil
	}
	for uint64(total()) < r.readersTotal {
		select {
		case m := <-r.events:
			if err := report(m); err != nil {
				return err
			}
		case serr := <-sent:
			sending, sentLast = false, time.Now()
			if serr != nil {
				return fmt.Errorf("bench: warm-up: %w", serr)
			}
		case <-nextC:
			now := total()
			growing := now > checked
			arrived = arrived || growing
			checked = now
			next.Reset(gap)
			if sending || (!sentLast.IsZero() && (growing || (!arrived && time.Since(sentLast) < time.Second))) {
				continue // the last warm-up is still on its way
			}
			gap = min(2*gap, time.Second)
			arrived, sending = false, true
			go func() { sent <- send() }()
		case <-deadline:
			for drained := false; !drained; { // the reports that came meanwhile
				select {
				case m := <-r.events:
					if err := report(m); err != nil {
						return err
					}
				default:
					drained = true
				}
			}
			if n := uint64(total()); n < r.readersTotal {
				r.res.WarmupIncomplete = r.readersTotal - n
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// startCounting tells every proc to start counting and waits until all
// do: a message that reached a proc still waiting would show as lost. In
// rooms, where each proc's clients publish from "start", the run's clock
// starts here, before any of them can.
func (r *run) startCounting(ctx context.Context) error {
	if r.watchServer {
		r.res.Server.PublishStart = r.sample(int64(r.res.Connect.Connected))
	}
	if r.cfg.Scenario == ScenarioRooms {
		r.start = time.Now()
	}
	for _, p := range r.procs {
		p.send("start")
	}
	for started := 0; started < len(r.procs); {
		select {
		case m := <-r.events:
			switch m.Event {
			case "warm": // late warm-up reports
			case "started":
				started++
			case "error":
				return procError(m)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publish starts every publisher. pubsDone closes when all have finished
// (never, for connect: it ends when the hold does; nor for rooms, whose
// procs publish and say when they are done in their ticks); pubErrs
// carries the error of each that stopped early.
func (r *run) publish(ctx context.Context) (pubsDone <-chan struct{}, pubErrs <-chan error) {
	if r.cfg.Scenario == ScenarioRooms {
		return nil, nil
	}
	r.start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(r.pubs))
	for _, p := range r.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.run(ctx, r.start); err != nil {
				errs <- err
			}
		}()
	}
	allPublished := make(chan struct{})
	go func() { wg.Wait(); close(allPublished) }()
	if r.cfg.Scenario == ScenarioConnect {
		return nil, errs
	}
	return allPublished, errs
}

// measure gathers the procs' ticks into seconds until the scenario's end,
// tells the procs to stop, and returns once every proc sent its result.
func (r *run) measure(ctx context.Context, pubsDone <-chan struct{}, pubErrs <-chan error) error {
	r.states = make([]procState, len(r.procs))
	r.lastGrowth = r.start
	holdEnd := r.start.Add(r.cfg.Hold)
	var drainEnd time.Time
	if r.cfg.Scenario == ScenarioConnect {
		r.setPhase("holding")
	} else {
		r.setPhase("publishing")
	}
	stopped := false
	ticker := time.NewTicker(tickEvery)
	defer ticker.Stop()
	for results := 0; results < len(r.procs); {
		select {
		case m := <-r.events:
			switch m.Event {
			case "tick":
				r.addTick(m.proc, m.Tick)
				r.states[m.proc].last = *m.Tick
				r.secHist.Merge(m.Tick.Latency.hist())
				if r.cfg.Scenario == ScenarioRooms && r.phase == "publishing" && r.procsPublished() {
					r.setPhase("draining")
					drainEnd = time.Now().Add(r.cfg.Drain)
				}
			case "result":
				r.states[m.proc].results = m.Result
				results++
			case "error":
				return procError(m)
			}
			continue
		case err := <-pubErrs:
			// A server may close a publisher (the classic hub does, as a
			// slow consumer): that publisher stops, the run goes on, and
			// the result says so.
			r.res.PublisherErrors = append(r.res.PublisherErrors, err.Error())
			continue
		case <-pubsDone:
			pubsDone = nil
			r.setPhase("draining")
			drainEnd = time.Now().Add(r.cfg.Drain)
		case <-ticker.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		unique := r.observe()
		if stopped {
			continue
		}
		end := false
		switch {
		case r.cfg.Scenario == ScenarioConnect:
			end = time.Now().After(holdEnd)
		case r.phase == "draining":
			end = unique >= r.expected() || time.Now().After(drainEnd)
		}
		if end {
			stopped = true
			if r.watchServer {
				alive, _, _, _ := r.totals()
				r.res.Server.Drained = r.sample(alive)
			}
			for _, p := range r.procs {
				p.send("stop")
			}
		}
	}
	r.flushSecond(r.curSecond)
	return nil
}

// setPhase moves the run to phase, and tells progress at once (not at
// the end of the second): a script that acts on the phases (-phase-log)
// learns of each as it begins.
func (r *run) setPhase(phase string) {
	if phase == r.phase {
		return
	}
	r.phase = phase
	alive, _, _, errs := r.totals()
	if r.curSecond < 0 { // no tick yet
		alive = int64(r.res.Connect.Connected)
	}
	r.progress(Point{Second: max(r.curSecond, 0), Conns: alive, Errors: errs}, phase)
}

// observe closes the parent's second when its clock moved on, notes when
// deliveries last grew, and returns the unique deliveries so far.
func (r *run) observe() (unique uint64) {
	if sec := int(time.Since(r.start) / time.Second); sec > r.curSecond {
		if r.curSecond >= 0 {
			r.flushSecond(r.curSecond)
		}
		r.curSecond = sec
	}
	_, frames, unique, _ := r.totals()
	if frames != r.lastFrames || unique != r.lastUnique {
		r.lastFrames, r.lastUnique, r.lastGrowth = frames, unique, time.Now()
	}
	return unique
}

// totals adds up the procs' latest ticks.
func (r *run) totals() (alive int64, frames, unique, errs uint64) {
	for _, s := range r.states {
		alive += s.last.Alive
		frames += s.last.Frames
		unique += s.last.Unique
		errs += s.last.Errors
	}
	return
}

// expected is the deliveries owed for what was sent so far: what each
// publisher sent times the receivers on its channel; in rooms, one for
// each message the clients wrote.
func (r *run) expected() uint64 {
	if r.cfg.Scenario == ScenarioRooms {
		var sent uint64
		for _, s := range r.states {
			sent += s.last.Sent
		}
		return sent
	}
	var want uint64
	for i, p := range r.pubs {
		want += p.sent.Load() * r.receiversOf(i)
	}
	return want
}

// addSpread adds a proc's counted receivers on each spread channel.
func (r *run) addSpread(counts []int) {
	if len(counts) == 0 {
		return
	}
	if r.spreadStable == nil {
		r.spreadStable = make([]uint64, r.cfg.Channels)
	}
	for k, n := range counts {
		if k < len(r.spreadStable) {
			r.spreadStable[k] += uint64(n)
			r.spreadTotal += uint64(n)
		}
	}
}

// addTick files a proc's tick under the second of the run it belongs to.
// The series is built from the procs' own clocks (each tick says which
// second it belongs to), so a parent that is slow to read its children's
// ticks on a saturated machine still files every delivery under the
// second it happened. The progress line is live.
func (r *run) addTick(proc int, t *procTick) {
	a := r.agg[t.Sec]
	if a == nil {
		a = &secAgg{alive: map[int]int64{}}
		r.agg[t.Sec] = a
	}
	a.frames += t.Frames - r.states[proc].last.Frames
	a.hist.Merge(t.Latency.hist())
	a.alive[proc] = t.Alive
	a.errs = max(a.errs, t.Errors)
}

// flushSecond ends second sec of the parent's clock: the progress line,
// and a server sample.
func (r *run) flushSecond(sec int) {
	alive, frames, _, errs := r.totals()
	pt := Point{Second: sec, Conns: alive, Deliveries: float64(frames - r.secFrames), Errors: errs}
	r.secFrames = frames
	if r.secHist.Count() > 0 {
		pt.P50 = float64(r.secHist.Quantile(0.5)) / 1e6
		pt.P99 = float64(r.secHist.Quantile(0.99)) / 1e6
	}
	r.secHist.Reset()
	if r.watchServer {
		s := r.sample(alive)
		r.res.Server.Samples = append(r.res.Server.Samples, s)
		r.rss[sec] = s.RSS
	}
	r.progress(pt, r.phase)
}

// buildSeries turns the seconds gathered from the procs' ticks into the
// result's series, in order.
func (r *run) buildSeries() {
	res := r.res
	for sec, a := range r.agg {
		pt := Point{Second: sec, Deliveries: float64(a.frames), Errors: a.errs, ServerRSS: r.rss[sec]}
		for _, v := range a.alive {
			pt.Conns += v
		}
		if a.hist.Count() > 0 {
			pt.P50 = float64(a.hist.Quantile(0.5)) / 1e6
			pt.P99 = float64(a.hist.Quantile(0.99)) / 1e6
		}
		res.Series = append(res.Series, pt)
	}
	sort.Slice(res.Series, func(i, j int) bool { return res.Series[i].Second < res.Series[j].Second })
	for i := 1; i < len(res.Series); i++ { // a second the parent did not sample keeps the last RSS
		if res.Series[i].ServerRSS == 0 {
			res.Series[i].ServerRSS = res.Series[i-1].ServerRSS
		}
	}
}
