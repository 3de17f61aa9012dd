package bench

import (
	"fmt"
	"time"
)

// merge adds the procs' results up into the run's result.
func (r *run) merge() {
	res, cfg := r.res, r.cfg
	var hs, lat Histogram
	perPub := make([]pubCounts, cfg.allPublishers())
	fs := &FanoutStats{Publishers: cfg.allPublishers()}
	slow := &SlowStats{Closes: map[string]int64{}}
	churn := &ChurnStats{}
	var rooms roomCounts
	for _, s := range r.states {
		pr := s.results
		hs.Merge(pr.Handshake.hist())
		lat.Merge(pr.Latency.hist())
		for i, u := range pr.PerPub {
			perPub[i].Unique += u.Unique
			perPub[i].Dups += u.Dups
			perPub[i].Reorder += u.Reorder
		}
		fs.Receivers += pr.Stable
		fs.Foreign += pr.Foreign
		fs.Corrupt += pr.Corrupt
		fs.Misrouted += pr.Misrouted
		fs.OutOfOrder += pr.OutOfOrder
		fs.WireBytes += pr.Wire
		res.ReceiverErrors += pr.Errors
		if res.ReceiverError == "" {
			res.ReceiverError = pr.FirstError
		}
		for k, v := range pr.Closes {
			res.Closes[k] += v
		}
		slow.Receivers += pr.Slow
		for k, v := range pr.SlowCloses {
			slow.Closes[k] += v
		}
		churn.Closed += pr.Churn.Closed
		churn.Reconnected += pr.Churn.Reconnected
		churn.Failed += pr.Churn.Failed
		if pr.Rooms != nil {
			rooms.add(*pr.Rooms)
		}
	}
	res.Connect.Handshake = hs.Summary()
	res.Histogram = lat.Buckets()
	switch cfg.Scenario {
	case ScenarioConnect:
	case ScenarioRooms:
		r.roomStats(fs, rooms, &lat)
		res.Fanout = fs
	default:
		r.fanoutStats(fs, perPub, &lat)
		res.Fanout = fs
	}
	if cfg.Scenario == ScenarioSlow {
		res.Slow = slow
	}
	if cfg.Scenario == ScenarioChurn {
		res.Churn = churn
	}
}

// fanoutStats completes fs (its receivers counted) with what each
// publisher sent and what the receivers on its channel saw of it.
func (r *run) fanoutStats(fs *FanoutStats, perPub []pubCounts, lat *Histogram) {
	if r.cfg.Channels > 0 {
		fs.OnChannel = &GroupStats{Channels: 1, Receivers: int(r.stableTotal - r.spreadTotal)}
		fs.Spread = &GroupStats{Channels: r.cfg.Channels, Receivers: int(r.spreadTotal)}
	}
	for i, p := range r.pubs {
		ps := PublisherStats{Publisher: i, Sent: p.sent.Load(), Received: perPub[i].Unique,
			Duplicates: perPub[i].Dups, Reordered: perPub[i].Reorder}
		ps.Expected = ps.Sent * r.receiversOf(i)
		if ps.Expected > ps.Received {
			ps.Lost = ps.Expected - ps.Received
		}
		ps.Due = p.due()
		if ps.Behind = behind(ps.Due, ps.Sent); ps.Behind > 0 {
			fs.PublishersBehind++
			fs.Behind += ps.Behind
		}
		fs.PerPublisher = append(fs.PerPublisher, ps)
		switch {
		case fs.Spread != nil && i >= r.cfg.Publishers:
			fs.Spread.add(ps)
		case fs.OnChannel != nil:
			fs.OnChannel.add(ps)
		}
		fs.Sent += ps.Sent
		fs.Expected += ps.Expected
		fs.Received += ps.Received
		fs.Duplicates += ps.Duplicates
		fs.Reordered += ps.Reordered
		fs.WindowTimeouts += p.timeouts.Load()
	}
	if r.api != nil {
		fs.PublishRequests, fs.PublishRefused = r.api.requests.Load(), r.api.refused.Load()
		l := r.api.latency.Summary()
		fs.PublishLatency = &l
	}
	for _, ps := range fs.PerPublisher {
		fs.Lost += ps.Lost // a publisher's extra deliveries do not make up for another's losses
		if ps.Received > ps.Expected {
			fs.Extra += ps.Received - ps.Expected
		}
	}
	r.finishFanout(fs, lat)
}

// finishFanout completes fs, its counts done, with the ratios and rates
// over the measured span, and the latencies. The span ends when the
// parent saw deliveries last grow, up to two ticks after the last one;
// in rooms, whose figure is its rate (a fixed one, lower by that much
// over a short run), at the last one, as the procs read it.
func (r *run) finishFanout(fs *FanoutStats, lat *Histogram) {
	if fs.Expected > 0 {
		fs.LossRatio = float64(fs.Lost) / float64(fs.Expected)
	}
	fs.Seconds = r.lastGrowth.Sub(r.start).Seconds()
	if r.cfg.Scenario == ScenarioRooms {
		var last int64
		for _, s := range r.states {
			last = max(last, s.last.Last)
		}
		if last > 0 {
			fs.Seconds = time.Unix(0, last).Sub(r.start).Seconds()
		}
	}
	fs.PerSecond = float64(fs.Received) / max(fs.Seconds, 1e-9)
	if fs.Received > 0 {
		fs.WireBytesPerDelivery = float64(fs.WireBytes) / float64(fs.Received)
	}
	fs.Latency = lat.Summary()
}

// measuredEnd is the server sample that ends the span CPU per delivery is
// measured over (see ServerCost.CPUPerDelivery). r.Server must be set.
func (r *Result) measuredEnd() ServerSample {
	if r.Config.Scenario == ScenarioRooms && r.Server.Drained.CPU > 0 {
		return r.Server.Drained
	}
	return r.Server.End
}

// bytesSpan is the server sample that ends the span bytes out per
// delivery is measured over: Drained, before any client leaves (their
// close frames are no deliveries), when it has the server's metrics.
// r.Server must be set.
func (r *Result) bytesSpan() ServerSample {
	if r.Server.Drained.Deliveries > 0 {
		return r.Server.Drained
	}
	return r.Server.End
}

// serverCost completes the server's cost once every client left: the
// last sample, the peaks and ratios, and whether its descriptors came
// back to where they started.
func (r *run) serverCost() {
	res := r.res
	sv := res.Server
	sv.End = r.sample(0)
	for _, x := range append(sv.Samples, sv.Connected, sv.End) {
		sv.PeakRSS = max(sv.PeakRSS, x.RSS)
	}
	end := res.measuredEnd()
	if res.Fanout != nil && res.Fanout.Received > 0 && end.CPU > 0 {
		sv.CPUPerDelivery = time.Duration((end.CPU - sv.PublishStart.CPU) / float64(res.Fanout.Received) * 1e9)
	}
	if res.Fanout != nil && res.Rooms == nil && res.Fanout.Received > 0 && sv.Drained.CPU > 0 {
		sv.FanoutCPUPerDelivery = time.Duration((sv.Drained.CPU - sv.PublishStart.CPU) / float64(res.Fanout.Received) * 1e9)
	}
	if w := end.Writes - sv.PublishStart.Writes; w > 0 && end.Deliveries > sv.PublishStart.Deliveries {
		sv.DeliveriesPerWrite = float64(end.Deliveries-sv.PublishStart.Deliveries) / float64(w)
	}
	if b := res.bytesSpan(); b.Deliveries > sv.PublishStart.Deliveries && b.BytesOut > sv.PublishStart.BytesOut {
		sv.BytesOutPerDelivery = float64(b.BytesOut-sv.PublishStart.BytesOut) / float64(b.Deliveries-sv.PublishStart.Deliveries)
	}
	if c := int64(res.Connect.Connected); c > 0 && sv.Connected.RSS > 0 {
		sv.BytesPerConn = float64(sv.Connected.RSS-sv.Before.RSS) / float64(c)
		sv.FDsPerConn = float64(sv.Connected.FDs-sv.Before.FDs) / float64(c)
	}
	sv.NotFresh = notFresh(sv, res.Connect.Connected)
	// After every client left, does the server return to where it
	// started? File descriptors must (give or take a few); RSS is
	// reported beside it but not judged: the Go runtime gives freed
	// memory back to the OS lazily, over minutes.
	waitUntil := time.Now().Add(10 * time.Second)
	var after ServerSample
	for {
		after = r.sample(0)
		if after.FDs <= sv.Before.FDs+4 || time.Now().After(waitUntil) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	sv.AfterClose = &after
	ok := after.FDs <= sv.Before.FDs+4
	sv.Baseline = &ok
}

// minConnRSS is less than any server's connection costs it in RSS (a
// socket's kernel side is not even in it; fanout's is a few KiB): a
// server whose RSS grew by less per connection was reusing memory.
const minConnRSS = 512

// notFresh says why sv.Before may not be the server's baseline (see
// ServerCost.NotFresh).
func notFresh(sv *ServerCost, connected uint64) []string {
	var why []string
	if n := sv.Before.ServerConns; n > 0 {
		why = append(why, fmt.Sprintf("the server held %s before the run (fanout_connections)", plural(n, "connection", "connections")))
	}
	if n := sv.Before.ServerUpgrades; n > 0 && sv.Before.ServerConns == 0 {
		why = append(why, fmt.Sprintf("the server had accepted %s before the run (fanout_upgrades_total)", plural(n, "connection", "connections")))
	}
	if n := sv.Before.Deliveries; n > 0 {
		why = append(why, fmt.Sprintf("the server had made %s before the run (fanout_deliveries_total)", plural(n, "delivery", "deliveries")))
	}
	if connected > 0 && sv.Connected.RSS > 0 && sv.BytesPerConn < minConnRSS {
		why = append(why, fmt.Sprintf("its RSS grew by %.0f bytes per connection, less than any connection costs (memory freed by earlier clients, reused)", sv.BytesPerConn))
	}
	return why
}
