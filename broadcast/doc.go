// Package broadcast is one fanout node: it accepts and upgrades WebSocket
// clients and publishes every message to every connected client. It wires
// the parts below it, each a package with one idea:
//
//	admit     before the upgrade: handshake slots, Origin, token, connection limits
//	wsconn    the WebSocket codec: reads and parses client frames, pings, closes
//	outbound  a connection's socket: fd, bounded queue, writev, EPOLLOUT, one close path
//	hub       the ring of messages and the shards that write them to subscribers
//	frame     RFC 6455 bytes
//	netpoll   (top level) one-shot epoll registrations and the worker pool
//
// # Publishing: one path, named once
//
// A message (hub.Message: channel, seq, opcode, payload and its encodings)
// takes one path, whoever publishes it:
//
//	accept   a client's complete data message (wsconn → Server, via
//	         wsconn.Node.Accept) or a backend's Publish (which validates size
//	         and UTF-8 first);
//	route    in a tier, to the JetStream stream (Bus; a backend's Publish
//	         returns once it is stored), from which every node, this one
//	         included, takes it in the stream's order through Deliver; else
//	         straight on;
//	fan out  encode once (hub.NewMessage) and broadcast it: the hub gives it
//	         the next seq in its ring (in a tier, the stream's, waiting while
//	         the ring is full: Hub.AppendWait);
//	deliver  each shard takes a batch from the ring and hands the same bytes
//	         to each of its connections (hub.Subscriber.Deliver): written now,
//	         or queued behind what waits.
//
// A broadcast is a message accepted into the ring (Stats.Published); a
// delivery is one message handed to one connection (Stats.Deliveries). A
// reservation (admit.Ticket) is what an upgrade holds from admission until
// its connection is torn down.
//
// # Invariants
//
//   - Goroutines are O(workers + shards), not O(connections): an idle
//     connection owns no goroutine, no read buffer and no write buffer.
//   - One file descriptor per connection; the fd leaves epoll before it is
//     closed.
//   - A broadcast allocates once (the encoded message), whatever the number
//     of recipients (wsconn's TestBroadcastAllocatesOnce).
//   - No worker and no shard ever waits on one peer's socket: every read
//     and write is non-blocking; a full socket leaves bytes queued (bounded
//     by Config.QueueBytes) and arms EPOLLOUT.
//   - Every connection ends through outbound.Conn.TeardownLocked, exactly
//     once, counted by CloseReason, and gives its admission back then.
//
// # Lock order
//
// Take locks only in this order; never call out of the package with one
// held, except down this list.
//
//	outbound.Conn.mu  ─►  netpoll.Watch.mu  ─►  hub.Shard.mu  ─►  hub.Hub.mu  ─►  history.Memory.mu
//	hub.Table.mu (a shard linking or unlinking)  ─►  nothing
//	outbound.Conn.mu  ─►  admit.Controller.ipMu (a teardown releases its ticket)
//	idempotency.mu, Server.mu: never held with any other.
//
// Conn.mu guards a connection's outbound queue and close state; Shard.mu
// guards only the shard's inbox of additions and removals; a shard's
// Table belongs to the shard goroutine, and its mu only lets others read
// how many are on a channel (GET /channels, receipts); Hub.mu guards the
// ring, and the history's lock is taken inside it (Broadcast keeps each
// message there before any shard can take it; a resume's replay takes it
// alone, bounded by Config.ReplayBytes). idempotency.mu is dropped before
// a keyed publish runs. Server.mu guards the listeners and the handshakes
// in progress; ipMu the per-source counts, and nothing is taken under it.
package broadcast
