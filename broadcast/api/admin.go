package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fanout/fanout/broadcast"
)

// Server is what the admin API needs of a broadcast server:
// *broadcast.Server is one.
type Server interface {
	Publisher
	Stats() broadcast.Stats
}

// Bus is what the admin API needs of the bus joining a tier: *bus.NATS is
// one.
type Bus interface {
	// Connected reports whether the node can reach the rest of the tier.
	Connected() bool
	// Collector exports the bus's metrics.
	Collector() prometheus.Collector
}

// Config configures an Admin. Each field says what its zero value means.
type Config struct {
	// Server is the broadcast server published to and reported on.
	// Required: New fails without it.
	Server Server
	// Bus, if set, adds its metrics to /metrics and makes /readyz answer
	// 503 "bus disconnected" while it is away. Nil means standalone
	// (leave it nil rather than setting a nil *bus.NATS).
	Bus Bus
	// PublishKeys are the bearer keys POST /publish accepts. Empty
	// disables publishing: every request gets 403.
	PublishKeys []string
	// MaxMessage is the largest POST /publish body, in bytes; larger gets
	// 413. Set it to the server's Config.MaxMessage. Zero means
	// broadcast.DefaultConfig().MaxMessage (64 KiB).
	MaxMessage int
}

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
	}
	if cfg.Bus != nil {
		cs = append(cs, cfg.Bus.Collector())
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
	a.mux.HandleFunc("GET /readyz", a.readyz)
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
// draining, or the bus is away).
func (a *Admin) SetReady() { a.ready.Store(true) }

// SetDraining makes /readyz answer 503 "draining" from now on, so a load
// balancer stops sending clients while the server shuts down.
func (a *Admin) SetDraining() { a.draining.Store(true) }

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case a.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	case !a.ready.Load():
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	case a.bus != nil && !a.bus.Connected():
		// Local clients are still served; this node just cannot reach
		// the rest of the tier.
		http.Error(w, "bus disconnected", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ready\n")
}
