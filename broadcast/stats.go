package broadcast

import "github.com/fanout/fanout/netpoll"

// Stats is a snapshot of a Server's counters. Counters only grow.
type Stats struct {
	Conns       int64              // open connections
	Handshaking int64              // upgrades in progress
	Accepted    uint64             // upgrades completed
	Rejected    [numRejects]uint64 // upgrades refused, by RejectKind
	Closes      [numReasons]uint64 // connections ended, by CloseReason
	MessagesIn  uint64             // complete data messages read from clients
	Published   uint64             // messages accepted for broadcast (clients and Publish)
	Refused     uint64             // publishes refused (backlog full, shutting down)
	Deliveries  uint64             // frames handed to connections (written or queued)
	Dropped     uint64             // frames dropped under SlowDrop
	BytesOut    uint64             // bytes written to sockets
	Writes      uint64             // socket writes (each may carry several frames)
	QueuedBytes int64              // bytes waiting in outbound queues now
	Poller      netpoll.Stats      // worker pool

	FanoutDuration HistSnapshot // seconds per shard batch
	QueueSizes     HistSnapshot // bytes, sampled each sweep for queued connections
}

// Closed returns the count of connections that ended for reason r.
func (st Stats) Closed(r CloseReason) uint64 { return st.Closes[r] }

// Rejects returns the count of upgrades refused for kind k.
func (st Stats) Rejects(k RejectKind) uint64 { return st.Rejected[k] }

// RejectKinds lists every reject kind, for exporters.
func RejectKinds() []RejectKind {
	out := make([]RejectKind, numRejects)
	for i := range out {
		out[i] = RejectKind(i)
	}
	return out
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Conns:       int64(s.Conns()),
		Handshaking: s.handshaking.Load(),
		Accepted:    s.accepted.Load(),
		MessagesIn:  s.messagesIn.Load(),
		Published:   s.published.Load(),
		Refused:     s.refused.Load(),
		BytesOut:    s.bytesOut.Load(),
		Writes:      s.writes.Load(),
		Poller:      s.poller.Stats(),
	}
	for i := range st.Rejected {
		st.Rejected[i] = s.rejected[i].Load()
	}
	for i := range st.Closes {
		st.Closes[i] = s.closes[i].Load()
	}
	for _, sh := range s.hub.shards {
		st.Deliveries += sh.deliveries.Load()
		st.Dropped += sh.dropped.Load()
		sh.fanoutHist.snapshot(&st.FanoutDuration)
		sh.queueHist.snapshot(&st.QueueSizes)
	}
	st.QueuedBytes = s.queued.Load()
	return st
}
