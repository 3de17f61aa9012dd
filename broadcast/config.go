package broadcast

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/history"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/broadcast/pusher"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// Config configures a Server. The zero value works: each field says what
// zero means.
type Config struct {
	// Path is the URL path that upgrades; other paths get 404.
	// Empty means "/ws".
	Path string
	// SSEPath is the URL path of Server-Sent Events streams, on the same
	// listener. Empty means "/sse".
	SSEPath string
	// NoSSE turns Server-Sent Events off (SSEPath gets 404). Zero: on.
	NoSSE bool
	// Pusher, if set, opens the Pusher front door: WebSocket clients at
	// /app/{key} speaking the Pusher protocol (package pusher); its HTTP
	// API is served by the admin listener (Server.PusherAPI). Nil: off.
	Pusher *pusher.Config
	// Demo serves a page at / on the same listener, to try the server
	// from a browser: a chat room on a channel, over the json format, that
	// resumes with since= (demo.html). GET and HEAD get it, other methods
	// 405; each answer is counted as RejectDemoPage. Its origin must pass
	// the Origin policy for its WebSocket to connect (the loopback default
	// does, for a page on loopback). New fails if Path, or SSEPath with
	// SSE on, is /. Zero (false): / is a wrong path, 404.
	Demo bool
	// Subprotocols are the WebSocket subprotocols accepted: of those a
	// client offers (Sec-WebSocket-Protocol), the first one listed here is
	// echoed in the 101; the server does not speak it, it only lets
	// clients that insist on one (a browser's new WebSocket(url, ["chat"]),
	// STOMP, graphql-ws) connect. Compared exactly. Empty (the zero
	// value): none, the 101 has no Sec-WebSocket-Protocol, and what a
	// client that offered one does then is its library's choice (a
	// browser fails the connection).
	Subprotocols []string
	// NoCompression turns permessage-deflate off: no offer is accepted.
	// Zero: negotiated with every client that offers it, always without
	// context takeover.
	NoCompression bool
	// CompressMinBytes: a message (or JSON envelope) under this many
	// bytes goes to deflate clients uncompressed. Zero means 256.
	CompressMinBytes int
	// SSERetry is the reconnection delay an SSE client is told (retry:)
	// when it is turned away for a while (limits, shutdown) with a 200.
	// Zero means 5s.
	SSERetry time.Duration
	// Shards is the number of connection table shards, each with one
	// goroutine writing to its connections. Zero means 16.
	Shards int
	// Workers is the read worker pool size. Zero means netpoll's default,
	// max(8, 4×GOMAXPROCS).
	Workers int
	// QueueBytes bounds, per connection, the bytes of frames waiting for
	// the socket. Zero means 1 MiB.
	QueueBytes int
	// SlowPolicy applies when a frame would grow a queue past QueueBytes.
	// Zero is SlowClose.
	SlowPolicy SlowPolicy
	// MaxMessage is the largest message a client may send, in bytes, all
	// fragments together; larger closes with 1009. Zero means 64 KiB.
	MaxMessage int
	// ReceiveOnly makes clients receivers only: a data frame from a client
	// closes it with 1008. Zero (false): every client may publish.
	ReceiveOnly bool
	// PingInterval is how often the server pings each client. Zero means
	// 30s; negative disables pings.
	PingInterval time.Duration
	// IdleTimeout closes (1001) a client from which nothing was read for
	// that long; pongs count. Zero means 75s; negative disables it.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the HTTP upgrade. Zero means 5s.
	HandshakeTimeout time.Duration
	// MaxHandshakes caps upgrades in progress (each holds a goroutine and
	// a read buffer until it finishes or times out); a connection accepted
	// beyond it is closed at once, unread, and counted. Zero means 4096.
	MaxHandshakes int
	// MaxHandshakesPerIP caps the upgrades in progress from one source (an
	// IPv4 address, or an IPv6 /64: what one host or one customer holds),
	// so that one source cannot take every MaxHandshakes slot; a
	// connection accepted beyond it is closed unread and counted. Zero
	// means 64; negative means no cap.
	MaxHandshakesPerIP int
	// HandshakeFirstByteTimeout closes, counted, a connection that sends
	// nothing for this long after it is accepted; once a byte arrives,
	// HandshakeTimeout is the only deadline. Zero means 2s; negative
	// disables it (as does a value not below HandshakeTimeout).
	HandshakeFirstByteTimeout time.Duration
	// CloseTimeout is how long a closing connection may take to accept
	// its close frame before the socket is closed anyway. Zero means 5s.
	CloseTimeout time.Duration
	// MaxConns caps concurrent connections; the next upgrade gets 503.
	// Zero means no cap (the process's file limit still applies).
	MaxConns int
	// MaxConnsPerIP caps concurrent connections from one client address;
	// the next upgrade gets 429. Zero means no cap.
	MaxConnsPerIP int
	// ProxyProtocol lists the load balancers trusted to start each
	// connection with a PROXY protocol header (v1 or v2) naming the
	// client: from them a header is required (a request without one gets
	// 400, RejectProxyMissing), and its address is the client's for every
	// per-address limit and in the logs; a LOCAL header (a balancer's own
	// health check) keeps the balancer's. From any other address a
	// connection that starts with one is closed unanswered
	// (RejectProxyUntrusted). Empty (the zero value) trusts no one.
	ProxyProtocol []netip.Prefix
	// Origins is the Origin allow-list: full origins
	// ("https://app.example.com", scheme and port compared), host names
	// ("app.example.com", any scheme and port), subdomain wildcards
	// ("*.example.com") or "*". A request without Origin (not a browser)
	// is always allowed; the Host header is never trusted (a DNS-rebinding
	// page sends Host and Origin that agree). Empty means pages served
	// from loopback only: http(s)://localhost, 127.0.0.0/8 or [::1], any
	// port. Others get 403. New fails on an entry it cannot use.
	Origins []string
	// PublicHost is the host browsers reach the server by, as a full
	// origin ("https://fanout.example.com": scheme and port compared) or
	// a host name ("fanout.example.com": any scheme and port); its pages
	// are allowed on top of Origins or the loopback default. Empty means
	// none.
	PublicHost string
	// Authenticate, if set, checks each upgrade's token: the "token" query
	// parameter, or an "Authorization: Bearer" header. An error answers
	// 401 and nothing is upgraded. The Grant's Expires, when not the zero
	// Time, is when the token stops being valid: the connection carries
	// it in its admit.Ticket, to be closed (1008) then. Its Channels, when
	// not nil, are the only channels the connection may name (403
	// otherwise), and those it gets when it names none. See
	// JWTAuthenticator. Nil means no client auth.
	Authenticate func(token string) (Grant, error)
	// MessageTimeout closes (1008, counted as message_timeout) a client
	// whose frame or fragmented message stays incomplete this long; only
	// complete frames count as liveness for IdleTimeout. Zero means 5s;
	// negative disables it.
	MessageTimeout time.Duration
	// MaxPartialBytes caps, server-wide, the read buffers connections hold
	// for incomplete frames between reads; the connection whose buffer
	// would pass it is closed (1008, counted as partial_limit). Zero means
	// 64 MiB; negative: no cap.
	MaxPartialBytes int64
	// ClientRate limits each client's messages per second, with bursts
	// of ClientBurst; a client over it is closed with 1008. Zero means no
	// limit.
	ClientRate float64
	// ClientBurst is the token bucket size for ClientRate. Zero means
	// max(1, ClientRate).
	ClientBurst int
	// ReadBufferSize is the size of the pooled buffer a read starts with.
	// Zero means 4096 bytes.
	ReadBufferSize int
	// FlushDelay is a batching window: a shard woken by a message waits
	// this long before it writes, so that messages published meanwhile go
	// to each connection in the same writev. It trades latency (up to the
	// delay) for deliveries per second. Zero (the default) writes at once.
	FlushDelay time.Duration
	// DrainSpread spreads the 1001 closes of a Shutdown over this long,
	// in a random order, so that clients do not all reconnect at once.
	// It must be shorter than the Shutdown's deadline. Zero closes every
	// client at once.
	DrainSpread time.Duration
	// Backlog is how many published messages may wait for the slowest
	// shard; a publish beyond it fails with ErrBacklog. Zero means 4096.
	Backlog int
	// MaxChannelsPerConn caps the channels one connection names; more
	// get 400. Zero means 64.
	MaxChannelsPerConn int
	// HistorySize is how many recent messages each channel keeps for
	// clients that resume (since=). Zero means 1024; negative keeps no
	// history (a resume is then recovered only if nothing was published
	// since its cursor).
	HistorySize int
	// HistoryTTL is how long a message stays in the history. Zero means
	// 5 minutes.
	HistoryTTL time.Duration
	// HistoryBytes bounds the whole history, over every channel; the
	// oldest messages go first. Zero means 64 MiB.
	HistoryBytes int64
	// ReplayBytes bounds one resume's replay (counted as the history
	// counts it, hub.Message.Size, an upper bound of the bytes sent): a
	// client that missed more gets it in parts, closed after each (4001,
	// or the SSE stream's end) to resume from its last seq. Zero means
	// 4 MiB.
	ReplayBytes int
	// IdempotencyWindow is how long a publish's Idempotency-Key is
	// remembered: a repeat within it gets the first answer and publishes
	// nothing. Zero means 5 minutes.
	IdempotencyWindow time.Duration
	// IdempotencyKeys caps the keys remembered at once; beyond it the
	// oldest is forgotten early (counted, logged). Zero means 100000.
	IdempotencyKeys int
	// Logger receives the server's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the Config a zero value stands for, every default
// filled in: the one source of defaults for flags and documentation.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = "/ws"
	}
	if c.SSEPath == "" {
		c.SSEPath = "/sse"
	}
	if c.SSERetry <= 0 {
		c.SSERetry = 5 * time.Second
	}
	if c.CompressMinBytes <= 0 {
		c.CompressMinBytes = 256
	}
	if c.ReplayBytes <= 0 {
		c.ReplayBytes = 4 << 20
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = 5 * time.Second
	}
	if c.MaxPartialBytes == 0 {
		c.MaxPartialBytes = 64 << 20
	}
	if c.Shards <= 0 {
		c.Shards = 16
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 1 << 20
	}
	if c.MaxMessage <= 0 {
		c.MaxMessage = frame.DefaultMaxMessage
	}
	if c.PingInterval == 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 75 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 4096
	}
	if c.MaxHandshakesPerIP == 0 {
		c.MaxHandshakesPerIP = 64
	}
	if c.HandshakeFirstByteTimeout == 0 {
		c.HandshakeFirstByteTimeout = 2 * time.Second
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 4096
	}
	if c.Backlog <= 0 {
		c.Backlog = 4096
	}
	if c.MaxChannelsPerConn <= 0 {
		c.MaxChannelsPerConn = 64
	}
	if c.HistorySize == 0 {
		c.HistorySize = 1024
	}
	if c.HistoryTTL <= 0 {
		c.HistoryTTL = 5 * time.Minute
	}
	if c.HistoryBytes <= 0 {
		c.HistoryBytes = 64 << 20
	}
	if c.IdempotencyWindow <= 0 {
		c.IdempotencyWindow = 5 * time.Minute
	}
	if c.IdempotencyKeys <= 0 {
		c.IdempotencyKeys = 100000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ClientRate > 0 && c.ClientBurst <= 0 {
		c.ClientBurst = max(1, int(c.ClientRate))
	}
	return c
}

// sweepEvery is how often shards look for idle, ping-due and lingering
// connections: fine enough for the shortest configured timer.
func (c Config) sweepEvery() time.Duration {
	d := time.Second
	for _, t := range []time.Duration{c.PingInterval / 2, c.IdleTimeout / 4, c.CloseTimeout / 4} {
		if t > 0 && t < d {
			d = t
		}
	}
	return max(d, 5*time.Millisecond)
}

// The parts' configurations, from a Config with its defaults filled in.

func (c Config) admitConfig() admit.Config {
	return admit.Config{MaxConns: c.MaxConns, MaxConnsPerIP: c.MaxConnsPerIP, MaxHandshakes: c.MaxHandshakes,
		MaxHandshakesPerSource: max(c.MaxHandshakesPerIP, 0), Origins: c.Origins, PublicHost: c.PublicHost,
		Authenticate: c.Authenticate}
}

func (c Config) outboundConfig() outbound.Config {
	return outbound.Config{QueueBytes: c.QueueBytes, SlowPolicy: c.SlowPolicy, CloseTimeout: c.CloseTimeout,
		ReadBufferSize: c.ReadBufferSize, Logger: c.Logger}
}

func (c Config) hubConfig(hist hub.History) hub.Config {
	return hub.Config{Shards: c.Shards, Backlog: c.Backlog, FlushDelay: c.FlushDelay,
		SweepEvery: c.sweepEvery(), PingInterval: c.PingInterval, DrainSpread: c.DrainSpread, History: hist,
		CompressMinBytes: c.CompressMinBytes, ReplayBytes: c.ReplayBytes, PusherChannel: c.pusherChannel()}
}

// pusherChannel names channels for Pusher clients: the app prefix off.
func (c Config) pusherChannel() func(string) string {
	if c.Pusher == nil || c.Pusher.Apps == nil {
		return nil
	}
	return c.Pusher.Apps.PusherName
}

// historyConfig is the history's bounds; ok false when there is none.
func (c Config) historyConfig() (cfg history.Config, ok bool) {
	return history.Config{Size: c.HistorySize, TTL: c.HistoryTTL, Bytes: c.HistoryBytes, Logger: c.Logger}, c.HistorySize > 0
}

func (c Config) wsConfig() wsconn.Config {
	return wsconn.Config{MaxMessage: c.MaxMessage, ReceiveOnly: c.ReceiveOnly, IdleTimeout: c.IdleTimeout,
		MessageTimeout: c.MessageTimeout, MaxPartialBytes: c.MaxPartialBytes,
		ClientRate: c.ClientRate, ClientBurst: c.ClientBurst, Logger: c.Logger}
}
