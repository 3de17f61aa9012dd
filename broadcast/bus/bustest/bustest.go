// Package bustest runs an in-process NATS server with JetStream for the
// tier's tests (broadcast/bus, cmd/fanout). Only tests import it.
package bustest

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// StartJetStream runs a NATS server with JetStream on 127.0.0.1:port (0:
// any), its store in dir; opts, if not nil, may change its options first.
// It is shut down when the test ends (Shutdown is harmless twice).
func StartJetStream(t testing.TB, dir string, port int, opts func(*natsserver.Options)) *natsserver.Server {
	t.Helper()
	if port == 0 {
		port = natsserver.RANDOM_PORT
	}
	o := &natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: dir}
	if opts != nil {
		opts(o)
	}
	ns, err := natsserver.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}
