// Package hub moves published messages to subscribers, in one order: a ring
// of messages that every shard reads at its own pace, and shards that each
// own a slice of the subscribers and write every message to each of them.
//
// A message is encoded once (Message holds its encodings); a shard builds
// the list of frames of a batch once per encoding and hands the same
// immutable bytes to every subscriber. What a subscriber does with them
// (write now, queue, close a slow consumer) is its own business: the hub
// knows nothing of sockets or protocols.
//
// # Goroutines
//
// One per shard plus one sweep ticker, whatever the number of subscribers.
// A shard's subscriber table belongs to its goroutine and has no lock;
// additions and removals reach it through an inbox.
//
// # Panics
//
// A panic on a shard goroutine is not recovered: it crashes the process,
// loudly. The shard's loop is the fan-out itself, whose state (cursor,
// batch, half-written queues) cannot be trusted after one; a node that
// restarts is better than one that silently stops delivering. Handlers on
// the worker pool are different: each belongs to one connection, and a
// panic there tears down that connection only (outbound.Conn.Recover).
//
// # Lock order
//
//	subscriber's own lock (taken inside its methods)  ─►  Shard.mu  ─►  Hub.mu
//
// Shard.mu guards only the inbox; Hub.mu guards the ring. A shard calls
// subscriber methods holding neither.
package hub
