// Package bus joins fanout processes into one tier through a JetStream
// stream: every message is stored in the stream before its publisher hears
// back, and every node consumes the stream in its order, so every client
// on every node sees the same messages in the same order.
//
//   - Publish: a message is acknowledged by JetStream (it is in the
//     stream, on as many replicas as the stream has) before Publish
//     returns; its stream sequence is its seq, and the stream's identity
//     (its creation time) is the epoch. An idempotency key is the
//     message's Nats-Msg-Id: a repeat within the stream's duplicate
//     window is answered with the first one's seq and stored once.
//   - Deliver: each node reads the stream with an ordered consumer from
//     the last sequence it handed to its hub, and resumes there after any
//     disconnect, however long (within the stream's retention). It takes
//     the next message only when the hub has accepted the previous one
//     (Sink.Deliver blocks): back-pressure, never a local drop.
//
// The stream's subjects are one per channel: STREAM.d for the default
// channel, STREAM.c.NAME for the others (a '.' in a name is '%' in the
// subject: channel names never hold '%'). Each message carries its kind in
// the Fanout-Kind header.
package bus

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/internal/lograte"
)

// Config configures a JetStream bus. URL is required; each other field
// says what its zero value means.
type Config struct {
	// URL of the NATS server(s), comma-separated (nats://, tls://, ws://
	// or wss://).
	URL string
	// Stream is the JetStream stream's name, also its subjects' prefix.
	// Empty means "fanout".
	Stream string
	// Storage is the stream's: jetstream.MemoryStorage (the zero value) or
	// jetstream.FileStorage.
	Storage jetstream.StorageType
	// Replicas of the stream, in a JetStream cluster. Zero means 1.
	Replicas int
	// MaxAge, MaxBytes bound the stream's retention: the tier's history.
	// Zero means no bound of that kind (the server's own limits apply).
	MaxAge   time.Duration
	MaxBytes int64
	// MaxMessage is the largest payload the node publishes; it must fit,
	// with its headers, in the server's max_payload (Connect checks).
	// Zero means 64 KiB.
	MaxMessage int
	// Duplicates is the stream's window for idempotency keys
	// (Nats-Msg-Id). Zero means 2 minutes.
	Duplicates time.Duration
	// PublishTimeout bounds how long Publish waits for JetStream's
	// acknowledgement. Zero means 5s.
	PublishTimeout time.Duration
	// Options are added to the NATS connection's: credentials and TLS.
	Options []nats.Option
	// Name identifies this node to the NATS server. Optional.
	Name string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// HeaderOverhead is what a message's headers and subject may add to its
// payload on the wire, at most: MaxMessage plus this must fit in the NATS
// server's max_payload.
const HeaderOverhead = 1024

// Errors returned by Publish (wrapped, with what the server said).
var (
	// ErrDown: the node is not connected to NATS now.
	ErrDown = errors.New("bus: not connected to NATS")
	// ErrTooBig: the message and its headers are over the NATS server's
	// max_payload.
	ErrTooBig = errors.New("bus: message over the NATS server's max_payload")
	// ErrNoAck: JetStream did not acknowledge the message (timeout, no
	// stream, storage full): it may or may not be in the stream.
	ErrNoAck = errors.New("bus: JetStream did not acknowledge the message")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("bus: closed")
)

// Sink is the node the bus delivers to: its hub.
type Sink interface {
	// Begin is called once, before the first Deliver: the stream's next
	// message follows seq, in epoch.
	Begin(epoch string, seq uint64) error
	// Pass says the stream holds, at seq, nothing for the node (a message
	// fanout did not publish): its history stays whole across it.
	Pass(epoch string, seq uint64)
	// Deliver hands one message to the node, in stream order, and returns
	// once the node accepted it (or ctx is done). A new epoch (the stream
	// was recreated) starts over at its first seq.
	Deliver(ctx context.Context, epoch string, seq uint64, channel string, kind byte, payload []byte, x Extra) error
}

// Extra is what a message may carry besides its payload, for the Pusher
// front door: its event name, its sender's socket_id (each node leaves
// out its own sender: Exclude does not travel) and presence user.
// Headers Fanout-Event, Fanout-Socket and Fanout-User, only when set.
type Extra = hub.Meta

// Headers carrying Extra.
const (
	HeaderEvent  = "Fanout-Event"
	HeaderSocket = "Fanout-Socket"
	HeaderUser   = "Fanout-User"
)

// JetStream is a running bus connection. Its methods may be called from
// any goroutine.
type JetStream struct {
	cfg  Config
	log  *slog.Logger
	nc   *nats.Conn
	js   jetstream.JetStream
	sink Sink
	url  string // redacted, for logs
	// secrets are the passwords and tokens in the URLs: scrubbed from
	// every error that is logged or returned.
	secrets []string

	ctx        context.Context // ends with Close
	cancel     context.CancelFunc
	done       chan struct{} // consume returned
	caught     chan struct{} // closed once the stream's messages at start are delivered
	caughtOnce sync.Once

	mu          sync.Mutex
	epoch       string                  // guarded by mu: the stream's identity
	created     time.Time               // guarded by mu: the stream's creation time (its epoch)
	next        uint64                  // guarded by mu: the next stream seq to deliver
	lastStream  uint64                  // guarded by mu: the stream's last seq, as last seen
	firstStream uint64                  // guarded by mu: its first seq, as last seen
	streamMsgs  uint64                  // guarded by mu
	streamSize  uint64                  // guarded by mu
	closed      bool                    // guarded by mu
	stopRun     context.CancelCauseFunc // guarded by mu: stops the running consumer
	poke        chan struct{}           // a reconnect: read the stream now

	connected    atomic.Bool
	streamMax    atomic.Int64 // the stream's MaxMsgSize, as last read
	connErr      atomic.Value // string: why the last connection attempt failed
	started      atomic.Bool  // Start began consuming (done will close)
	published    atomic.Uint64
	failed       [numFailures]atomic.Uint64
	repeats      atomic.Uint64
	received     atomic.Uint64
	duplicates   atomic.Uint64
	gaps         atomic.Uint64
	epochs       atomic.Uint64
	reconnects   atomic.Uint64
	disconnects  atomic.Uint64
	lagMsgs      atomic.Uint64
	lagNanos     atomic.Int64
	heldNanos    atomic.Int64 // time Deliver kept the consumer waiting
	consumerErrs atomic.Uint64
	publishHist  prometheus.Histogram

	logDown, logErr, logStart *lograte.Limiter
}

// Why a publish failed, as counted.
const (
	failDown = iota
	failTooBig
	failNoAck
	numFailures
)

var failureNames = [numFailures]string{"down", "too_big", "no_ack"}

// DefaultConfig returns the Config a zero value stands for (URL aside),
// every default filled in: the one source of defaults for flags.
func DefaultConfig() Config { return Config{}.withDefaults() }

func (cfg Config) withDefaults() Config {
	if cfg.Stream == "" {
		cfg.Stream = "fanout"
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// New starts connecting to NATS, in the background: it fails only on a
// configuration the client refuses. Start joins the tier.
func New(cfg Config, sink Sink) (*JetStream, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: no NATS URL")
	}
	cfg = cfg.withDefaults()
	b := &JetStream{
		cfg: cfg, log: cfg.Logger, sink: sink, url: RedactURL(cfg.URL),
		done: make(chan struct{}), caught: make(chan struct{}), poke: make(chan struct{}, 1),
		publishHist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fanout_bus_publish_seconds", Help: "Time from publishing a message to JetStream's acknowledgement (POST /publish and other acknowledged publishes).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		logDown: lograte.New(0.2, 1), logErr: lograte.New(0.2, 3), logStart: lograte.New(0.5, 3),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	opts := append([]nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := min(250*time.Millisecond<<min(attempts, 4), 2*time.Second)
			return d/2 + rand.N(d/2+1)
		}),
		// A link that goes silent (not closed) is noticed within ~15s.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		// Publishes while disconnected fail (ErrDown): a publisher is
		// told, rather than its message waiting in a client buffer.
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(c *nats.Conn) { b.up(c, false) }),
		nats.ReconnectHandler(func(c *nats.Conn) { b.reconnects.Add(1); b.up(c, true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if b.connected.Swap(false) && b.ctx.Err() == nil {
				b.disconnects.Add(1)
				b.log.Warn("bus: disconnected from NATS; local clients stay, publishes are refused until it is back",
					"url", b.url, "err", b.scrub(err))
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			b.connErr.Store(b.scrub(err))
			b.logDown.Error(b.log, "bus: cannot reach NATS; retrying", "url", b.url, "err", b.scrub(err))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.logErr.Error(b.log, "bus: NATS error", "url", b.url, "err", b.scrub(err))
		}),
	}, cfg.Options...)
	b.secrets = urlSecrets(cfg.URL)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %s", b.url, b.scrub(err))
	}
	b.nc = nc
	if nc.IsConnected() {
		b.up(nc, false)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(10*time.Second),
		jetstream.WithPublishAsyncErrHandler(b.asyncFailed),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: %w", err)
	}
	b.js = js
	return b, nil
}

// Start joins the tier: it creates or updates the stream, checks that
// MaxMessage fits the server's max_payload, tells the sink where the
// stream starts, and starts consuming it. It retries, saying so on every
// failed attempt (rate-limited), until ctx ends; a configuration the
// server refuses (a message size that cannot fit, a stream it will not
// create) fails at once. It returns once the messages the stream held at
// start are delivered: a node's history starts where the tier's does.
// Call it once; Close whatever it returns.
func (b *JetStream) Start(ctx context.Context) error {
	info, err := b.ensureStream(ctx)
	if err != nil {
		return err
	}
	if err := b.checkPayload(); err != nil {
		return err
	}
	b.setStream(info)
	cfg := b.cfg
	b.mu.Lock()
	epoch, begin := b.epoch, info.State.FirstSeq-1
	if info.State.Msgs == 0 {
		begin = info.State.LastSeq
	}
	b.next = begin + 1
	b.mu.Unlock()
	if err := b.sink.Begin(epoch, begin); err != nil {
		return err
	}
	b.log.Info("bus: joined the tier through JetStream", "url", b.url, "stream", cfg.Stream,
		"storage", cfg.Storage.String(), "replicas", cfg.Replicas, "epoch", epoch,
		"messages", info.State.Msgs, "first_seq", info.State.FirstSeq, "last_seq", info.State.LastSeq)
	if info.State.Msgs == 0 {
		b.markCaught()
	}
	b.started.Store(true)
	go b.consume()
	go b.watch()
	select {
	case <-b.caught:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bus: catching up with the stream's %d messages: %w", info.State.Msgs, ctx.Err())
	case <-b.ctx.Done():
		return ErrClosed
	}
}

// markCaught says the node has delivered what the stream holds.
func (b *JetStream) markCaught() { b.caughtOnce.Do(func() { close(b.caught) }) }

// ensureStream creates the stream, or widens it to this node's limits
// (never narrows what other nodes rely on), retrying (and saying so) while
// NATS cannot be reached.
func (b *JetStream) ensureStream(ctx context.Context) (*jetstream.StreamInfo, error) {
	cfg := b.streamConfig()
	delay := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		var info *jetstream.StreamInfo
		err := b.nc.LastError()
		if b.nc.IsConnected() {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err = b.createOrWiden(actx, cfg)
			cancel()
			if err == nil {
				return info, nil
			}
		} else if err == nil {
			err = errors.New("not connected")
			if why, ok := b.connErr.Load().(string); ok {
				err = errors.New("not connected: " + why)
			}
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 {
			// The server answered and refused: retrying will not help.
			return nil, fmt.Errorf("bus: stream %q: %w", cfg.Name, err)
		}
		b.logStart.Error(b.log, "bus: cannot reach NATS or its JetStream stream to join the tier; retrying", "url", b.url,
			"stream", cfg.Name, "attempt", attempt, "connected", b.nc.IsConnected(), "err", b.scrub(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: %s: stream %q: %w (last error: %s)", b.url, cfg.Name, ctx.Err(), b.scrub(err))
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// createOrWiden creates the stream with cfg, or, when it exists, raises
// its limits to cfg's where they are lower (a node with a longer history
// or a larger -max-message widens it for the tier; one with smaller ones
// does not narrow it for the others) and adds the subjects it needs. What
// it cannot change (storage, replicas set by someone else) is said.
func (b *JetStream) createOrWiden(ctx context.Context, cfg jetstream.StreamConfig) (*jetstream.StreamInfo, error) {
	s, err := b.js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if s, err = b.js.CreateStream(ctx, cfg); err != nil {
			return nil, err
		}
		b.log.Warn("bus: created the stream (at start-up: a first run; later: it was gone)", "stream", cfg.Name, "storage", cfg.Storage.String(), "replicas", cfg.Replicas,
			"max_age", cfg.MaxAge, "max_bytes", cfg.MaxBytes, "max_msg_size", cfg.MaxMsgSize)
		return s.Info(ctx)
	}
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	have, want := info.Config, info.Config
	unlimited := func(v int64) bool { return v <= 0 }
	if !unlimited(int64(want.MaxAge)) && (cfg.MaxAge <= 0 || cfg.MaxAge > want.MaxAge) {
		want.MaxAge = cfg.MaxAge
	}
	if !unlimited(want.MaxBytes) && (cfg.MaxBytes <= 0 || cfg.MaxBytes > want.MaxBytes) {
		want.MaxBytes = cfg.MaxBytes
	}
	if !unlimited(int64(want.MaxMsgSize)) && cfg.MaxMsgSize > want.MaxMsgSize {
		want.MaxMsgSize = cfg.MaxMsgSize
	}
	want.Duplicates = max(want.Duplicates, cfg.Duplicates)
	if !slices.Contains(want.Subjects, cfg.Subjects[0]) {
		want.Subjects = append(slices.Clone(want.Subjects), cfg.Subjects[0])
	}
	if have.Storage != cfg.Storage || have.Replicas != cfg.Replicas {
		b.log.Warn("bus: the stream exists with another storage or replica count than this node's flags; keeping the stream's",
			"stream", cfg.Name, "storage", have.Storage.String(), "flag_storage", cfg.Storage.String(),
			"replicas", have.Replicas, "flag_replicas", cfg.Replicas)
	}
	if (cfg.MaxAge > 0 && (have.MaxAge <= 0 || have.MaxAge > cfg.MaxAge)) || (cfg.MaxBytes > 0 && (have.MaxBytes <= 0 || have.MaxBytes > cfg.MaxBytes)) {
		b.logStart.Warn(b.log, "bus: the stream keeps more than this node's history flags ask (another node widened it; fanout never narrows it: use the nats CLI to)",
			"stream", cfg.Name, "max_age", have.MaxAge, "flag_max_age", cfg.MaxAge, "max_bytes", have.MaxBytes, "flag_max_bytes", cfg.MaxBytes)
	}
	if want.MaxAge == have.MaxAge && want.MaxBytes == have.MaxBytes && want.MaxMsgSize == have.MaxMsgSize &&
		want.Duplicates == have.Duplicates && len(want.Subjects) == len(have.Subjects) {
		return info, nil
	}
	if s, err = b.js.UpdateStream(ctx, want); err != nil {
		return nil, err
	}
	b.log.Info("bus: widened the stream to this node's limits", "stream", cfg.Name,
		"max_age", want.MaxAge, "max_bytes", want.MaxBytes, "max_msg_size", want.MaxMsgSize, "duplicates", want.Duplicates)
	return s.Info(ctx)
}

func (b *JetStream) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        b.cfg.Stream,
		Description: "fanout tier: one subject per channel",
		Subjects:    []string{b.cfg.Stream + ".>"},
		Storage:     b.cfg.Storage,
		Replicas:    b.cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      b.cfg.MaxAge,
		MaxBytes:    cmp.Or(b.cfg.MaxBytes, -1),
		// No per-channel limit: the stream drops only from its front, so
		// a node that starts from the stream's first message has every
		// message after it (the node's history applies its own per-channel
		// bound).
		MaxMsgsPerSubject: -1,
		MaxMsgs:           -1,
		MaxMsgSize:        int32(b.cfg.MaxMessage + HeaderOverhead),
		Duplicates:        b.cfg.Duplicates,
	}
}

// checkPayload refuses a MaxMessage the server's max_payload cannot carry.
func (b *JetStream) checkPayload() error {
	if mp := b.nc.MaxPayload(); mp > 0 && int64(b.cfg.MaxMessage+HeaderOverhead) > mp {
		return fmt.Errorf("%w: -max-message %d plus %d bytes of headers is over the server's max_payload %d: lower -max-message to %d or raise max_payload",
			ErrTooBig, b.cfg.MaxMessage, HeaderOverhead, mp, mp-HeaderOverhead)
	}
	return nil
}

// EpochOf is the epoch a stream created at created stands for: a
// recreated stream is a new epoch.
func EpochOf(stream string, created time.Time) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d", stream, created.UnixNano()))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:8]))[:12]
}

func (b *JetStream) setStream(info *jetstream.StreamInfo) (changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastStream, b.streamMsgs, b.streamSize = info.State.LastSeq, info.State.Msgs, info.State.Bytes
	b.firstStream = info.State.FirstSeq
	b.streamMax.Store(int64(info.Config.MaxMsgSize))
	if b.epoch != "" && info.Created.Equal(b.created) {
		return false
	}
	b.created, b.epoch = info.Created, EpochOf(b.cfg.Stream, info.Created)
	return true
}

func (b *JetStream) up(nc *nats.Conn, reconnect bool) {
	if b.connected.Swap(true) {
		return
	}
	b.log.Info("bus: connected to NATS", "url", b.url, "server", nc.ConnectedUrlRedacted(), "reconnect", reconnect)
	b.check()
}

// check asks watch to read the stream's state now.
func (b *JetStream) check() {
	select {
	case b.poke <- struct{}{}:
	default:
	}
}

// Subject is the stream subject of channel.
func (b *JetStream) Subject(channel string) string {
	if channel == "" {
		return b.cfg.Stream + ".d"
	}
	return b.cfg.Stream + ".c." + strings.ReplaceAll(channel, ".", "%")
}

// channelOf is Subject's inverse; ok false for a subject that is not one.
func (b *JetStream) channelOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, b.cfg.Stream+".")
	switch {
	case !ok:
		return "", false
	case rest == "d":
		return "", true
	}
	name, ok := strings.CutPrefix(rest, "c.")
	if !ok || name == "" {
		return "", false
	}
	return strings.ReplaceAll(name, "%", "."), true
}

// HeaderKind carries a message's kind.
const HeaderKind = "Fanout-Kind"

var kindValues = [...]string{"0", "1", "2"} // hub.KindText, KindBinary, KindJSON

func (b *JetStream) msg(channel string, kind byte, payload []byte, id string, x Extra) (*nats.Msg, error) {
	if int(kind) >= len(kindValues) {
		return nil, fmt.Errorf("bus: unknown kind %d", kind)
	}
	m := nats.NewMsg(b.Subject(channel))
	m.Data = payload
	m.Header.Set(HeaderKind, kindValues[kind])
	for _, h := range [...]struct{ k, v string }{{HeaderEvent, x.Event}, {HeaderSocket, x.Socket}, {HeaderUser, x.UserID}} {
		if h.v != "" {
			m.Header.Set(h.k, h.v)
		}
	}
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	if mp := b.MaxPayload(); mp > 0 && len(payload) > mp {
		b.failed[failTooBig].Add(1)
		return nil, fmt.Errorf("%w: %d bytes; it takes %d (the server's max_payload or the stream's largest message, less %d of headers)", ErrTooBig, len(payload), mp, HeaderOverhead)
	}
	return m, nil
}

// Publish stores a message in the stream and returns once JetStream
// acknowledged it: its cursor (epoch, seq), and repeat when a message with
// the same idempotency key id was stored already, at seq, within the
// stream's duplicate window (this one was not). It fails with ErrDown,
// ErrTooBig, ErrNoAck (wrapped, with what the server said) or ErrClosed.
func (b *JetStream) Publish(ctx context.Context, channel string, kind byte, payload []byte, id string, x Extra) (epoch string, seq uint64, repeat bool, err error) {
	if err := b.usable(); err != nil {
		return "", 0, false, err
	}
	m, err := b.msg(channel, kind, payload, id, x)
	if err != nil {
		return "", 0, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(b.cfg.Stream))
	if err != nil {
		b.failed[failNoAck].Add(1)
		b.check() // the stream may be gone: see at once
		return "", 0, false, fmt.Errorf("%w: %s", ErrNoAck, b.scrub(err))
	}
	b.publishHist.Observe(time.Since(start).Seconds())
	b.mu.Lock()
	behind := ack.Sequence < b.firstStream
	b.mu.Unlock()
	if behind {
		// A seq below the first the stream held when last read: no
		// message stored in that stream since can have it, so this is a
		// new stream, whose epoch the receipt must name. (Acks of
		// concurrent publishes come back in any order: a seq below the
		// last delivered one says nothing.)
		b.checkStream()
	}
	if ack.Duplicate {
		b.repeats.Add(1)
	} else {
		b.published.Add(1)
	}
	return b.Epoch(), ack.Sequence, ack.Duplicate, nil
}

// MaxPayload is the largest payload Publish can send: the NATS server's
// max_payload, or the stream's largest message if smaller, less
// HeaderOverhead (0 before the first connection).
func (b *JetStream) MaxPayload() int {
	mp := b.nc.MaxPayload()
	if sm := b.streamMax.Load(); sm > 0 && (mp <= 0 || sm < mp) {
		mp = sm
	}
	return max(int(mp)-HeaderOverhead, 0)
}

// PublishAsync hands a message to JetStream without waiting for its
// acknowledgement (a client's message: nobody waits for an answer). It
// fails at once when the node is not connected, or when 4,096
// publishes already wait for theirs; a message JetStream then refuses is
// counted and logged.
func (b *JetStream) PublishAsync(channel string, kind byte, payload []byte, x Extra) error {
	if err := b.usable(); err != nil {
		return err
	}
	m, err := b.msg(channel, kind, payload, "", x)
	if err != nil {
		return err
	}
	// The payload belongs to the caller's read buffer: copy it.
	m.Data = append([]byte(nil), payload...)
	if _, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(20*time.Millisecond)); err != nil {
		b.failed[failNoAck].Add(1)
		return fmt.Errorf("%w: %s", ErrNoAck, b.scrub(err))
	}
	b.published.Add(1)
	return nil
}

func (b *JetStream) asyncFailed(_ jetstream.JetStream, m *nats.Msg, err error) {
	b.published.Add(^uint64(0))
	b.failed[failNoAck].Add(1)
	b.logErr.Error(b.log, "bus: a client message was not stored in the stream (counted in fanout_bus_publish_failures_total)",
		"subject", m.Subject, "err", b.scrub(err))
}

func (b *JetStream) usable() error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !b.connected.Load() {
		b.failed[failDown].Add(1)
		return fmt.Errorf("%w (%s)", ErrDown, b.url)
	}
	return nil
}

// consume delivers the stream, in order, from b.next, for as long as the
// bus runs: the ordered consumer is recreated from where it stopped after
// any error, and a recreated stream (a new epoch) is followed from its
// first message.
func (b *JetStream) consume() {
	defer close(b.done)
	delay := 100 * time.Millisecond
	for b.ctx.Err() == nil {
		err := b.consumeOnce()
		if b.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNewEpoch) {
			delay = 100 * time.Millisecond
			continue
		}
		b.consumerErrs.Add(1)
		b.logErr.Warn(b.log, "bus: stream consumer stopped; resuming from the last message delivered",
			"url", b.url, "next_seq", b.nextSeq(), "err", err)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
		b.checkStream()
	}
}

var errNewEpoch = errors.New("bus: the stream was recreated")

func (b *JetStream) nextSeq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next
}

// watch reads the stream's state every few seconds, and at once after a
// reconnect, for the metrics and to notice a recreated stream.
func (b *JetStream) watch() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		case <-b.poke:
		}
		if b.connected.Load() {
			_ = b.checkStream() // tried again at the next tick
		}
	}
}

// checkStream reads the stream's state; a stream recreated under the
// same name, or gone (then created again), is a new epoch, followed from
// its first message: the running consumer is stopped.
func (b *JetStream) checkStream() error {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	// A stream that is gone (a NATS server without its storage) is
	// created again, or widened if another node was first: never narrowed
	// to this node's flags.
	info, err := b.createOrWiden(ctx, b.streamConfig())
	if err != nil {
		return err
	}
	if !b.setStream(info) {
		return nil
	}
	b.epochs.Add(1)
	b.mu.Lock()
	b.next = max(info.State.FirstSeq, 1)
	epoch, stop := b.epoch, b.stopRun
	b.mu.Unlock()
	b.log.Error("bus: the stream was recreated: a new epoch; clients resuming from the old one are not recovered",
		"stream", b.cfg.Stream, "epoch", epoch, "first_seq", info.State.FirstSeq)
	if stop != nil {
		stop(errNewEpoch)
	}
	return nil
}

func (b *JetStream) consumeOnce() error {
	ctx, stopRun := context.WithCancelCause(b.ctx)
	defer stopRun(nil)
	b.mu.Lock()
	start, epoch := b.next, b.epoch
	b.stopRun = stopRun
	b.mu.Unlock()
	cons, err := b.js.OrderedConsumer(ctx, b.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return err
	}
	// Before the first pull: what it counts as pending is then all that
	// follows start.
	if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 {
		b.markCaught() // nothing after start: caught up already
	}
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(512, 8<<20))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err != nil {
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := meta.Sequence.Stream
		if meta.Sequence.Consumer == 1 {
			// A new server-side consumer (this run's first, or the
			// library's own after a reset): it may be on a new stream of
			// the same name, whose seqs start over. Look before
			// delivering anything under the old epoch; if the stream
			// cannot be read now, start over rather than guess.
			if err := b.checkStream(); err != nil {
				return err
			}
		}
		b.mu.Lock()
		next, current := b.next, b.epoch
		b.mu.Unlock()
		switch {
		case current != epoch:
			return errNewEpoch
		case seq < next:
			b.duplicates.Add(1)
			continue
		case seq > next:
			// The stream dropped them (retention) before this node read
			// them: lost for this node, said loudly.
			b.gaps.Add(seq - next)
			b.logErr.Error(b.log, "bus: messages left the stream (retention, or deleted) before this node read them; its clients miss them",
				"from_seq", next, "to_seq", seq-1, "missing", seq-next)
		}
		channel, ok := b.channelOf(m.Subject())
		kind := kindOf(m.Headers().Get(HeaderKind))
		if !ok || kind < 0 {
			b.logErr.Warn(b.log, "bus: a message in the stream that fanout did not publish; not delivered", "subject", m.Subject(), "seq", seq)
			b.sink.Pass(epoch, seq)
		} else {
			held := time.Now()
			h := m.Headers()
			x := Extra{Event: h.Get(HeaderEvent), Socket: h.Get(HeaderSocket), UserID: h.Get(HeaderUser)}
			if err := b.sink.Deliver(ctx, epoch, seq, channel, byte(kind), m.Data(), x); err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				b.logErr.Error(b.log, "bus: the node refused a message from the stream", "seq", seq, "err", err)
			}
			b.heldNanos.Add(int64(time.Since(held)))
			b.received.Add(1)
		}
		b.mu.Lock()
		if b.epoch == epoch {
			b.next = seq + 1
		}
		b.mu.Unlock()
		b.lagMsgs.Store(meta.NumPending)
		if meta.NumPending == 0 {
			b.lagNanos.Store(0)
		} else {
			b.lagNanos.Store(int64(time.Since(meta.Timestamp)))
		}
		if meta.NumPending == 0 {
			b.markCaught()
		}
	}
}

func kindOf(v string) int {
	for i, s := range kindValues {
		if v == s {
			return i
		}
	}
	return -1
}

// Connected reports whether the node is connected to NATS now.
func (b *JetStream) Connected() bool { return b.connected.Load() }

// Epoch is the stream's identity: the epoch of every seq it gives.
func (b *JetStream) Epoch() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.epoch
}

// Close stops consuming, waits for pending publishes' acknowledgements
// (briefly) and leaves NATS.
func (b *JetStream) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	select {
	case <-b.js.PublishAsyncComplete():
	case <-time.After(2 * time.Second):
	}
	b.nc.Close()
	if b.started.Load() {
		<-b.done
	}
	return nil
}

// urlSecrets returns the passwords and tokens in a NATS URL list, however
// the URLs parse.
func urlSecrets(urls string) []string {
	var out []string
	for _, p := range strings.Split(urls, ",") {
		p = strings.TrimSpace(p)
		if _, rest, ok := strings.Cut(p, "://"); ok {
			p = rest
		}
		at := strings.LastIndex(p, "@")
		if at < 0 {
			continue
		}
		user, pass, ok := strings.Cut(p[:at], ":")
		secret := user // a token
		if ok {
			secret = pass
		}
		if secret != "" {
			out = append(out, secret)
			if u, err := url.PathUnescape(secret); err == nil && u != secret {
				out = append(out, u)
			}
		}
	}
	return out
}

// scrub is err's text with every secret of the URLs replaced.
func (b *JetStream) scrub(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	for _, secret := range b.secrets {
		s = strings.ReplaceAll(s, secret, "redacted")
	}
	return s
}

// RedactURL hides the secrets of a NATS URL list: passwords and tokens.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			if strings.Contains(p, "@") {
				parts[i] = "[redacted]@" + p[strings.LastIndex(p, "@")+1:]
			}
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "redacted")
		} else {
			u.User = url.User("redacted") // a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
