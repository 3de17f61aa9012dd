package broadcast

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/history"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/internal/lograte"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/broadcast/pusher"
	"github.com/fanout/fanout/broadcast/sseconn"
	"github.com/fanout/fanout/broadcast/wsconn"
	"github.com/fanout/fanout/netpoll"
)

// Server is one fanout node: it accepts and upgrades WebSocket clients and
// publishes every message a client sends, and every message given to
// Publish, to every connected client (through the bus first, when one is
// set). Create one with New; several may run in one process.
type Server struct {
	cfg    Config
	log    *slog.Logger
	poller *netpoll.Poller
	hub    *hub.Hub
	admit  *admit.Controller
	out    *outbound.Env
	ws     *wsconn.Env
	sse    *sseconn.Env
	hist   *history.Memory // nil: no history (Config.HistorySize < 0)
	idem   *idempotency
	bus    Bus           // nil: standalone; set before Serve
	pusher *pusher.Front // nil: no Pusher front door
	demo   *demoPage     // nil: no demo page (Config.Demo)

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	hsConns   map[net.Conn]struct{}     // guarded by mu: handshakes in progress
	abortHS   atomic.Bool               // Shutdown's deadline passed: handshakes in progress give up

	closing     atomic.Bool
	nextID      atomic.Uint64
	hsWG        sync.WaitGroup // handshake goroutines
	shutdown    sync.Once
	shutdownErr error

	// Counters; Stats adds those of the parts.
	accepted atomic.Uint64
	rejected [numRejects]atomic.Uint64
	closes   [numReasons]atomic.Uint64
	refused  atomic.Uint64
	// tierInvalid counts messages of the tier's stream not delivered:
	// fanout would not have published them.
	tierInvalid atomic.Uint64

	logAccept, logRefused, logProxy *lograte.Limiter
}

// New starts a Server's poller and hub; call Serve to accept.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		listeners:  make(map[net.Listener]struct{}),
		logAccept:  lograte.New(1, 5),
		logRefused: lograte.New(5, 10),
		logProxy:   lograte.New(1, 5),
	}
	var err error
	if s.admit, err = admit.New(cfg.admitConfig()); err != nil {
		return nil, fmt.Errorf("broadcast: %w", err)
	}
	if cfg.Demo {
		if cfg.Path == "/" || !cfg.NoSSE && cfg.SSEPath == "/" {
			return nil, errors.New("broadcast: Demo serves its page at /, which is Path or SSEPath: move them, or turn Demo off")
		}
		if s.demo, err = newDemoPage(cfg.Path); err != nil {
			return nil, err
		}
	}
	p, err := netpoll.New(netpoll.Config{Workers: cfg.Workers, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("broadcast: %w", err)
	}
	s.poller = p
	s.out = outbound.NewEnv(cfg.outboundConfig())
	var hist hub.History
	if hc, ok := cfg.historyConfig(); ok {
		s.hist = history.New(hc)
		hist = s.hist
	}
	s.idem = newIdempotency(cfg.IdempotencyWindow, cfg.IdempotencyKeys, cfg.Logger)
	s.hub = hub.New(cfg.hubConfig(hist))
	s.ws = wsconn.NewEnv(cfg.wsConfig(), s.out, s.hub, p, (*connNode)(s))
	s.sse = sseconn.NewEnv(cfg.Logger, s.out, s.hub, p, (*sseNode)(s))
	if cfg.Pusher != nil {
		pc := *cfg.Pusher
		pc.ReceiveOnly = pc.ReceiveOnly || cfg.ReceiveOnly
		if pc.Logger == nil {
			pc.Logger = cfg.Logger
		}
		if pc.MaxChannels <= 0 {
			pc.MaxChannels = cfg.MaxChannelsPerConn
		}
		if s.pusher, err = pusher.New(pc, (*pusherNode)(s)); err != nil {
			s.hub.Stop()
			_ = p.Close()
			return nil, fmt.Errorf("broadcast: %w", err)
		}
		s.ws.SetProtocol(s.pusher)
	}
	return s, nil
}

// Pusher is the server's Pusher front door (its HTTP API is an
// http.Handler for /apps/); nil when Config.Pusher is not set.
func (s *Server) Pusher() *pusher.Front { return s.pusher }

// signedOnly refuses a native subscription (WebSocket or SSE) to a Pusher
// app's private or presence channel unless tokens are checked (-jwt-*:
// then the token granted it): Pusher clients need a signature for those.
func (s *Server) signedOnly(channels []string) error {
	if s.pusher == nil || s.admit.Authenticates() {
		return nil
	}
	for _, ch := range channels {
		if s.pusher.Signed(ch) {
			return fmt.Errorf("channel %.140q is a Pusher private or presence channel: subscribe through the Pusher protocol (signed), or with a token (-jwt-*)", ch)
		}
	}
	return nil
}

// pusherNode is the Server as its Pusher front door sees it.
type pusherNode Server

func (n *pusherNode) Hub() *hub.Hub { return n.hub }

// PublishEvent implements pusher.Node: an API event, published like a
// backend's message (in a tier, acknowledged first).
func (n *pusherNode) PublishEvent(channel string, kind hub.Kind, payload []byte, meta hub.Meta) error {
	_, err := (*Server)(n).Publish(Message{Channel: channel, Kind: kind, Payload: payload, Meta: meta})
	if errors.Is(err, ErrTooBig) {
		return fmt.Errorf("%w: %w", pusher.ErrTooBig, err)
	}
	return err
}

// PublishClient implements pusher.Node: a client event, routed like a
// client's message.
func (n *pusherNode) PublishClient(channel string, kind hub.Kind, payload []byte, meta hub.Meta) error {
	s := (*Server)(n)
	if len(payload) > s.cfg.MaxMessage {
		return ErrTooBig
	}
	return s.route(channel, kind, payload, meta)
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Other accept errors are retried with backoff, the
// way net/http does (a full file table must not stop the server).
func (s *Server) Serve(ln net.Listener) error {
	if !s.track(ln) {
		return ErrServerClosed
	}
	defer s.untrack(ln)
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if !retryable(err) {
				return fmt.Errorf("broadcast: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logAccept.Warn(s.log, "accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		peer := remoteAddr(nc)
		ip := peer.Addr()
		// A trusted load balancer's connection is held to MaxHandshakes
		// here, and counted under its client's source once the PROXY
		// header that names the client is read, on the handshake's
		// goroutine: never in this loop, which a slow balancer
		// connection must not hold.
		viaProxy := s.proxyTrusted(ip)
		src := ip
		if viaProxy {
			src = netip.Addr{}
		}
		slot, err := s.admit.StartHandshake(src)
		if err != nil {
			// A flood of clients that connect and say nothing, from
			// everywhere or from one source: shed them here, before they
			// cost a goroutine each.
			s.shed(nc, ip, err)
			continue
		}
		s.hsWG.Add(1)
		go s.handshake(nc, peer, slot, viaProxy)
	}
}

// shed closes, unread, a connection refused a handshake slot, and counts
// it.
func (s *Server) shed(nc net.Conn, ip netip.Addr, err error) {
	if errors.Is(err, admit.ErrSourceHandshakes) {
		s.rejected[RejectBusySource].Add(1)
		s.logAccept.Warn(s.log, "too many handshakes in progress from one source; closing new connection",
			"remote", ip.String(), "limit", s.cfg.MaxHandshakesPerIP)
	} else {
		s.rejected[RejectBusy].Add(1)
		s.logAccept.Warn(s.log, "too many handshakes in progress; closing new connection", "limit", s.cfg.MaxHandshakes)
	}
	_ = nc.Close()
}

// remoteAddr is nc's peer address, unmapped; the zero AddrPort when it
// is not an IP connection.
func remoteAddr(nc net.Conn) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if p, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		ap = p
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// retryable reports whether an accept error is a passing shortage (file
// table, buffers, an aborted connection) rather than a closed listener.
func retryable(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ECONNABORTED) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

func (s *Server) track(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

// trackHandshake records a handshake in progress, so that Shutdown can
// cut it short when its deadline passes; false if that already happened.
func (s *Server) trackHandshake(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abortHS.Load() {
		return false
	}
	if s.hsConns == nil {
		s.hsConns = make(map[net.Conn]struct{})
	}
	s.hsConns[nc] = struct{}{}
	return true
}

func (s *Server) untrackHandshake(nc net.Conn) {
	s.mu.Lock()
	delete(s.hsConns, nc)
	s.mu.Unlock()
}

// abortHandshakes makes every handshake in progress fail now (its reads
// return at once), and every one to come fail at its start.
func (s *Server) abortHandshakes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortHS.Store(true)
	for nc := range s.hsConns {
		_ = nc.SetDeadline(time.Now())
	}
}

func (s *Server) untrack(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
}

// Conns returns the number of connections in the hub: upgraded, not yet
// torn down.
func (s *Server) Conns() int { return s.hub.Len() }

// connNode is the Server as its connections see it (wsconn.Node), kept
// off the Server's own method set.
type connNode Server

// Accept implements wsconn.Node: a client's message, already validated by
// the frame parser (and, in json format, by its codec), is routed like
// any other.
func (n *connNode) Accept(channel string, kind Kind, payload []byte) error {
	s := (*Server)(n)
	if err := s.backendOnly(channel); err != nil {
		s.refused.Add(1)
		return err
	}
	return s.route(channel, kind, payload, hub.Meta{})
}

// backendOnly refuses a native client's publish to a Pusher app's channel
// unless tokens are checked (-auth-secret: then the token granted it): on
// Pusher channels only backends publish (the HTTP API), and clients send
// client events, signed and attributed.
func (s *Server) backendOnly(channel string) error {
	if s.pusher == nil || channel == "" || s.admit.Authenticates() || !s.pusher.Owns(channel) {
		return nil
	}
	return fmt.Errorf("channel %.140q is a Pusher app's: publish through its HTTP API (or give clients tokens, -auth-secret)", channel)
}

// Closed implements wsconn.Node: count the reason, then give the
// admission back (in that order: whoever waits for the admitted count to
// drop, Shutdown, finds the reason counted).
func (n *connNode) Closed(c *wsconn.Conn, reason CloseReason, err error) {
	s := (*Server)(n)
	s.closes[reason].Add(1)
	s.admit.Release(c.Ticket)
	if err != nil && reason != ReasonClientGone {
		s.log.Debug("connection closed", "conn", c.ID(), "reason", reason.String(), "err", err)
	}
}
