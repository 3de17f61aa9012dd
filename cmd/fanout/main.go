// Command fanout is a WebSocket broadcast server: every message a client
// sends (or a backend publishes) reaches every connected client.
//
//	fanout -addr 127.0.0.1:8080 -admin-addr 127.0.0.1:8081
//
// Run fanout -help for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/bus"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// run is the command, in environ (os.Environ's NAME=value lines). It
// returns the exit status: 2 for a bad flag or environment value (an
// address that cannot be listened on for what it is included), 1 when a
// start-up phase or serving fails, 0 after -help, -version, or a shutdown
// on SIGTERM or SIGINT.
func run(args, environ []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, environ, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fanout: %v\n", err)
		return 2
	}
	if o.version {
		b := api.ReadBuild()
		fmt.Fprintf(stdout, "fanout %s (%s, commit %s)\n", b.Version, b.GoVersion, b.Revision)
		return 0
	}
	n := &node{o: o, log: newLogger(o, stderr)}
	for _, w := range o.warnings {
		n.log.Warn(w)
	}
	if _, set := lookupIn(environ)("GOGC"); !set {
		debug.SetGCPercent(o.gcPercent)
	}
	defer n.closeBus()
	// Each phase logs its own failure, saying what it was doing. An
	// address the system refuses for what it is (*net.AddrError: a port
	// out of range, a host that is no address) is a bad flag: 2.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	for _, phase := range []func() error{n.listen, n.newBus, n.startAdmin, n.startPprof, n.joinTier} {
		if err := phase(); err != nil {
			if _, bad := errors.AsType[*net.AddrError](err); bad || errors.Is(err, bus.ErrTooBig) {
				return 2
			}
			return 1
		}
	}
	sig, err := n.serve(sigs)
	if err != nil {
		return 1
	}
	n.drain(sigs, sig)
	return 0
}

func newLogger(o *options, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: o.level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// node is one running fanout, built by run's phases in this order.
type node struct {
	o   *options
	log *slog.Logger

	ln  net.Listener      // WebSocket listener (listen)
	srv *broadcast.Server // (listen)
	bus *bus.JetStream    // nil when standalone (newBus)

	admin     *api.Admin   // readiness and the admin handler (startAdmin)
	adminHTTP *http.Server // nil when -admin-addr is empty (startAdmin)
	adminAddr string       // its bound address, "" when disabled

	pprofHTTP *http.Server // nil without -pprof-addr (startPprof)
	pprofAddr string       // its bound address, "" when disabled

	pusherHTTP *http.Server // nil without -pusher-api-addr (startAdmin)
	pusherAddr string       // its bound address
}

// listen binds the WebSocket address and builds the server.
func (n *node) listen() error {
	ln, err := net.Listen("tcp", n.o.addr)
	if err != nil {
		n.log.Error("listen", "addr", n.o.addr, "err", err)
		return err
	}
	n.o.cfg.Logger = n.log
	srv, err := broadcast.New(n.o.cfg)
	if err != nil {
		n.log.Error("start", "err", err)
		return err
	}
	n.ln, n.srv = ln, srv
	return nil
}

// newBus starts connecting to NATS when -nats is set (in the
// background: joinTier waits for it); the server publishes to the bus
// from then on, and the bus delivers to the server.
func (n *node) newBus() error {
	if n.o.nats == "" {
		return nil
	}
	o := n.o
	storage := jetstream.FileStorage
	if o.natsStorage == "memory" {
		storage = jetstream.MemoryStorage
	}
	b, err := bus.New(bus.Config{
		URL: o.nats, Stream: o.natsStream, Storage: storage, Replicas: o.natsReplicas,
		MaxAge: o.cfg.HistoryTTL, MaxBytes: o.cfg.HistoryBytes, MaxMessage: o.cfg.MaxMessage,
		Duplicates: o.cfg.IdempotencyWindow, PublishTimeout: o.natsTimeout, Options: o.natsOptions,
		Name: "fanout " + n.ln.Addr().String(), Logger: n.log,
	}, n.srv)
	if err != nil {
		n.log.Error("bus", "err", err)
		return err
	}
	n.bus = b
	n.srv.SetBus(b)
	return nil
}

// joinTier waits until the node has joined the tier's stream (created or
// updated it, checked its message size, delivered what it held), saying
// loudly on every failed attempt why it cannot, until a signal. The
// WebSocket listener serves only after: a client's first message is the
// tier's next.
func (n *node) joinTier() error {
	if n.bus == nil {
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := n.bus.Start(ctx); err != nil {
		n.log.Error("bus: cannot join the tier", "url", bus.RedactURL(n.o.nats), "err", err)
		return err
	}
	return nil
}

func (n *node) closeBus() {
	if n.bus != nil {
		_ = n.bus.Close()
	}
}

// startAdmin builds the admin API and, unless -admin-addr is empty,
// serves it. The API is built either way: it also holds the readiness
// that serve and drain set.
func (n *node) startAdmin() error {
	cfg := api.Config{
		Server:      n.srv,
		PublishKeys: n.o.publishKeys,
		MaxMessage:  n.o.cfg.MaxMessage,
		Batch:       n.o.batch,
	}
	if n.bus != nil { // a nil *bus.JetStream would be a non-nil api.Bus
		cfg.Bus = n.bus
	}
	if f := n.srv.Pusher(); f != nil {
		cfg.Pusher = f // the Pusher HTTP API on the admin listener (and -pusher-api-addr's)
	}
	admin, err := api.New(cfg)
	if err != nil {
		n.log.Error("admin", "err", err)
		return err
	}
	n.admin = admin
	if addr := n.o.pusher.apiAddr; addr != "" && n.srv.Pusher() != nil {
		pln, err := net.Listen("tcp", addr)
		if err != nil {
			n.log.Error("listen pusher api", "addr", addr, "err", err)
			return err
		}
		n.pusherAddr = pln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/apps/", n.srv.Pusher())
		n.pusherHTTP = api.Serve(pln, mux, api.HTTPConfig{MaxConns: n.o.adminMaxConns, Logger: n.log})
	}
	if n.o.adminAddr == "" {
		return nil
	}
	aln, err := net.Listen("tcp", n.o.adminAddr)
	if err != nil {
		n.log.Error("listen admin", "addr", n.o.adminAddr, "err", err)
		return err
	}
	n.adminAddr = aln.Addr().String()
	n.adminHTTP = api.Serve(aln, admin.Handler(), api.HTTPConfig{MaxConns: n.o.adminMaxConns, Logger: n.log})
	return nil
}

// startPprof serves pprof on -pprof-addr, a loopback address (validate
// checked the flag; the bound address is checked again, in case
// "localhost" resolves elsewhere).
func (n *node) startPprof() error {
	if n.o.pprofAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.o.pprofAddr)
	if err != nil {
		n.log.Error("listen pprof", "addr", n.o.pprofAddr, "err", err)
		return err
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		_ = ln.Close()
		err = fmt.Errorf("%s is not a loopback address", ln.Addr())
		n.log.Error("listen pprof", "addr", n.o.pprofAddr, "err", err)
		return err
	}
	n.pprofAddr = ln.Addr().String()
	// A profile or trace takes as long as asked (?seconds=30): no write
	// deadline; a few connections are plenty for one operator.
	n.pprofHTTP = api.Serve(ln, api.PprofHandler(), api.HTTPConfig{MaxConns: 4, WriteTimeout: -1, Logger: n.log})
	return nil
}

// serve accepts clients until a signal arrives (returned: time to drain)
// or the listener fails. Serving goes on through drain's delay.
func (n *node) serve(sigs <-chan os.Signal) (os.Signal, error) {
	serveErr := make(chan error, 1)
	go func() { serveErr <- n.srv.Serve(n.ln) }()
	n.admin.SetReady()
	o := n.o
	demo := "off"
	if o.cfg.Demo {
		demo = "http://" + n.ln.Addr().String() + "/"
	}
	n.log.Info("fanout ready", "ws", "ws://"+n.ln.Addr().String()+o.cfg.Path, "admin", n.adminAddr, "pprof", n.pprofAddr, "demo", demo,
		"shards", o.cfg.Shards, "queue_bytes", o.cfg.QueueBytes, "slow_policy", o.cfg.SlowPolicy.String(),
		"max_conns", o.cfg.MaxConns, "client_publish", o.clientPublish,
		"publish_api", len(o.publishKeys) > 0, "client_auth", o.authSecret != "", "nats", bus.RedactURL(o.nats),
		"pusher", o.pusher.on(), "pusher_api", n.pusherAddr)
	select {
	case sig := <-sigs:
		return sig, nil
	case err := <-serveErr:
		n.log.Error("serve", "err", err)
		return nil, err
	}
}

// drain reports not ready at once; after SIGTERM it keeps accepting and
// serving for -drain-delay, so that a load balancer sees /readyz fail and
// stops sending clients before the listener closes (SIGINT, a Ctrl-C at a
// terminal, does not wait). Then it delivers what was published, closes
// every client with 1001 (spread over -drain-spread) within
// -shutdown-timeout (the rest at once after it), and stops the admin
// listener. A second signal exits at once.
func (n *node) drain(sigs <-chan os.Signal, sig os.Signal) {
	n.admin.SetDraining()
	go func() {
		sig := <-sigs
		n.log.Warn("second signal: exiting now", "signal", sig.String())
		os.Exit(1)
	}()
	if d := n.o.drainDelay; sig == syscall.SIGTERM && d > 0 {
		n.log.Info("signal: draining; /readyz answers 503, still serving", "signal", sig.String(), "drain_delay", d)
		time.Sleep(d) // the delay itself, asked for by the operator
	}
	n.log.Info("shutting down", "signal", sig.String(), "timeout", n.o.shutdownTimeout, "drain_spread", n.o.cfg.DrainSpread)
	ctx, cancel := context.WithTimeout(context.Background(), n.o.shutdownTimeout)
	defer cancel()
	// The tier's stream keeps what this node no longer delivers: stop
	// taking from it before the hub closes.
	n.closeBus()
	err := n.srv.Shutdown(ctx)
	st := n.srv.Stats()
	if err != nil {
		n.log.Warn("shutdown deadline passed; remaining clients closed at once", "err", err)
	}
	for _, hs := range []*http.Server{n.adminHTTP, n.pprofHTTP, n.pusherHTTP} {
		if hs != nil {
			_ = hs.Close()
		}
	}
	n.log.Info("bye", "accepted", st.Accepted, "published", st.Published, "deliveries", st.Deliveries)
}
