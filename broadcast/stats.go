package broadcast

import (
	"github.com/fanout/fanout/broadcast/history"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/netpoll"
)

// HistSnapshot is a cumulative histogram: Buckets[le] = observations ≤ le.
type HistSnapshot = hub.HistSnapshot

// Stats is a snapshot of a Server's counters. Counters only grow.
type Stats struct {
	Conns        int64              // connections in the hub (open or closing)
	Handshaking  int64              // upgrades in progress
	Accepted     uint64             // upgrades completed
	Rejected     [numRejects]uint64 // upgrades refused, by RejectKind
	Closes       [numReasons]uint64 // connections ended, by CloseReason
	MessagesIn   uint64             // complete data messages read from clients
	Published    uint64             // messages broadcast: accepted into the hub (clients, Publish, bus)
	Refused      uint64             // publishes refused (backlog full, shutting down, bus)
	Deliveries   uint64             // messages handed to connections (written or queued)
	Dropped      uint64             // messages dropped under SlowDrop
	BacklogWaits uint64             // in a tier: times the stream consumer waited for the backlog to drain
	TierInvalid  uint64             // in a tier: messages of the stream not delivered (fanout would not have published them)
	BytesIn      uint64             // bytes read from clients after their upgrade
	BytesOut     uint64             // bytes written to sockets
	Writes       uint64             // socket writes (each may carry several frames)
	QueuedBytes  int64              // bytes waiting in outbound queues now
	PartialBytes int64              // buffers held for incomplete frames and fragmented messages (over MaxPartialBytes only for a moment)
	Poller       netpoll.Stats      // worker pool

	FanoutDuration HistSnapshot // seconds per shard batch
	QueueSizes     HistSnapshot // bytes, sampled each sweep for queued connections

	Subscriptions      int64         // channel memberships of the connections in the hub
	Resumed            uint64        // connections that resumed (since=) with everything they missed
	NotRecovered       uint64        // connections whose resume was refused: recovered:false
	History            history.Stats // the history's gauges and counters (zero without one)
	IdempotentRepeats  uint64        // publishes answered from an earlier one's receipt
	IdempotencyEvicted uint64        // idempotency keys forgotten before their window ended (over IdempotencyKeys)
}

// Closed returns the count of connections that ended for reason r.
func (st Stats) Closed(r CloseReason) uint64 { return st.Closes[r] }

// Rejects returns the count of upgrades refused for kind k.
func (st Stats) Rejects(k RejectKind) uint64 { return st.Rejected[k] }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	h := s.hub.Stats()
	out := s.out.Counters()
	st := Stats{
		Conns:          int64(s.Conns()),
		Handshaking:    s.admit.Handshaking(),
		Accepted:       s.accepted.Load(),
		MessagesIn:     s.ws.MessagesIn(),
		Published:      h.Broadcasts,
		Refused:        s.refused.Load(),
		Deliveries:     h.Deliveries,
		Dropped:        h.Dropped,
		BacklogWaits:   h.BacklogWaits,
		TierInvalid:    s.tierInvalid.Load(),
		BytesIn:        s.ws.BytesIn(),
		BytesOut:       out.BytesOut,
		Writes:         out.Writes,
		QueuedBytes:    out.QueuedBytes,
		PartialBytes:   s.ws.PartialBytes(),
		Poller:         s.poller.Stats(),
		FanoutDuration: h.FanoutDuration,
		QueueSizes:     h.QueueSizes,

		Subscriptions:      h.Subscriptions,
		Resumed:            s.ws.Resumed(),
		NotRecovered:       s.ws.NotRecovered(),
		IdempotentRepeats:  s.idem.repeats.Load(),
		IdempotencyEvicted: s.idem.evicted.Load(),
	}
	if s.hist != nil {
		st.History = s.hist.Stats()
	}
	for i := range st.Rejected {
		st.Rejected[i] = s.rejected[i].Load()
	}
	for i := range st.Closes {
		st.Closes[i] = s.closes[i].Load()
	}
	return st
}
