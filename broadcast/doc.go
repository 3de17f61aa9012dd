// Package broadcast is fanout's hub: it upgrades connections, reads their
// frames on the netpoll worker pool, and fans every published message out
// to every connection through a sharded connection table.
//
// # Data flow
//
//	accept ─► handshake goroutine (deadline) ─► register: id, shard, epoll watch
//	epoll ─► worker: non-blocking read ─► frame.Parser ─► hub.publish
//	hub.publish: encode once ─► ring ─► wake every shard
//	shard goroutine: for each connection: writev(frames) ─► short write? queue + EPOLLOUT
//
// # Invariants
//
//   - Goroutines are O(workers + shards), not O(connections): an idle
//     connection owns no goroutine, no read buffer and no write buffer.
//   - One file descriptor per connection; the fd leaves epoll before it is
//     closed.
//   - A broadcast allocates once (the encoded frame), whatever the number of
//     recipients.
//   - No worker and no shard ever waits on one peer's socket: every read
//     and write is non-blocking; a full socket leaves bytes queued (bounded
//     by Config.QueueBytes) and arms EPOLLOUT.
//   - Every connection ends through conn.teardown, exactly once, counted by
//     CloseReason.
//
// # Lock order
//
// Take locks only in this order; never call out of the package with one held.
//
//	conn.mu  ─►  netpoll.Watch.mu  ─►  shard.mu  ─►  hub.mu
//
// conn.mu guards a connection's outbound queue and close state; shard.mu
// guards only the shard's inbox of additions and removals (the connection
// table itself belongs to the shard goroutine and has no lock); hub.mu
// guards the message ring. Server.mu guards listeners and is never held
// with any other.
package broadcast
