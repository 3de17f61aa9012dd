// Package bench is fanout-bench as a library: it holds many WebSocket
// client connections cheaply (watched by the project's netpoll package, not
// a goroutine each), publishes timestamped, sequenced messages, and reports
// connect rates, deliveries, loss, duplicates, reordering and latency
// percentiles. It works against any RFC 6455 broadcast server whose
// clients receive every message, the sender's own included; against
// fanout, on one channel (Config.Channel), part of the receivers spread
// over many channels with a publisher each (Config.Channels) or, in the
// rooms scenario, on a channel per client, with receivers that are WebSocket clients (raw or
// json format, permessage-deflate or not) or Server-Sent Events streams
// (Config.Transport).
package bench

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Scenario names.
const (
	ScenarioConnect = "connect"
	ScenarioFanout  = "fanout"
	ScenarioChurn   = "churn"
	ScenarioSlow    = "slow"
	ScenarioRooms   = "rooms"
)

// Config is one run's parameters. Zero values get the defaults named in
// each comment (see WithDefaults).
type Config struct {
	Scenario string `json:"scenario"`
	// URL of the server's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
	// A comma-separated list spreads connections over several servers
	// (a tier), round robin.
	URL  string   `json:"url"`
	urls []string // URL split

	// CAFile is a PEM file of the certificates a wss:// (or https://)
	// server's chain must end in; empty means the system's roots.
	CAFile string `json:"ca_file,omitempty"`
	// Insecure accepts any certificate from a wss:// (or https://)
	// server, unchecked. Off: certificates are checked.
	Insecure bool        `json:"insecure,omitempty"`
	tls      *tls.Config // from CAFile and Insecure (fillTLS); nil: Go's defaults

	// Conns is the number of receiving connections (all processes).
	Conns int `json:"conns"`
	// ConnsPerProc caps the connections one process holds; more spread
	// over child processes. Zero means 15,000.
	ConnsPerProc int `json:"conns_per_proc"`
	// SourceIPs are the local addresses client sockets bind to, round
	// robin; empty lets the kernel choose.
	SourceIPs []net.IP `json:"source_ips,omitempty"`
	// ConnectRate is new connections per second over all processes; zero
	// means as fast as ConnectWorkers allow.
	ConnectRate float64 `json:"connect_rate"`
	// ConnectWorkers is concurrent handshakes per process. Zero means 64.
	ConnectWorkers int `json:"connect_workers"`
	// ConnectRetries is attempts after the first failure. Zero means 2.
	ConnectRetries int `json:"connect_retries"`
	// ConnectTimeout bounds one dial + handshake. Zero means 10s.
	ConnectTimeout time.Duration `json:"connect_timeout_ns"`
	// Hold is how long the connect scenario holds its connections.
	Hold time.Duration `json:"hold_ns"`
	// Channel puts the receivers and the publishers on this fanout
	// channel: their URLs get ?channel=Channel, and so does PublishURL.
	// Empty: the default channel, the URLs as given.
	Channel string `json:"channel,omitempty"`

	// Channels, if positive, spreads the last ChannelShare of the
	// receivers (scenario fanout) over that many channels of their own,
	// ChannelPrefix+k, each with a publisher of its own publishing
	// ChannelRate messages per second there (see spread.go); the other
	// receivers stay on Channel with the Publishers. Zero: every receiver
	// on Channel.
	Channels int `json:"channels,omitempty"`
	// ChannelShare is the fraction of the receivers spread over the
	// Channels, 0 < f ≤ 1. Zero means 0.5.
	ChannelShare float64 `json:"channel_share,omitempty"`
	// ChannelPrefix names the spread channels. Empty means "ch-".
	ChannelPrefix string `json:"channel_prefix,omitempty"`
	// ChannelRate is the messages per second each spread channel's
	// publisher publishes. Zero means Rate/Publishers, each as busy as
	// one of Channel's publishers (at Rate 0, closed loop like them).
	ChannelRate float64 `json:"channel_rate,omitempty"`

	// How receivers receive (see transport.go); publishers always write
	// plain raw-format WebSocket frames (or POST).
	//
	// Transport is TransportWS (the default, for "") or TransportSSE:
	// GET SSEPath on URL's host, the messages as Server-Sent Events.
	Transport string `json:"transport,omitempty"`
	// SSEPath is the SSE streams' path on URL's host (the URL's path
	// replaced, its query kept). Empty means "/sse".
	SSEPath string `json:"sse_path,omitempty"`
	// Format is the WebSocket receivers' format: FormatRaw (the default,
	// for ""), the payload as published, or FormatJSON (?format=json),
	// each message in its JSON envelope. SSE streams are always JSON.
	Format string `json:"format,omitempty"`
	// Compression has WebSocket receivers offer permessage-deflate
	// (without context takeover, both ways). Off: no offer.
	Compression bool `json:"compression,omitempty"`
	// Payload is what a message holds: PayloadBinary (the default, for
	// "", but with the Pusher protocol), the bench header and padding,
	// PayloadText (the default with the Pusher protocol), the header in
	// hex and padding, or PayloadJSON, a JSON object of Size bytes that
	// carries the header (see jsonFiller).
	Payload string `json:"payload,omitempty"`

	// Protocol is what receivers and publishers speak (see pusher.go):
	// ProtocolNative (the default, for ""), the server's own, or
	// ProtocolPusher, Pusher Channels protocol 7: receivers dial
	// /app/PusherKey on URL's host and subscribe to their channel (Channel,
	// or their spread channel), publishers trigger events through the
	// Pusher HTTP API on PublishURL's server.
	Protocol string `json:"protocol,omitempty"`
	// PusherKey is the Pusher app's key (public: every client's URL
	// holds it).
	PusherKey string `json:"pusher_key,omitempty"`
	// PusherAppID is the app's id, in the HTTP API's paths.
	PusherAppID string `json:"pusher_app_id,omitempty"`
	// PusherSecret signs the HTTP API requests. Never stored in results
	// (nor passed to child processes, which do not publish).
	PusherSecret string `json:"-"`
	// PusherEvent names the events publishers trigger. Empty means
	// "bench".
	PusherEvent string `json:"pusher_event,omitempty"`

	// Publishers is the number of publishing connections. Zero means 1.
	Publishers int `json:"publishers"`
	// Size is each message's size in bytes, at least 20 (60 with
	// PayloadJSON). Zero means 64.
	Size int `json:"size"`
	// Rate is messages per second over all publishers; zero means
	// closed loop ("max"): each publisher keeps Window messages in flight.
	Rate float64 `json:"rate"`
	// Window is the in-flight messages per publisher at Rate 0. Zero: 16.
	Window int `json:"window"`
	// Duration is how long publishers publish. Zero means 10s.
	Duration time.Duration `json:"duration_ns"`
	// Messages, if positive, stops each publisher after that many.
	Messages int `json:"messages"`
	// Drain is how long to wait after publishing for deliveries still on
	// the way. Zero means 5s.
	Drain time.Duration `json:"drain_ns"`

	// PublishURL, if set, makes the publishers POST their messages to this
	// http(s) URL (fanout's POST /publish: keep-alive, one connection per
	// publisher) instead of writing them as WebSocket frames. Each
	// publisher still holds its WebSocket connection and reads its own
	// messages back on it, so the closed loop, the number of subscribers
	// and every receiver-side figure are those of client publishing. A
	// comma-separated list spreads the publishers over several (a tier's
	// nodes), round robin. Empty: publishers write frames.
	PublishURL  string   `json:"publish_url,omitempty"`
	publishURLs []string // PublishURL split
	// PublishKey is the bearer key sent with every POST. Never stored in
	// results (nor passed to child processes, which do not publish).
	PublishKey string `json:"-"`
	// IdempotencyKeys has every POST carry an Idempotency-Key header of
	// its own (the run, the publisher, the message's sequence): a message
	// sent again after a refusal (503) that the server had stored anyway
	// (an acknowledgement lost as its log went away) is then stored once.
	// One message per POST only. Off: no key.
	IdempotencyKeys bool `json:"idempotency_keys,omitempty"`
	// PublishBatch is the most messages one POST carries. 1 (the default,
	// for zero) sends each message alone as application/octet-stream; more
	// sends application/x-ndjson, one text message per line (the bench's
	// header then in text, see putTextPayload, and Size at least
	// textPayloadHeader): as many as are due at a fixed Rate, or as the
	// window has room for at Rate 0.
	PublishBatch int `json:"publish_batch,omitempty"`

	// SlowFraction of receivers never read (scenario slow). Zero: 0.1.
	SlowFraction float64 `json:"slow_fraction"`
	// ChurnRate is receivers replaced per second (scenario churn).
	// Zero means 5% of Conns per second.
	ChurnRate float64 `json:"churn_rate"`

	// RoomPrefix names the rooms (scenario rooms): client i is alone on
	// channel RoomPrefix+i, i from 0 to Conns-1. Empty means "room-".
	RoomPrefix string `json:"room_prefix,omitempty"`
	// RatePerClient is the messages per second each client publishes to
	// its own room (scenario rooms, where every client is a publisher and
	// Publishers, Rate and Window do not apply): a fixed rate, no closed
	// loop. Zero means 1.
	RatePerClient float64 `json:"rate_per_client,omitempty"`

	// ServerPIDs, if set, are sampled from /proc (RSS, fds, threads,
	// CPU), and added up: a tier's cost.
	ServerPIDs []int `json:"server_pids,omitempty"`
	// MetricsURL, if set, is scraped (Prometheus text) for the same.
	MetricsURL string `json:"metrics_url,omitempty"`
	// Workers is the netpoll worker pool size per process (0: default).
	Workers int `json:"workers"`
}

// WithDefaults fills zero fields and checks the rest.
func (c Config) WithDefaults() (Config, error) {
	for _, phase := range []func(*Config) error{(*Config).checkTargets, (*Config).fillCounts, (*Config).fillChannels, (*Config).fillPusher, (*Config).fillTransport, (*Config).fillTLS, (*Config).fillMessages, (*Config).fillRooms, (*Config).fillSpread} {
		if err := phase(&c); err != nil {
			return c, err
		}
	}
	return c, nil
}

// checkTargets checks the scenario and the URLs the run connects to.
func (c *Config) checkTargets() error {
	if c.Scenario == "" {
		c.Scenario = ScenarioFanout
	}
	switch c.Scenario {
	case ScenarioConnect, ScenarioFanout, ScenarioChurn, ScenarioSlow, ScenarioRooms:
	default:
		return fmt.Errorf("unknown scenario %q (connect, fanout, churn, slow, rooms)", c.Scenario)
	}
	c.urls = nil
	for _, one := range strings.Split(c.URL, ",") {
		one = strings.TrimSpace(one)
		u, err := url.Parse(one)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("url %q: want ws://host:port/path", one)
		}
		c.urls = append(c.urls, one)
	}
	for _, pid := range c.ServerPIDs {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
			return fmt.Errorf("server pid %d: no such process", pid)
		}
	}
	c.publishURLs = nil
	if c.PublishURL == "" {
		return nil
	}
	for _, one := range strings.Split(c.PublishURL, ",") {
		one = strings.TrimSpace(one)
		u, err := url.Parse(one)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("publish url %q: want http://host:port/publish", one)
		}
		c.publishURLs = append(c.publishURLs, one)
	}
	return nil
}

// fillCounts checks and defaults how many connections, how they connect,
// and the publishers.
func (c *Config) fillCounts() error {
	if c.Conns < 0 || c.Publishers < 0 || c.Size < 0 || c.Rate < 0 || c.Window < 0 || c.Messages < 0 || c.PublishBatch < 0 {
		return fmt.Errorf("conns, publishers, size, rate, window, messages and publish batch must not be negative")
	}
	if c.Conns == 0 {
		c.Conns = 1000
	}
	if c.ConnsPerProc <= 0 {
		c.ConnsPerProc = 15000
	}
	if c.ConnectWorkers <= 0 {
		c.ConnectWorkers = 64
	}
	if c.ConnectRetries == 0 {
		c.ConnectRetries = 2
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.Publishers == 0 && c.Scenario != ScenarioRooms { // rooms: the clients publish (fillRooms)
		c.Publishers = 1
	}
	if c.Publishers > math.MaxUint16 {
		return fmt.Errorf("at most %d publishers", math.MaxUint16)
	}
	if c.ChurnRate == 0 {
		c.ChurnRate = math.Max(1, float64(c.Conns)/20)
	}
	return nil
}

// fillMessages checks and defaults what is published, how fast and for
// how long.
func (c *Config) fillMessages() error {
	if c.PublishBatch == 0 {
		c.PublishBatch = 1
	}
	if c.PublishBatch > 1 && c.PublishURL == "" {
		return fmt.Errorf("publish batch %d: only with a publish url (client publishers write every message as its own frame)", c.PublishBatch)
	}
	switch {
	case c.IdempotencyKeys && c.PublishURL == "":
		return fmt.Errorf("idempotency keys: only with a publish url (a client's frame has no key)")
	case c.IdempotencyKeys && c.PublishBatch > 1:
		return fmt.Errorf("idempotency keys: one message per request only (a key names one message, not a batch)")
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Size < payloadHeader {
		return fmt.Errorf("size %d: at least %d bytes (the bench header)", c.Size, payloadHeader)
	}
	if c.textPayload() && c.Size < textPayloadHeader {
		return fmt.Errorf("size %d: at least %d bytes with a publish batch (the bench header as text)", c.Size, textPayloadHeader)
	}
	if c.Payload == PayloadJSON && c.Size < jsonPayloadMin {
		return fmt.Errorf("size %d: at least %d bytes with the json payload (its header)", c.Size, jsonPayloadMin)
	}
	if c.Payload == PayloadText && c.Size < plainTextHeader {
		return fmt.Errorf("size %d: at least %d bytes with the text payload (the bench header as text)", c.Size, plainTextHeader)
	}
	if c.Window == 0 {
		c.Window = 16
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.SlowFraction == 0 {
		c.SlowFraction = 0.1
	}
	if c.SlowFraction < 0 || c.SlowFraction >= 1 {
		return fmt.Errorf("slow fraction %v: want 0 < f < 1", c.SlowFraction)
	}
	return nil
}

// textPayload reports whether publishers send binary payloads as text
// messages (the bench header as text): only in batches, which are lines
// of text. A JSON payload is a line as it is.
func (c Config) textPayload() bool {
	return c.PublishURL != "" && c.PublishBatch > 1 && c.Payload != PayloadJSON
}

// urlFor is the URL the idx-th connection dials: its server, and
// channel ("": the default one) in the query.
func (c Config) urlFor(idx int, channel string) string {
	u := c.URL
	if len(c.urls) > 0 {
		u = c.urls[idx%len(c.urls)]
	}
	return withChannel(u, channel)
}

// publishURLFor is the publish API URL the idx-th publisher posts to: its
// server's (PublishURL spread round robin), on channel ("": the default
// one).
func (c Config) publishURLFor(idx int, channel string) string {
	u := c.PublishURL
	if len(c.publishURLs) > 0 {
		u = c.publishURLs[idx%len(c.publishURLs)]
	}
	if c.Protocol == ProtocolPusher {
		return c.pusherEventsURL(u) // the channel is in the body
	}
	return withChannel(u, channel)
}

// procs is how many receiving processes the run needs.
func (c Config) procs() int {
	return (c.Conns + c.ConnsPerProc - 1) / c.ConnsPerProc
}

// ParseIPs parses "127.0.0.2-127.0.0.40", "127.0.0.0/24" or a comma list
// of those into addresses (at most 65,536).
func ParseIPs(s string) ([]net.IP, error) {
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			continue
		case strings.Contains(part, "/"):
			ip, n, err := net.ParseCIDR(part)
			if err != nil {
				return nil, err
			}
			ip4 := ip.Mask(n.Mask).To4()
			if ip4 == nil {
				return nil, fmt.Errorf("%q: IPv4 only", part)
			}
			ones, bits := n.Mask.Size()
			if bits-ones > 16 {
				return nil, fmt.Errorf("%q: too large (at most /16)", part)
			}
			base := binary.BigEndian.Uint32(ip4)
			for i := uint32(0); i < 1<<(bits-ones); i++ {
				out = append(out, ipv4(base+i))
			}
		case strings.Contains(part, "-"):
			lo, hi, _ := strings.Cut(part, "-")
			a, b := net.ParseIP(strings.TrimSpace(lo)).To4(), net.ParseIP(strings.TrimSpace(hi)).To4()
			if a == nil || b == nil {
				return nil, fmt.Errorf("%q: want IPv4 first-last", part)
			}
			x, y := binary.BigEndian.Uint32(a), binary.BigEndian.Uint32(b)
			if y < x || y-x >= 1<<16 {
				return nil, fmt.Errorf("%q: empty or too large range", part)
			}
			for i := x; i <= y; i++ {
				out = append(out, ipv4(i))
			}
		default:
			ip := net.ParseIP(part)
			if ip == nil {
				return nil, fmt.Errorf("%q: not an IP address", part)
			}
			out = append(out, ip)
		}
	}
	if len(out) > 1<<16 {
		return nil, fmt.Errorf("%d addresses: at most 65536", len(out))
	}
	return out, nil
}

func ipv4(v uint32) net.IP {
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
