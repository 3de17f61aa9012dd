// Package admit decides, before a connection is upgraded, whether it may
// be: handshake slots at accept, then Origin, token, per-address and
// server-wide connection limits once the request is read. What it grants
// is a Ticket, held for the connection's life and given back exactly once
// through Release, whatever way the connection ends.
//
// It knows nothing of WebSocket framing or of the hub; the upgrade asks
// it, and maps its refusals to HTTP answers.
package admit

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Controller. The zero value admits everyone.
type Config struct {
	// MaxConns caps admitted connections. Zero means no cap.
	MaxConns int
	// MaxConnsPerIP caps admitted connections from one client source: an
	// IPv4 address, or an IPv6 /64 (what one host holds; see Source).
	// Zero means no cap.
	MaxConnsPerIP int
	// MaxHandshakes caps upgrades in progress. Zero means 4096.
	MaxHandshakes int
	// MaxHandshakesPerSource caps upgrades in progress from one source:
	// an IPv4 address, or an IPv6 /64 (one host or one customer; a
	// single machine may use any address of its /64). Zero means no cap.
	MaxHandshakesPerSource int
	// Origins is the Origin allow-list: full origins
	// ("https://app.example.com", scheme and port compared), host names
	// ("app.example.com", any scheme and port), subdomain wildcards
	// ("*.example.com") or "*". A request without Origin (not a browser)
	// is always allowed. Empty means pages served from loopback only
	// (http(s)://localhost, 127.0.0.0/8, [::1], any port). See origin.go.
	Origins []string
	// PublicHost is the host browsers reach the server by, as a full
	// origin ("https://fanout.example.com") or a host name
	// ("fanout.example.com"): its pages are allowed on top of Origins or
	// the loopback default. Empty means none.
	PublicHost string
	// Authenticate, if set, checks each request's token; an error refuses
	// it with ErrUnauthorized. The Grant says until when, and to which
	// channels. See JWTAuthenticator.
	Authenticate func(token string) (Grant, error)
}

// Grant is what a valid token allows.
type Grant struct {
	// Expires is when the token stops being valid, carried in the Ticket
	// (Ticket.Expires); the zero Time means never.
	Expires time.Time
	// Channels, when not nil, are the only channels the connection may
	// subscribe to (a request naming none gets these); nil allows any.
	Channels []string
}

// Refusals, returned by StartHandshake and Admit; the caller answers (or
// counts) each its own way.
var (
	ErrHandshakes       = errors.New("admit: too many handshakes in progress")
	ErrSourceHandshakes = errors.New("admit: too many handshakes in progress from this source")
	ErrOrigin           = errors.New("admit: origin not allowed")
	ErrUnauthorized     = errors.New("admit: missing or invalid token")
	ErrPerIP            = errors.New("admit: too many connections from this address")
	ErrChannelDenied    = errors.New("admit: token does not grant this channel")
	ErrFull             = errors.New("admit: connection limit reached")
)

// Request is what admission looks at, gathered from the upgrade request.
type Request struct {
	Origin   string     // the Origin header; "" for none
	Token    string     // the token query parameter or bearer token; "" for none
	IP       netip.Addr // the client's address
	Channels []string   // the channels asked for; none: the default one (or the grant's)
	// OwnAuth: the connection's protocol authorizes it its own way (the
	// Pusher front door signs each private subscription): no token is
	// asked for. Origin and the limits still hold.
	OwnAuth bool
}

// Ticket is an admitted connection's hold on the limits, and what its
// token said about it. The zero Ticket holds nothing.
type Ticket struct {
	ip      *ipCount // the count it is in; nil without MaxConnsPerIP
	expires int64    // unix nanoseconds; 0 for never
	held    bool
}

// ipCount is the connections admitted from one address. A Ticket points
// at it instead of holding the address: a Ticket lives in every
// connection, so its size counts.
type ipCount struct {
	addr netip.Prefix // the source: Source(ip)
	n    int          // guarded by Controller.ipMu
}

// Expires is when the connection's token stops being valid, in unix
// nanoseconds; 0 means never (no Authenticate, or a token that does not
// expire). The connection is to be closed then.
func (t Ticket) Expires() int64 { return t.expires }

// Slot is a handshake's hold on the handshake limits, from accept until
// the upgrade is done. The zero Slot holds nothing.
type Slot struct {
	src  netip.Prefix // counted in perSource; zero without a per-source cap
	held bool
}

// Controller is a server's admission. Create one with New.
type Controller struct {
	cfg     Config
	origins *originPolicy

	handshaking atomic.Int64 // upgrades in progress
	admitted    atomic.Int64 // tickets not yet released

	// ipMu guards the per-address counts. It is never held with another
	// lock.
	ipMu      sync.Mutex
	perIP     map[netip.Prefix]*ipCount // guarded by ipMu; only with MaxConnsPerIP
	perSource map[netip.Prefix]int      // guarded by ipMu; only with MaxHandshakesPerSource
}

// New returns a Controller for cfg, or an error naming an Origins entry
// or a PublicHost it cannot use (see CheckOrigins).
func New(cfg Config) (*Controller, error) {
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 4096
	}
	p, err := compileOrigins(cfg.Origins, cfg.PublicHost)
	if err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, origins: p}, nil
}

// OriginAllowed reports whether the Origin policy allows origin (a
// request without one, "", is always allowed).
func (a *Controller) OriginAllowed(origin string) bool { return a.origins.allowed(origin) }

// Authenticates reports whether requests need a token.
func (a *Controller) Authenticates() bool { return a.cfg.Authenticate != nil }

// StartHandshake takes a handshake slot for a connection just accepted
// from ip: ErrHandshakes when MaxHandshakes are in progress,
// ErrSourceHandshakes when MaxHandshakesPerSource are from ip's source
// (see Source). An invalid ip (not an IP connection) is held to
// MaxHandshakes only. A Slot taken must be given back by EndHandshake.
func (a *Controller) StartHandshake(ip netip.Addr) (Slot, error) {
	if a.handshaking.Add(1) > int64(a.cfg.MaxHandshakes) {
		a.handshaking.Add(-1)
		return Slot{}, ErrHandshakes
	}
	s := Slot{held: true}
	if a.cfg.MaxHandshakesPerSource > 0 && ip.IsValid() {
		s.src = Source(ip)
		if !a.reserveSource(s.src) {
			a.handshaking.Add(-1)
			return Slot{}, ErrSourceHandshakes
		}
	}
	return s, nil
}

// AddSource counts s, a slot StartHandshake took without an address,
// against ip's source: for a connection whose client is named only by
// what it sends first (a PROXY protocol header from a load balancer),
// once that is read. ErrSourceHandshakes when MaxHandshakesPerSource are
// from ip's source; s is unchanged then, and still to be given back. An
// invalid ip, or a slot already counted under a source, adds nothing.
func (a *Controller) AddSource(s *Slot, ip netip.Addr) error {
	if !s.held || s.src.IsValid() || a.cfg.MaxHandshakesPerSource <= 0 || !ip.IsValid() {
		return nil
	}
	src := Source(ip)
	if !a.reserveSource(src) {
		return ErrSourceHandshakes
	}
	s.src = src
	return nil
}

// EndHandshake gives back what s holds. Each Slot taken is given back
// exactly once; the zero Slot holds nothing.
func (a *Controller) EndHandshake(s Slot) {
	if !s.held {
		return
	}
	if s.src.IsValid() {
		a.releaseSource(s.src)
	}
	a.handshaking.Add(-1)
}

// Source is the unit the per-source handshake cap counts ip in: the
// address itself for IPv4 (IPv4-mapped IPv6 included), its /64 for IPv6,
// the smallest block a host is routinely given.
func Source(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p
}

// Handshaking is the number of upgrades in progress.
func (a *Controller) Handshaking() int64 { return a.handshaking.Load() }

// Admitted is the number of tickets held: open connections plus upgrades
// admitted and not yet registered.
func (a *Controller) Admitted() int64 { return a.admitted.Load() }

// Admit checks r against Origin, token (and the channels it grants) and
// limits, in that order, and on success returns the Ticket the connection
// holds from now on. A request that names no channel while its token
// grants some gets those: r.Channels is set to them. authErr is the
// authenticator's own error, for logs, when the refusal is
// ErrUnauthorized, and names the channel for ErrChannelDenied.
func (a *Controller) Admit(r *Request) (t Ticket, authErr, refusal error) {
	if !a.origins.allowed(r.Origin) {
		return Ticket{}, nil, ErrOrigin
	}
	if a.cfg.Authenticate != nil && !r.OwnAuth {
		g, err := a.cfg.Authenticate(r.Token)
		if err != nil {
			return Ticket{}, err, ErrUnauthorized
		}
		if err := grantChannels(g, r); err != nil {
			return Ticket{}, err, ErrChannelDenied
		}
		if !g.Expires.IsZero() {
			t.expires = g.Expires.UnixNano()
		}
	}
	if a.cfg.MaxConnsPerIP > 0 {
		if t.ip = a.reserveIP(r.IP); t.ip == nil {
			return Ticket{}, nil, ErrPerIP
		}
	}
	t.held = true
	if n := a.admitted.Add(1); a.cfg.MaxConns > 0 && n > int64(a.cfg.MaxConns) {
		a.Release(t)
		return Ticket{}, nil, ErrFull
	}
	return t, nil, nil
}

// Release gives back what t holds. Each admitted Ticket is released
// exactly once; releasing the zero Ticket does nothing.
func (a *Controller) Release(t Ticket) {
	if !t.held {
		return
	}
	a.admitted.Add(-1)
	if t.ip != nil {
		a.releaseIP(t.ip)
	}
}

// reserveIP counts one more connection from ip, if MaxConnsPerIP allows,
// and returns the count it is in; nil if it does not.
func (a *Controller) reserveIP(ip netip.Addr) *ipCount {
	a.ipMu.Lock()
	defer a.ipMu.Unlock()
	src := Source(ip)
	c := a.perIP[src]
	if c == nil {
		c = &ipCount{addr: src}
		if a.perIP == nil {
			a.perIP = make(map[netip.Prefix]*ipCount)
		}
		a.perIP[src] = c
	}
	if c.n >= a.cfg.MaxConnsPerIP {
		return nil
	}
	c.n++
	return c
}

func (a *Controller) reserveSource(src netip.Prefix) bool {
	a.ipMu.Lock()
	defer a.ipMu.Unlock()
	if a.perSource[src] >= a.cfg.MaxHandshakesPerSource {
		return false
	}
	if a.perSource == nil {
		a.perSource = make(map[netip.Prefix]int)
	}
	a.perSource[src]++
	return true
}

func (a *Controller) releaseSource(src netip.Prefix) {
	a.ipMu.Lock()
	defer a.ipMu.Unlock()
	if a.perSource[src] <= 1 {
		delete(a.perSource, src)
		return
	}
	a.perSource[src]--
}

func (a *Controller) releaseIP(c *ipCount) {
	a.ipMu.Lock()
	defer a.ipMu.Unlock()
	if c.n--; c.n <= 0 {
		delete(a.perIP, c.addr)
	}
}

// grantChannels checks r's channels against what g grants, and gives a
// request that names none the grant's.
func grantChannels(g Grant, r *Request) error {
	if g.Channels == nil {
		return nil
	}
	if len(r.Channels) == 0 {
		if len(g.Channels) == 0 {
			return errors.New("the token grants no channel") // not the default one either
		}
		r.Channels = g.Channels
		return nil
	}
	for _, c := range r.Channels {
		if !slices.Contains(g.Channels, c) {
			return fmt.Errorf("channel %q is not in the token's channels", c)
		}
	}
	return nil
}
