package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
)

// The rooms scenario: Conns clients, client i alone on channel
// RoomPrefix+i, each publishing to its own room at RatePerClient and
// receiving its own messages back. Its clients are the procs' receivers
// (spread over child processes like any others); each proc publishes for
// its own, so a message never leaves the proc it started in, and the
// parent only adds up what the procs report. A delivery is a message
// here: each has one subscriber, its sender.

// maxRatePerClient bounds RatePerClient: one message a microsecond.
const maxRatePerClient = 1e6

// roomWriters is how many goroutines of a proc write its clients'
// messages. A write blocks only when a socket's send buffer is full (the
// server stopped reading that client); a quarter of the proc's clients
// then wait with it, their lateness shown as latency (messages carry
// their scheduled time). Few, because each wakes up about every
// millisecond while publishing, on the cores the server runs on.
const roomWriters = 4

// maxWarmRounds bounds the rooms warm-up in count as warmUpLimit does in
// time: its doubling gaps fit about 15 rounds in warmUpLimit.
const maxWarmRounds = 32

// fillRooms checks and defaults the rooms scenario's parameters, and
// refuses them elsewhere: in rooms every client publishes, over
// WebSocket, at a fixed rate of its own.
func (c *Config) fillRooms() error {
	if c.Scenario != ScenarioRooms {
		if c.RatePerClient != 0 {
			return fmt.Errorf("rate per client: only for the %s scenario (publishers share rate)", ScenarioRooms)
		}
		return nil
	}
	switch {
	case c.Publishers != 0 || c.Rate != 0 || c.PublishURL != "":
		return fmt.Errorf("%s: every client publishes, over WebSocket, at rate per client: publishers, rate and publish url do not apply", ScenarioRooms)
	case c.RatePerClient < 0 || c.RatePerClient > maxRatePerClient:
		return fmt.Errorf("rate per client %v: want 0 < rate ≤ %g messages per second", c.RatePerClient, float64(maxRatePerClient))
	case c.Size < roomPayloadHeader:
		return fmt.Errorf("size %d: at least %d bytes in %s (the bench header)", c.Size, roomPayloadHeader, ScenarioRooms)
	}
	if c.RatePerClient == 0 {
		c.RatePerClient = 1
	}
	return nil
}

// send writes b, frames of r's own, unless r is closed. A write that
// fails is counted (writeErrs) and ends r from this side: part of a frame
// may have gone, and nothing written after it would parse.
func (r *receiver) send(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	_ = r.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.nc.Write(b); err != nil {
		r.pool.writeErrs.Add(1)
		r.releaseLocked()
		return false
	}
	return true
}

// warmRooms is the rooms warm-up (see run.warmUp), done by the clients
// themselves since each is its room's only subscriber: each client that
// has not seen its warm-up message back sends one, at gaps doubling from
// 20 ms to 1 s, until all have, warmUpLimit passes or ctx ends.
func (p *recvPool) warmRooms(ctx context.Context) {
	clients := p.filter(func(*receiver) bool { return true })
	payload, out := newPayload(p.cfg), []byte(nil)
	deadline := time.Now().Add(warmUpLimit)
	gap := 20 * time.Millisecond
	for round := 0; round < maxWarmRounds && time.Now().Before(deadline); round++ {
		cold := 0
		for _, r := range clients {
			if r.warm.Load() {
				continue
			}
			cold++
			putRoomPayload(payload, r.room, roomWarmSeq, time.Now().UnixNano())
			out = frame.AppendMasked(out[:0], ws.OpBinary, payload, ws.NewMask())
			if r.send(out) {
				p.warmSent.Add(1)
			}
		}
		if cold == 0 {
			return
		}
		select {
		case <-time.After(gap):
		case <-ctx.Done():
			return
		}
		gap = min(2*gap, time.Second)
	}
}

// publishRooms has each of the proc's clients publish to its own room
// from t0 on, RatePerClient messages per second, until Duration passes,
// each has sent Messages, or ctx ends; then it marks the pool published.
// Client i's message q is scheduled at t0 + (q + i/Conns) intervals: the
// clients of every proc together spread evenly over each interval instead
// of publishing in bursts, and each message carries its scheduled time
// (no coordinated omission).
func (p *recvPool) publishRooms(ctx context.Context, t0 time.Time) {
	defer p.published.Store(true)
	clients := p.filter(func(*receiver) bool { return true })
	slices.SortFunc(clients, func(a, b *receiver) int { return cmp.Compare(a.room, b.room) })
	w := min(roomWriters, len(clients))
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		var mine []*receiver
		for j := k; j < len(clients); j += w {
			mine = append(mine, clients[j])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.writeRooms(ctx, t0, mine)
		}()
	}
	wg.Wait()
}

// writeRooms publishes the messages of clients (sorted by room) in the
// order they are scheduled: round q is every client's message q, and
// within a round a client's offset grows with its room. What is due goes
// out at once; a write is never early.
func (p *recvPool) writeRooms(ctx context.Context, t0 time.Time, clients []*receiver) {
	cfg := p.cfg
	interval := time.Duration(float64(time.Second) / cfg.RatePerClient)
	end := t0.Add(cfg.Duration)
	rounds := uint64(cfg.Duration/interval) + 1
	if cfg.Messages > 0 {
		rounds = min(rounds, uint64(cfg.Messages))
	}
	offsets := make([]time.Duration, len(clients))
	for i, r := range clients {
		offsets[i] = time.Duration(float64(interval) * float64(r.room) / float64(cfg.Conns))
	}
	payload, out := newPayload(cfg), []byte(nil)
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	for q := uint64(0); q < rounds && ctx.Err() == nil; q++ {
		for i, r := range clients {
			at := t0.Add(time.Duration(q)*interval + offsets[i])
			if !at.Before(end) {
				return
			}
			if d := time.Until(at); d > 0 {
				wait.Reset(d)
				select {
				case <-wait.C:
				case <-ctx.Done():
					return
				}
			}
			putRoomPayload(payload, r.room, q, at.UnixNano())
			out = frame.AppendMasked(out[:0], ws.OpBinary, payload, ws.NewMask())
			if r.send(out) {
				r.sent.Add(1)
				p.sent.Add(1)
			}
		}
	}
}

// roomCounts is the rooms accounting of one proc, or of all: its
// clients' own messages as they saw them.
type roomCounts struct {
	Clients   int    `json:"clients"`
	Sent      uint64 `json:"sent"`
	Unique    uint64 `json:"unique"`
	Dups      uint64 `json:"dups"`
	Reorder   uint64 `json:"reorder"`
	Lost      uint64 `json:"lost"`  // over clients: sent − unique
	Short     int    `json:"short"` // clients that received fewer of their own messages than they sent
	Misrouted uint64 `json:"misrouted"`
	WriteErrs uint64 `json:"write_errors"`
	WarmSent  uint64 `json:"warm_sent"`
}

func (c *roomCounts) add(o roomCounts) {
	c.Clients += o.Clients
	c.Sent += o.Sent
	c.Unique += o.Unique
	c.Dups += o.Dups
	c.Reorder += o.Reorder
	c.Lost += o.Lost
	c.Short += o.Short
	c.Misrouted += o.Misrouted
	c.WriteErrs += o.WriteErrs
	c.WarmSent += o.WarmSent
}

// roomSnapshot collects the proc's rooms accounting, client by client:
// what each sent against what it received of its own.
func (p *recvPool) roomSnapshot() roomCounts {
	rc := roomCounts{Misrouted: p.misrouted.Load(), WriteErrs: p.writeErrs.Load(), WarmSent: p.warmSent.Load()}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.recvs {
		rc.Clients++
		sent := r.sent.Load()
		var own seqTrack
		r.tmu.Lock()
		if len(r.tracks) > 0 {
			own = r.tracks[0]
		}
		r.tmu.Unlock()
		rc.Sent += sent
		rc.Unique += own.unique
		rc.Dups += own.dups
		rc.Reorder += own.reorder
		if own.unique < sent {
			rc.Short++
			rc.Lost += sent - own.unique
		}
	}
	return rc
}

// roomStats completes fs and the result's rooms figures from what the
// procs' clients counted.
func (r *run) roomStats(fs *FanoutStats, rc roomCounts, lat *Histogram) {
	fs.Publishers = rc.Clients
	fs.Sent, fs.Expected, fs.Received = rc.Sent, rc.Sent, rc.Unique
	fs.Lost, fs.Duplicates, fs.Reordered = rc.Lost, rc.Dups, rc.Reorder
	r.finishFanout(fs, lat)
	r.res.WarmupSent = rc.WarmSent
	r.res.Rooms = &RoomStats{Rooms: rc.Clients, RatePerClient: r.cfg.RatePerClient,
		Misrouted: rc.Misrouted, ClientsShort: rc.Short, WriteErrors: rc.WriteErrs}
}

// procsPublished reports whether every proc's clients have published all
// they will (scenario rooms), as the procs' latest ticks say.
func (r *run) procsPublished() bool {
	for _, s := range r.states {
		if !s.last.Published {
			return false
		}
	}
	return true
}
