package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fanout/fanout/broadcast"
)

// Server is what the admin API needs of a broadcast server:
// *broadcast.Server is one.
type Server interface {
	Publisher
	ChannelLister
	Stats() broadcast.Stats
}

// Bus is what the admin API needs of the bus joining a tier:
// *bus.JetStream is one.
type Bus interface {
	// Connected reports whether the node can reach the tier's log.
	Connected() bool
	// Collector exports the bus's metrics.
	Collector() prometheus.Collector
	// Status is the bus's state, for GET /bus (JSON).
	Status() any
}

// Config configures an Admin. Each field says what its zero value means.
type Config struct {
	// Server is the broadcast server published to and reported on.
	// Required: New fails without it.
	Server Server
	// Bus, if set, adds its metrics to /metrics and serves GET /bus: 200
	// with its state while connected, 503 with it while not. /readyz
	// stays about this node: a NATS outage must not take every node out
	// of its load balancer at once. Nil means standalone (leave it nil
	// rather than setting a nil *bus.JetStream).
	Bus Bus
	// PublishKeys are the bearer keys POST /publish accepts. Empty
	// disables publishing: every request gets 403.
	PublishKeys []string
	// MaxMessage is the largest POST /publish body, in bytes; larger gets
	// 413. Set it to the server's Config.MaxMessage. Zero means
	// broadcast.DefaultConfig().MaxMessage (64 KiB).
	MaxMessage int
	// Batch bounds POST /publish/batch; the zero value works.
	Batch BatchConfig
	// Pusher, if set, serves the Pusher HTTP API under /apps/ and adds
	// its metrics (*pusher.Front is one). Nil: none.
	Pusher Pusher
}

// Pusher is what the admin API serves of a Pusher front door.
type Pusher interface {
	http.Handler
	Collectors() []prometheus.Collector
}

// DefaultBatchConfig is the BatchConfig a zero value stands for (the
// command's -max-batch-items and -max-batch-bytes default to it).
func DefaultBatchConfig() BatchConfig { return BatchConfig{}.withDefaults() }

// Admin is the admin HTTP handler and the readiness it reports. Its
// methods may be called from any goroutine.
type Admin struct {
	bus      Bus // nil when standalone
	mux      *http.ServeMux
	ready    atomic.Bool // set by SetReady
	draining atomic.Bool // set by SetDraining; wins over ready
}

// New builds the admin API for cfg.Server. /readyz answers 503
// "starting" until SetReady.
func New(cfg Config) (*Admin, error) {
	if cfg.Server == nil {
		return nil, errors.New("api: Config.Server is nil")
	}
	a := &Admin{bus: cfg.Bus, mux: http.NewServeMux()}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		NewCollector(cfg.Server.Stats),
		NewBuildCollector(ReadBuild()),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fanout_ready",
			Help: "1 while /readyz answers 200; 0 while starting (in a tier: until the node joined the stream) and while draining.",
		}, a.readyGauge),
	}
	if cfg.Bus != nil {
		cs = append(cs, cfg.Bus.Collector())
	}
	if cfg.Pusher != nil {
		cs = append(cs, cfg.Pusher.Collectors()...)
		a.mux.Handle("/apps/", cfg.Pusher)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	a.mux.Handle("/publish", PublishHandler(cfg.Server, cfg.PublishKeys, cfg.MaxMessage))
	a.mux.Handle("/publish/batch", BatchHandler(cfg.Server, cfg.PublishKeys, cfg.Batch))
	a.mux.Handle("GET /channels", ChannelsHandler(cfg.Server, cfg.PublishKeys))
	a.mux.HandleFunc("GET /readyz", a.readyz)
	if cfg.Bus != nil {
		a.mux.HandleFunc("GET /bus", a.busz)
	}
	return a, nil
}

// PprofHandler serves net/http/pprof under /debug/pprof/ (the index, the
// runtime profiles, profile, symbol, trace), for a listener of its own
// that only this machine reaches: the admin listener is for backends and
// scrapers, and profiles show the program's memory. It never serves
// /debug/pprof/cmdline: the command line holds every secret passed as a
// flag.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// pprof.Index would answer 404 "Unknown profile" for it anyway (it
	// is not a runtime/pprof profile); routed here so that stays true.
	mux.Handle("/debug/pprof/cmdline", http.NotFoundHandler())
	mux.Handle("/debug/pprof/cmdline/", http.NotFoundHandler())
	return mux
}

// Handler returns the handler for every admin path.
func (a *Admin) Handler() http.Handler { return a.mux }

// SetReady makes /readyz answer 200 once the server is serving (unless
// draining).
func (a *Admin) SetReady() { a.ready.Store(true) }

// SetDraining makes /readyz answer 503 "draining" from now on, so a load
// balancer stops sending clients while the server shuts down.
func (a *Admin) SetDraining() { a.draining.Store(true) }

// readyGauge is fanout_ready: what /readyz answers, as a number an alert
// can hold (a node that stays not ready is one its balancer skips).
func (a *Admin) readyGauge() float64 {
	if a.ready.Load() && !a.draining.Load() {
		return 1
	}
	return 0
}

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case a.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	case !a.ready.Load():
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}

// busz serves GET /bus: the tier's state as this node sees it.
func (a *Admin) busz(w http.ResponseWriter, r *http.Request) {
	b, err := json.Marshal(a.bus.Status())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if !a.bus.Connected() {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(append(b, '\n'))
}

// HTTPConfig bounds what the clients of an admin (or pprof) listener may
// hold: without it a keep-alive client that goes quiet, or one that never
// finishes its request, keeps a goroutine and a descriptor from the
// process's file budget, the one the WebSocket clients live on. Each
// field says what its zero value means.
type HTTPConfig struct {
	// MaxConns caps the connections open at once. At the cap, the
	// keep-alive connection idle longest is closed to keep a slot for the
	// next client, so a health check is not kept waiting by scrapers' and
	// backends' pooled connections; when none is idle, new clients wait
	// in the kernel's accept queue, holding no descriptor. Zero means 64.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's headers, the first
	// request's included. Zero means 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Zero
	// means 10s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request's handling and answer, from the end
	// of its headers. Zero means 10s; negative means none (pprof's
	// profile and trace take as long as they are asked to).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request
	// for that long. Zero means 30s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header block; over it, 431. Zero
	// means 16 KiB.
	MaxHeaderBytes int
	// Logger receives the server's errors. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultHTTPConfig returns the HTTPConfig a zero value stands for,
// every default filled in (Logger aside).
func DefaultHTTPConfig() HTTPConfig {
	c := HTTPConfig{}.withDefaults()
	c.Logger = nil
	return c
}

func (c HTTPConfig) withDefaults() HTTPConfig {
	if c.MaxConns <= 0 {
		c.MaxConns = 64
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 10 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Serve serves h on ln, bounded by cfg, on a goroutine of its own, until
// the server it returns is closed (Close or Shutdown). Errors other than
// http.ErrServerClosed are logged.
func Serve(ln net.Listener, h http.Handler, cfg HTTPConfig) *http.Server {
	cfg = cfg.withDefaults()
	ll := newLimitListener(ln, cfg.MaxConns)
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      max(cfg.WriteTimeout, 0),
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ConnState:         ll.connState,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := hs.Serve(ll); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("api: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return hs
}

// limitListener accepts at most cap(slots) connections at once, the way
// golang.org/x/net/netutil.LimitListener does (this module does not
// require x/net), and, at the cap, closes the connection idle longest to
// make room. The http.Server tells it which connections are idle
// (connState).
type limitListener struct {
	net.Listener
	slots  chan struct{} // one token per open connection
	idleCh chan struct{} // a connection went idle; 1-buffered
	done   chan struct{} // closed by Close
	once   sync.Once

	mu   sync.Mutex
	idle map[*limitConn]time.Time // guarded by mu: keep-alive connections between requests, since when
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), idleCh: make(chan struct{}, 1),
		done: make(chan struct{}), idle: make(map[*limitConn]time.Time)}
}

// Accept takes a slot (acquire), then accepts. It never holds a
// descriptor while it waits for a slot.
func (l *limitListener) Accept() (net.Conn, error) {
	if err := l.acquire(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, l: l}, nil
}

// acquire takes a slot for the next connection: a free one, else that of
// the connection idle longest, closed for it, else the first one given
// back or going idle. So at the cap one slot is kept for the next client
// at the cost of one keep-alive connection. (A connection closed as its
// client sends a new request loses that request, as it would to
// IdleTimeout: HTTP clients retry such a request when it is idempotent.)
func (l *limitListener) acquire() error {
	for {
		select {
		case l.slots <- struct{}{}:
			return nil
		default:
		}
		if l.closeIdlest() {
			continue // its slot is free now
		}
		select {
		case l.slots <- struct{}{}:
			return nil
		case <-l.idleCh:
		case <-l.done:
			return net.ErrClosed
		}
	}
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	return err
}

// closeIdlest closes the connection idle longest; false if none is idle.
func (l *limitListener) closeIdlest() bool {
	l.mu.Lock()
	var oldest *limitConn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	delete(l.idle, oldest)
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	_ = oldest.Close()
	return true
}

// connState is the http.Server's ConnState hook: it keeps l.idle.
func (l *limitListener) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if st == http.StateIdle {
		l.idle[c] = time.Now()
	} else {
		delete(l.idle, c)
	}
	l.mu.Unlock()
	if st == http.StateIdle {
		select {
		case l.idleCh <- struct{}{}:
		default: // one wake-up pending is enough: Accept looks at them all
		}
	}
}

// limitConn gives its slot back when it is first closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.idle, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
