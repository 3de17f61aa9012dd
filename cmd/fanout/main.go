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
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/bus"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

type options struct {
	addr, adminAddr string
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
	pprof           bool
	publishKeys     []string
	authSecret      string
	nats            string
	natsSubject     string
	natsBuffer      int
	natsResume      time.Duration
	clientPublish   bool
	slowPolicy      string
	cfg             broadcast.Config
}

// applyEnv gives every flag not set on the command line the value of
// FANOUT_<FLAG> (upper case, dashes as underscores), if that is set.
func applyEnv(fs *flag.FlagSet, env func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v := env(name); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return "FANOUT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func parseFlags(args []string, env func(string) string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fanout [flags]\n\nA WebSocket broadcast server: every message reaches every client.\n"+
			"Every flag may also be set as FANOUT_<FLAG> in the environment (FANOUT_MAX_CONNS=1000);\n"+
			"the command line wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	c := &o.cfg
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "WebSocket listen `address` (host:port; port 0 picks one and logs it)")
	fs.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:8081", "admin HTTP listen `address` (/healthz, /readyz, /metrics); empty disables it")
	fs.StringVar(&c.Path, "path", "/ws", "URL `path` that upgrades to WebSocket; others get 404")
	fs.BoolVar(&o.clientPublish, "client-publish", true, "clients may publish; false makes them receive-only (their data frames close with 1008)")
	fs.IntVar(&c.Workers, "workers", 0, "read worker pool size (`n`); 0 means max(8, 4×GOMAXPROCS)")
	fs.IntVar(&c.Shards, "shards", 16, "connection table shards (`n`), each with one writer goroutine")
	fs.IntVar(&c.QueueBytes, "queue-bytes", 1<<20, "per-connection outbound queue limit in `bytes`")
	fs.StringVar(&o.slowPolicy, "slow-policy", "close", "`policy` when a queue is full: close (1008 \"slow consumer\") or drop (drop newest frames for that client)")
	fs.IntVar(&c.MaxMessage, "max-message", 64<<10, "largest client message in `bytes` (all fragments); larger closes with 1009")
	fs.DurationVar(&c.PingInterval, "ping-interval", 30*time.Second, "server ping `interval`; negative disables pings")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 75*time.Second, "close a client silent (no data, no pong) for this `duration`; negative disables")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", 5*time.Second, "deadline for the HTTP upgrade (`duration`)")
	fs.DurationVar(&c.CloseTimeout, "close-timeout", 5*time.Second, "how long a closing client gets to take its close frame (`duration`)")
	fs.IntVar(&c.MaxHandshakes, "max-handshakes", 4096, "upgrades in progress at once (`n`); connections beyond are closed unread")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "maximum concurrent connections (`n`); more get 503; 0 means no limit")
	fs.DurationVar(&c.FlushDelay, "flush-delay", 0, "batching window (`duration`): wait this long after a message so the next ones share its writev; trades latency for throughput; 0 writes at once")
	fs.IntVar(&c.Backlog, "backlog", 4096, "published messages that may wait for the slowest shard (`n`); more are refused")
	fs.IntVar(&c.ReadBufferSize, "read-buffer", 4096, "initial read buffer per busy connection in `bytes` (idle ones hold none)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM/SIGINT, how long to wait for clients to close (`duration`)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ on the admin listener")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 0, "maximum concurrent connections from one client address (`n`); more get 429; 0 means no limit")
	fs.Float64Var(&c.ClientRate, "client-rate", 0, "`rate` in messages per second a client may send (token bucket); over it closes with 1008; 0 means no limit")
	fs.IntVar(&c.ClientBurst, "client-burst", 0, "burst size (`messages`) for -client-rate; 0 means max(1, rate)")
	fs.StringVar(&o.nats, "nats", "", "join a fan-out tier over NATS at this `URL` (nats://host:4222, comma-separated for a cluster); empty runs standalone")
	fs.StringVar(&o.natsSubject, "nats-subject", "fanout.broadcast", "NATS `subject` the tier's messages travel on")
	fs.IntVar(&o.natsBuffer, "nats-buffer", 8<<20, "`bytes` of published messages kept for resending over a bus outage; beyond, publishes are refused")
	fs.DurationVar(&o.natsResume, "nats-resume-delay", time.Second, "after a bus reconnect, hold publishes this `duration` so every node is subscribed again")
	var origins, keys, keysFile, secretFile string
	fs.StringVar(&origins, "origins", "", "allowed `origins`, comma-separated: https://app.example.com, app.example.com, *.example.com or *; empty allows requests without Origin and same-host Origins only")
	fs.StringVar(&keys, "publish-keys", "", "comma-separated bearer `keys` for POST /publish (prefer FANOUT_PUBLISH_KEYS or -publish-keys-file: flags show in ps); none disables /publish")
	fs.StringVar(&keysFile, "publish-keys-file", "", "`file` with one publish key per line")
	fs.StringVar(&o.authSecret, "auth-secret", "", "HS256 `secret`: clients must present a valid JWT (token query parameter or Authorization: Bearer); empty disables client auth")
	fs.StringVar(&secretFile, "auth-secret-file", "", "`file` holding the -auth-secret")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := applyEnv(fs, env); err != nil {
		return nil, err
	}
	for _, k := range strings.Split(keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			o.publishKeys = append(o.publishKeys, k)
		}
	}
	if keysFile != "" {
		b, err := os.ReadFile(keysFile)
		if err != nil {
			return nil, fmt.Errorf("-publish-keys-file: %w", err)
		}
		for _, k := range strings.Split(string(b), "\n") {
			if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "#") {
				o.publishKeys = append(o.publishKeys, k)
			}
		}
	}
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return nil, fmt.Errorf("-auth-secret-file: %w", err)
		}
		o.authSecret = strings.TrimSpace(string(b))
	}
	for _, og := range strings.Split(origins, ",") {
		if og = strings.TrimSpace(og); og != "" {
			c.Origins = append(c.Origins, og)
		}
	}
	if o.authSecret != "" {
		c.Authenticate = broadcast.JWTAuthenticator([]byte(o.authSecret))
	}
	if o.natsBuffer <= 0 || o.natsResume <= 0 {
		return nil, errors.New("-nats-buffer and -nats-resume-delay must be positive")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, fmt.Errorf("-log-format: %q: want text or json", o.logFormat)
	}
	if c.ClientRate < 0 || c.ClientBurst < 0 || c.MaxConnsPerIP < 0 {
		return nil, errors.New("-client-rate, -client-burst and -max-conns-per-ip must not be negative")
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var err error
	if c.SlowPolicy, err = broadcast.ParseSlowPolicy(o.slowPolicy); err != nil {
		return nil, fmt.Errorf("-slow-policy: %w", err)
	}
	c.ReceiveOnly = !o.clientPublish
	for _, v := range []struct {
		name string
		val  int
		min  int
	}{
		{"workers", c.Workers, 0},
		{"shards", c.Shards, 1},
		{"queue-bytes", c.QueueBytes, 1},
		{"max-message", c.MaxMessage, 1},
		{"max-conns", c.MaxConns, 0},
		{"backlog", c.Backlog, 1},
		{"max-handshakes", c.MaxHandshakes, 1},
		{"read-buffer", c.ReadBufferSize, 64},
	} {
		if v.val < v.min {
			return nil, fmt.Errorf("-%s: %d is below the minimum %d", v.name, v.val, v.min)
		}
	}
	for _, v := range []struct {
		name string
		val  time.Duration
	}{
		{"handshake-timeout", c.HandshakeTimeout},
		{"close-timeout", c.CloseTimeout},
		{"shutdown-timeout", o.shutdownTimeout},
	} {
		if v.val <= 0 {
			return nil, fmt.Errorf("-%s: must be positive, got %s", v.name, v.val)
		}
	}
	if c.FlushDelay < 0 || c.FlushDelay > time.Second {
		return nil, fmt.Errorf("-flush-delay: %s: want 0 to 1s", c.FlushDelay)
	}
	if c.PingInterval == 0 || c.IdleTimeout == 0 {
		return nil, errors.New("-ping-interval and -idle-timeout must be positive, or negative to disable")
	}
	return o, nil
}

func run(args []string, env func(string) string, stderr io.Writer) int {
	o, err := parseFlags(args, env, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fanout: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "fanout: -log-level: %v\n", err)
		return 2
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if o.logFormat == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)
	o.cfg.Logger = log

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		log.Error("listen", "addr", o.addr, "err", err)
		return 1
	}
	srv, err := broadcast.New(o.cfg)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	var b *bus.NATS
	if o.nats != "" {
		b, err = bus.Connect(bus.Config{
			URL: o.nats, Subject: o.natsSubject, BufferBytes: o.natsBuffer, ResumeDelay: o.natsResume,
			Name: "fanout " + ln.Addr().String(), Logger: log,
		}, func(op ws.OpCode, p []byte) { srv.Deliver(op, p) })
		if err != nil {
			log.Error("bus", "err", err)
			return 1
		}
		defer b.Close()
		srv.SetBus(b)
	}
	var draining, ready atomic.Bool
	var admin *http.Server
	adminAddr := ""
	if o.adminAddr != "" {
		aln, err := net.Listen("tcp", o.adminAddr)
		if err != nil {
			log.Error("listen admin", "addr", o.adminAddr, "err", err)
			return 1
		}
		adminAddr = aln.Addr().String()
		mux := adminMux(srv, b, &ready, &draining, o.publishKeys)
		if o.pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := admin.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin server", "err", err)
			}
		}()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	ready.Store(true)
	log.Info("fanout ready", "ws", "ws://"+ln.Addr().String()+o.cfg.Path, "admin", adminAddr,
		"shards", o.cfg.Shards, "queue_bytes", o.cfg.QueueBytes, "slow_policy", o.cfg.SlowPolicy.String(),
		"max_conns", o.cfg.MaxConns, "client_publish", o.clientPublish,
		"publish_api", len(o.publishKeys) > 0, "client_auth", o.authSecret != "", "nats", o.nats)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case sig := <-sigs:
		log.Info("signal: shutting down", "signal", sig.String(), "timeout", o.shutdownTimeout)
	case err := <-serveErr:
		log.Error("serve", "err", err)
		return 1
	}
	draining.Store(true)
	go func() {
		sig := <-sigs
		log.Warn("second signal: exiting now", "signal", sig.String())
		os.Exit(1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(ctx)
	st := srv.Stats()
	if err != nil {
		log.Warn("shutdown deadline passed; remaining clients closed at once", "err", err)
	}
	if admin != nil {
		_ = admin.Close()
	}
	log.Info("bye", "accepted", st.Accepted, "published", st.Published, "deliveries", st.Deliveries)
	return 0
}

func adminMux(srv *broadcast.Server, b *bus.NATS, ready, draining *atomic.Bool, publishKeys []string) *http.ServeMux {
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), srv.Collector())
	if b != nil {
		reg.MustRegister(b.Collector())
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.Handle("/publish", srv.PublishHandler(publishKeys))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		case !ready.Load():
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		case b != nil && !b.Connected():
			// Local clients are still served; this node just cannot
			// reach the rest of the tier.
			http.Error(w, "bus disconnected", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}
