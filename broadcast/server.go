package broadcast

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/netpoll"
)

// maxHandshakeBytes bounds the HTTP upgrade request a client may send;
// beyond it the handshake fails with 400 (headers are a few hundred bytes).
const maxHandshakeBytes = 16 << 10

// Server is a WebSocket broadcast server: every message a client sends,
// and every message given to Publish, goes to every connected client.
// Create one with New; several may run in one process.
type Server struct {
	cfg    Config
	log    *slog.Logger
	poller *netpoll.Poller
	hub    *hub
	bus    Bus // nil: standalone

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu

	ipMu  sync.Mutex
	perIP map[netip.Addr]int // guarded by ipMu; only with MaxConnsPerIP

	closing     atomic.Bool
	nextID      atomic.Uint64
	conns       atomic.Int64 // open connections plus upgrades in progress past OnRequest
	handshaking atomic.Int64
	hsWG        sync.WaitGroup
	shardWG     sync.WaitGroup
	stopTicker  chan struct{}
	tickerDone  chan struct{}
	shutdown    sync.Once
	shutdownErr error

	// Counters; Stats sums them with the shards'.
	accepted   atomic.Uint64
	rejected   [numRejects]atomic.Uint64
	closes     [numReasons]atomic.Uint64
	messagesIn atomic.Uint64
	published  atomic.Uint64
	refused    atomic.Uint64
	bytesOut   atomic.Uint64
	writes     atomic.Uint64 // writev calls that wrote something
	queued     atomic.Int64  // bytes in every outbound queue

	logSlow, logProto, logRefused, logAccept *logLimiter

	bufs chan []byte         // free read buffers of ReadBufferSize
	iovs sync.Pool           // *[]unix.Iovec for flushes on workers
	cfs  map[closeKey][]byte // precompiled close frames; read-only after New
}

type closeKey struct {
	code ws.StatusCode
	text string
}

// New starts a Server's shards and poller; call Serve to accept.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		listeners:  make(map[net.Listener]struct{}),
		stopTicker: make(chan struct{}),
		tickerDone: make(chan struct{}),
		logSlow:    newLogLimiter(5, 10),
		logProto:   newLogLimiter(5, 10),
		logRefused: newLogLimiter(5, 10),
		logAccept:  newLogLimiter(1, 5),
		bufs:       make(chan []byte, 256),
		cfs:        make(map[closeKey][]byte),
	}
	s.iovs.New = func() any { v := make([]unix.Iovec, 0, 64); return &v }
	for _, k := range []closeKey{
		{ws.StatusGoingAway, "server shutting down"},
		{ws.StatusGoingAway, "idle timeout"},
		{ws.StatusPolicyViolation, "slow consumer"},
		{ws.StatusPolicyViolation, "clients may not publish"},
	} {
		s.cfs[k] = frame.Close(k.code, k.text)
	}
	p, err := netpoll.New(netpoll.Config{Workers: cfg.Workers, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("broadcast: %w", err)
	}
	s.poller = p
	s.hub = newHub(s, cfg.Backlog, cfg.Shards)
	for _, sh := range s.hub.shards {
		s.shardWG.Add(1)
		go func() {
			defer s.shardWG.Done()
			sh.run()
		}()
	}
	go s.tick()
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Other accept errors are retried with backoff, the
// way net/http does (a full file table must not stop the server).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) ||
				errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logAccept.warn(s.log, "accept failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("broadcast: accept: %w", err)
		}
		delay = 0
		if s.handshaking.Add(1) > int64(s.cfg.MaxHandshakes) {
			// A flood of clients that connect and say nothing: shed them
			// here, before they cost a goroutine each.
			s.handshaking.Add(-1)
			s.rejected[RejectBusy].Add(1)
			s.logAccept.warn(s.log, "too many handshakes in progress; closing new connection", "limit", s.cfg.MaxHandshakes)
			_ = nc.Close()
			continue
		}
		s.hsWG.Add(1)
		go s.handshake(nc)
	}
}

// Reject kinds, counted in Stats.Rejected.
type RejectKind uint8

const (
	RejectBadRequest   RejectKind = iota // 400: not a valid upgrade request
	RejectNotFound                       // 404: wrong path
	RejectVersion                        // 426: unsupported Sec-WebSocket-Version
	RejectFull                           // 503: MaxConns reached
	RejectShutdown                       // 503: shutting down
	RejectTimeout                        // handshake not done within HandshakeTimeout
	RejectIO                             // the client hung up or the socket failed
	RejectOrigin                         // 403: Origin not allowed
	RejectUnauthorized                   // 401: missing or bad token
	RejectPerIP                          // 429: MaxConnsPerIP reached
	RejectBusy                           // closed unread: MaxHandshakes in progress
	numRejects
)

var rejectNames = [numRejects]string{"bad_request", "not_found", "version", "full", "shutdown", "timeout", "io", "origin", "unauthorized", "per_ip", "handshakes_full"}

func (k RejectKind) String() string {
	if k < numRejects {
		return rejectNames[k]
	}
	return "unknown"
}

var (
	rejNotFound = ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound), ws.RejectionReason("no such path"))
	rejFull     = ws.RejectConnectionError(ws.RejectionStatus(http.StatusServiceUnavailable), ws.RejectionReason("connection limit reached"))
	rejShutdown = ws.RejectConnectionError(ws.RejectionStatus(http.StatusServiceUnavailable), ws.RejectionReason("server shutting down"))
	rejOrigin   = ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden), ws.RejectionReason("origin not allowed"))
	rejAuth     = ws.RejectConnectionError(ws.RejectionStatus(http.StatusUnauthorized), ws.RejectionReason("missing or invalid token"))
	rejPerIP    = ws.RejectConnectionError(ws.RejectionStatus(http.StatusTooManyRequests), ws.RejectionReason("too many connections from this address"))
)

// limitedConn is what the upgrader reads from: the socket, but no more
// than maxHandshakeBytes of it.
type limitedConn struct {
	net.Conn
	left int
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errHandshakeTooBig
	}
	n, err := l.Conn.Read(p[:min(len(p), l.left)])
	l.left -= n
	return n, err
}

var errHandshakeTooBig = errors.New("broadcast: handshake request too large")

// handshake runs the HTTP upgrade on its own short-lived goroutine, under
// a deadline, so a stalled client holds nothing but this goroutine.
func (s *Server) handshake(nc net.Conn) {
	defer s.hsWG.Done()
	defer s.handshaking.Add(-1)
	_ = nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var (
		reserved, sawRequest bool
		origin, host, token  string
		ip                   netip.Addr
	)
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		ip = ap.Addr().Unmap()
	}
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			sawRequest = true
			path, query, _ := bytes.Cut(uri, []byte{'?'})
			switch {
			case string(path) != s.cfg.Path:
				return rejNotFound
			case s.closing.Load():
				return rejShutdown
			}
			if s.cfg.Authenticate != nil && len(query) > 0 {
				if q, err := url.ParseQuery(string(query)); err == nil {
					token = q.Get("token")
				}
			}
			return nil
		},
		OnHost: func(h []byte) error {
			host = string(h)
			return nil
		},
		OnHeader: func(key, value []byte) error {
			switch {
			case bytes.EqualFold(key, []byte("Origin")):
				origin = string(value)
			case bytes.EqualFold(key, []byte("Authorization")) && s.cfg.Authenticate != nil && token == "":
				token = bearer(string(value))
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !originAllowed(s.cfg.Origins, origin, host) {
				return nil, rejOrigin
			}
			if s.cfg.Authenticate != nil {
				if err := s.cfg.Authenticate(token); err != nil {
					s.logRefused.warn(s.log, "upgrade: unauthorized", "remote", nc.RemoteAddr().String(), "err", err)
					return nil, rejAuth
				}
			}
			if !s.reserveIP(ip) {
				return nil, rejPerIP
			}
			if n := s.conns.Add(1); s.cfg.MaxConns > 0 && n > int64(s.cfg.MaxConns) {
				s.conns.Add(-1)
				s.releaseIP(ip)
				return nil, rejFull
			}
			reserved = true
			return nil, nil
		},
	}
	_, err := u.Upgrade(&limitedConn{Conn: nc, left: maxHandshakeBytes})
	if err != nil {
		if reserved {
			s.conns.Add(-1)
			s.releaseIP(ip)
		}
		kind := s.classifyReject(err)
		switch {
		case errors.Is(err, errHandshakeTooBig):
			rejectUnread(nc, "431 Request Header Fields Too Large")
		case errors.Is(err, ws.ErrMalformedRequest) && !sawRequest:
			// gobwas answers nothing to an unparsable request line.
			rejectUnread(nc, "400 Bad Request")
		}
		s.rejected[kind].Add(1)
		_ = nc.Close()
		return
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		s.conns.Add(-1)
		s.releaseIP(ip)
		s.rejected[RejectIO].Add(1)
		_ = nc.Close()
		return
	}
	s.register(nc, ip)
}

// rejectUnread answers a request the upgrader did not finish reading. The
// client may still be sending: half-close and drain a little (under the
// handshake deadline) so the answer is not lost to a TCP reset.
func rejectUnread(nc net.Conn, status string) {
	_, _ = io.WriteString(nc, "HTTP/1.1 "+status+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, nc, 4*maxHandshakeBytes)
}

func (s *Server) classifyReject(err error) RejectKind {
	if errors.Is(err, errHandshakeTooBig) {
		return RejectBadRequest
	}
	var rej *ws.ConnectionRejectedError
	if errors.As(err, &rej) {
		switch rej.StatusCode() {
		case http.StatusForbidden:
			return RejectOrigin
		case http.StatusUnauthorized:
			return RejectUnauthorized
		case http.StatusTooManyRequests:
			return RejectPerIP
		case http.StatusNotFound:
			return RejectNotFound
		case http.StatusUpgradeRequired:
			return RejectVersion
		case http.StatusServiceUnavailable:
			if err == rejShutdown {
				return RejectShutdown
			}
			return RejectFull
		}
		return RejectBadRequest
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return RejectTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return RejectBadRequest // incomplete, or over maxHandshakeBytes
	}
	return RejectIO
}

// register makes an upgraded socket a connection: an id, a shard, and a
// one-shot epoll watch on its raw fd. From here on no goroutine belongs
// to it while it is idle. The caller has reserved its slot in s.conns.
func (s *Server) register(nc net.Conn, ip netip.Addr) {
	fail := func(err error) {
		s.conns.Add(-1)
		s.releaseIP(ip)
		s.rejected[RejectIO].Add(1)
		s.log.Error("register", "err", err)
		_ = nc.Close()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		fail(fmt.Errorf("connection %T has no raw fd", nc))
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		fail(err)
		return
	}
	// The socket leaves the net package here: a duplicate of its fd (close
	// on exec, still non-blocking: that is a property of the socket) is
	// all the connection keeps, and the net.Conn is closed, so it is one
	// fd per connection again. Not conn.File(): that would also switch the
	// socket to blocking mode.
	fd := -1
	var dupErr error
	if err := rc.Control(func(f uintptr) {
		// A raw syscall: fcntl never blocks, and telling the scheduler
		// about it costs an OS thread in a connect storm.
		r, _, e := unix.RawSyscall(unix.SYS_FCNTL, f, unix.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			dupErr = e
			return
		}
		fd = int(r)
	}); err != nil || dupErr != nil {
		fail(errors.Join(err, dupErr))
		return
	}
	_ = nc.Close()
	id := s.nextID.Add(1)
	c := &conn{
		id:  id,
		srv: s,
		sh:  s.hub.shards[id%uint64(len(s.hub.shards))],
		fd:  fd,
	}
	c.parser.MaxMessage = s.cfg.MaxMessage
	if s.cfg.MaxConnsPerIP > 0 {
		c.ip = ip
	}
	if s.cfg.ClientRate > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(s.cfg.ClientRate), s.cfg.ClientBurst)
	}
	c.lastRead.Store(time.Now().UnixNano())
	c.watch = s.poller.Watch(fd, c.onRead, c.onWrite)
	s.accepted.Add(1)
	c.sh.add(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.watch.Start(); err != nil {
		s.log.Error("register: epoll", "conn", id, "err", err)
		c.teardownLocked(ReasonReadError, err)
		return
	}
	if s.closing.Load() {
		// Upgraded just as shutdown began: say goodbye properly.
		c.closeLocked(ws.StatusGoingAway, "server shutting down", ReasonShutdown, false)
	}
}

// reserveIP counts one more connection from ip, if MaxConnsPerIP allows.
func (s *Server) reserveIP(ip netip.Addr) bool {
	if s.cfg.MaxConnsPerIP <= 0 {
		return true
	}
	s.ipMu.Lock()
	defer s.ipMu.Unlock()
	if s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		return false
	}
	if s.perIP == nil {
		s.perIP = make(map[netip.Addr]int)
	}
	s.perIP[ip]++
	return true
}

func (s *Server) releaseIP(ip netip.Addr) {
	if s.cfg.MaxConnsPerIP <= 0 {
		return
	}
	s.ipMu.Lock()
	defer s.ipMu.Unlock()
	if s.perIP[ip] <= 1 {
		delete(s.perIP, ip)
		return
	}
	s.perIP[ip]--
}
