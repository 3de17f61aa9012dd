// Package api is fanout's admin HTTP: publish, health, readiness, metrics.
//
// It serves a broadcast server's operators and backends, never its
// WebSocket clients, and knows the server only through the small
// interfaces it needs (Publisher, Server, Bus), so it can be tested
// against fakes as well as a real *broadcast.Server.
//
//	GET  /healthz        200 "ok" while the process runs
//	GET  /readyz         200 "ready"; 503 "starting" or "draining" (about this node only)
//	GET  /bus            in a tier: the bus's state (JSON); 503 while NATS is away
//	GET  /metrics        Prometheus: the server's Stats (fanout_*), the bus's, Go and process
//	POST /publish        a backend's message, or an NDJSON batch of them, to every client (see PublishHandler)
//
// New wires them into one handler; PublishHandler and NewCollector are
// the two pieces on their own, for a caller with its own mux or registry.
// Serve runs a handler on a listener with the bounds an admin port needs
// (HTTPConfig: header, request and idle deadlines, a connection cap).
// PprofHandler serves /debug/pprof/ (never cmdline) for a listener of its
// own, which cmd/fanout keeps on loopback.
package api
