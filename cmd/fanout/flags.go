package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/bus"
	"github.com/nats-io/nats.go"
)

// options is the command line, environment and secret files turned into
// what run needs: parseFlags fills it in phases (defaults, defineFlags,
// applyEnv, readSecrets, validate, configure).
type options struct {
	addr, adminAddr string
	adminMaxConns   int
	shutdownTimeout time.Duration
	drainDelay      time.Duration // -drain-delay: serve on after SIGTERM, not ready
	logLevel        string
	logFormat       string
	gcPercent       int        // debug.SetGCPercent, unless GOGC is set
	level           slog.Level // logLevel, parsed by validate
	pprof           bool       // deprecated -pprof: pprofAddr = defaultPprofAddr
	pprofAddr       string     // -pprof-addr; empty: no pprof
	publishKeys     []string
	authSecret      string
	authAudience    string // -auth-audience: aud must name it, when set
	authIssuer      string // -auth-issuer: iss must be it, when set
	nats            string
	natsStream      string
	natsStorage     string
	natsReplicas    int
	natsCreds       string
	natsNkey        string
	natsUser        string
	natsPassword    string
	natsTLSCA       string
	natsTLSCert     string
	natsTLSKey      string
	natsTimeout     time.Duration
	natsOptions     []nats.Option // built by validateNATS
	clientPublish   bool
	sse             bool
	demo            autoBool // -demo; unset: decided by validateChoices from -addr
	compression     string   // -compression: on or off
	slowPolicy      string
	batch           api.BatchConfig
	cfg             broadcast.Config
	pusher          pusherOptions // the Pusher front door (pusher.go)

	version bool // -version: print the build and exit

	// As given, before readSecrets and configure split and read them.
	origins, subprotocols, keys, keysFile, secretFile string
	// -proxy-protocol as given; validateChoices parses it.
	proxyProtocol string

	// given names, for each flag set on the command line or present in
	// the environment (empty or not), where: "-flag" or "FANOUT_FLAG".
	given map[string]string
	// warnings are logged once the logger exists (run).
	warnings []string
}

// defaults returns the options before any flag: the server's from
// broadcast.DefaultConfig, so that -help, the README and the server's
// own zero values cannot drift apart, and the command's own.
func defaults() *options {
	cfg := broadcast.DefaultConfig()
	bc := bus.DefaultConfig()
	return &options{
		addr:            "127.0.0.1:8080",
		adminAddr:       "127.0.0.1:8081",
		adminMaxConns:   api.DefaultHTTPConfig().MaxConns,
		shutdownTimeout: 10 * time.Second,
		drainDelay:      5 * time.Second,
		logLevel:        "info",
		logFormat:       "text",
		gcPercent:       50,
		natsStream:      bc.Stream,
		natsStorage:     "file",
		natsReplicas:    bc.Replicas,
		natsTimeout:     bc.PublishTimeout,
		clientPublish:   !cfg.ReceiveOnly,
		sse:             !cfg.NoSSE,
		demo:            autoBool{v: true}, // what -addr's default, a loopback one, gives
		compression:     onOff(!cfg.NoCompression),
		slowPolicy:      cfg.SlowPolicy.String(),
		batch:           api.DefaultBatchConfig(),
		cfg:             cfg,
		pusher:          pusherDefaults(),
	}
}

// parseFlags reads args, then the environment (environ, os.Environ's
// NAME=value lines) for flags args did not set, then the files flags
// name, and checks the result. Every error is one line naming what the
// user set, the flag or the variable as given; -h and -help print the
// usage (and return flag.ErrHelp), nothing else does.
func parseFlags(args []string, environ []string, stderr io.Writer) (*options, error) {
	o := defaults()
	fs := defineFlags(o)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		usage(fs, stderr)
		return nil, err
	} else if err != nil {
		return nil, explainParse(fs, err)
	}
	if o.version {
		return o, nil
	}
	o.given = map[string]string{}
	fs.Visit(func(f *flag.Flag) { o.given[f.Name] = "-" + f.Name })
	if err := applyEnv(fs, lookupIn(environ), o.given); err != nil {
		return nil, err
	}
	o.warnings = append(o.warnings, unknownEnv(fs, environ)...)
	if fs.NArg() > 0 {
		return nil, strayArgument(fs, args)
	}
	if err := readSecrets(o); err != nil {
		return nil, err
	}
	if err := validate(o); err != nil {
		return nil, err
	}
	configure(o)
	return o, nil
}

// usage is -help's text: what fanout is, the environment, every flag.
func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: fanout [flags]\n\nA WebSocket broadcast server: every message reaches every client.\n"+
		"Every flag may also be set as FANOUT_<FLAG> in the environment (FANOUT_MAX_CONNS=1000);\n"+
		"the command line wins.\n\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// src is how the user set the flag name: "-name" or "FANOUT_NAME", for
// errors to name what was given ("-name" when it was left at its default).
func (o *options) src(name string) string {
	if by := o.given[name]; by != "" {
		return by
	}
	return "-" + name
}

// defineFlags declares every flag on a new set, each defaulting to the
// value o already holds (see defaults) and writing into o.
func defineFlags(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	// Parse writes nothing: parseFlags says what went wrong in one line,
	// and prints the usage for -help only.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c := &o.cfg
	fs.StringVar(&o.addr, "addr", o.addr, "WebSocket listen `address` (host:port; port 0 picks one and logs it)")
	fs.StringVar(&o.adminAddr, "admin-addr", o.adminAddr, "admin HTTP listen `address` (/healthz, /readyz, /metrics); empty disables it")
	fs.IntVar(&o.adminMaxConns, "admin-max-conns", o.adminMaxConns, "admin connections open at once (`n`); at the cap the one idle longest is closed for the next client, else new ones wait unaccepted")
	fs.StringVar(&c.Path, "path", c.Path, "URL `path` that upgrades to WebSocket; others get 404")
	fs.StringVar(&c.SSEPath, "sse-path", c.SSEPath, "URL `path` of Server-Sent Events streams, on the WebSocket listener")
	fs.BoolVar(&o.sse, "sse", o.sse, "serve Server-Sent Events at -sse-path; false answers 404 there")
	fs.Var(&o.demo, "demo", "serve a demo page at / (a chat room on a channel: messages live with their seq, resume after a reconnect); unset, it is on only when -addr is a loopback address (127.0.0.0/8, ::1, localhost); false answers 404 there")
	fs.DurationVar(&c.SSERetry, "sse-retry", c.SSERetry, "reconnection delay (`duration`) told to an SSE client turned away for a while (limits, shutdown) with a 200 and retry:")
	fs.StringVar(&o.subprotocols, "subprotocols", o.subprotocols, "WebSocket `subprotocols` accepted, comma-separated (chat,v1.stomp): the first a client offers that is listed is echoed in the 101; empty accepts none (no Sec-WebSocket-Protocol, as a client offering one then decides)")
	fs.StringVar(&o.compression, "compression", o.compression, "permessage-deflate: `on` (negotiated with clients that offer it, always without context takeover: each message compressed once for all) or off")
	fs.IntVar(&c.CompressMinBytes, "compress-min-bytes", c.CompressMinBytes, "messages under this many `bytes` go to deflate clients uncompressed")
	fs.BoolVar(&o.clientPublish, "client-publish", o.clientPublish, "clients may publish; false makes them receive-only (their data frames close with 1008)")
	fs.IntVar(&c.Workers, "workers", c.Workers, "read worker pool size (`n`); 0 means max(8, 4×GOMAXPROCS)")
	fs.IntVar(&c.Shards, "shards", c.Shards, "connection table shards (`n`), each with one writer goroutine")
	fs.IntVar(&c.QueueBytes, "queue-bytes", c.QueueBytes, "per-connection outbound queue limit in `bytes`")
	fs.StringVar(&o.slowPolicy, "slow-policy", o.slowPolicy, "`policy` when a queue is full: close (1008 \"slow consumer\") or drop (drop newest frames for that client)")
	fs.IntVar(&c.MaxMessage, "max-message", c.MaxMessage, "largest client message in `bytes` (all fragments); larger closes with 1009")
	fs.DurationVar(&c.PingInterval, "ping-interval", c.PingInterval, "server ping `interval`; negative disables pings")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "close a client silent (no data, no pong) for this `duration`; negative disables")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", c.HandshakeTimeout, "deadline for the HTTP upgrade (`duration`)")
	fs.DurationVar(&c.CloseTimeout, "close-timeout", c.CloseTimeout, "how long a closing client gets to take its close frame (`duration`)")
	fs.IntVar(&c.MaxHandshakes, "max-handshakes", c.MaxHandshakes, "upgrades in progress at once (`n`); connections beyond are closed unread")
	fs.IntVar(&c.MaxHandshakesPerIP, "max-handshakes-per-ip", c.MaxHandshakesPerIP, "upgrades in progress at once from one source (`n`; an IPv4 address or an IPv6 /64); connections beyond are closed unread; 0 means no cap")
	fs.DurationVar(&c.HandshakeFirstByteTimeout, "handshake-first-byte-timeout", c.HandshakeFirstByteTimeout, "close a new connection that sends nothing for this `duration`; negative disables (then -handshake-timeout alone applies)")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "maximum concurrent connections (`n`); more get 503; 0 means no limit")
	fs.DurationVar(&c.FlushDelay, "flush-delay", c.FlushDelay, "batching window (`duration`): wait this long after a message so the next ones share its writev; trades latency for throughput; 0 writes at once")
	fs.IntVar(&c.Backlog, "backlog", c.Backlog, "published messages that may wait for the slowest shard (`n`); more are refused")
	fs.IntVar(&c.ReadBufferSize, "read-buffer", c.ReadBufferSize, "initial read buffer per busy connection in `bytes` (idle ones hold none)")
	fs.DurationVar(&c.MessageTimeout, "message-timeout", c.MessageTimeout, "close (1008) a client whose frame or message stays incomplete this long (`duration`); only complete frames count as liveness; negative disables")
	fs.Int64Var(&c.MaxPartialBytes, "max-partial-bytes", c.MaxPartialBytes, "server-wide cap on read buffers held for incomplete frames (`bytes`); the client that would pass it is closed (1008); negative: no cap")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", o.shutdownTimeout, "on SIGTERM/SIGINT, how long to wait for clients to close (`duration`)")
	fs.DurationVar(&o.drainDelay, "drain-delay", o.drainDelay, "on SIGTERM, keep accepting and serving this `duration` with /readyz at 503 \"draining\" (for the load balancer to notice) before shutting down; SIGINT does not wait; 0 shuts down at once")
	fs.DurationVar(&c.DrainSpread, "drain-spread", c.DrainSpread, "spread the shutdown's 1001 closes over this `duration`, in a random order, so clients do not all reconnect at once; under -shutdown-timeout; 0 closes all at once")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log `level`: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log `format`: text or json")
	fs.IntVar(&o.gcPercent, "gc-percent", o.gcPercent, "Go GC target (`percent` of live heap), as GOGC; GOGC in the environment wins; 50 keeps an idle connection's RSS well under 1 KiB for little CPU; negative disables the GC")
	fs.StringVar(&o.pprofAddr, "pprof-addr", o.pprofAddr, "serve /debug/pprof/ (never cmdline) on this loopback `address` (127.0.0.1:6060, [::1]:6060, localhost:6060); empty disables")
	fs.BoolVar(&o.pprof, "pprof", o.pprof, "deprecated: -pprof-addr "+defaultPprofAddr)
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", c.MaxConnsPerIP, "maximum concurrent connections from one client source (`n`: an IPv4 address or an IPv6 /64); more get 429; 0 means no limit")
	fs.StringVar(&o.proxyProtocol, "proxy-protocol", o.proxyProtocol, "the load balancers (`CIDRs` or addresses, comma-separated: 10.0.0.0/24,192.0.2.7) trusted to start each connection with a PROXY protocol header (v1 or v2, HAProxy's send-proxy); the client it names counts for the per-IP limits and logs; from them a header is required (400 without), from anywhere else refused; empty trusts none")
	fs.Float64Var(&c.ClientRate, "client-rate", c.ClientRate, "`rate` in messages per second a client may send (token bucket); over it closes with 1008; 0 means no limit")
	fs.IntVar(&c.ClientBurst, "client-burst", c.ClientBurst, "burst size (`messages`) for -client-rate; 0 means max(1, rate)")
	fs.IntVar(&c.MaxChannelsPerConn, "max-channels-per-conn", c.MaxChannelsPerConn, "channels one connection may name (`n`); more get 400")
	fs.IntVar(&c.HistorySize, "history-size", c.HistorySize, "recent `messages` each channel keeps for clients that resume (since=); 0 keeps none")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", c.HistoryTTL, "how long a message stays in the history (`duration`)")
	fs.Int64Var(&c.HistoryBytes, "history-bytes", c.HistoryBytes, "`bytes` the whole history may hold, over every channel; the oldest messages go first")
	fs.IntVar(&c.ReplayBytes, "replay-bytes", c.ReplayBytes, "`bytes` one resume replays at most (as the history counts them); more comes in parts, the client closed with 4001 (SSE: the stream ends) after each, to resume from its last seq")
	fs.DurationVar(&c.IdempotencyWindow, "idempotency-window", c.IdempotencyWindow, "how long a publish's Idempotency-Key is remembered (`duration`): a repeat gets the first answer and publishes nothing")
	fs.IntVar(&c.IdempotencyKeys, "idempotency-keys", c.IdempotencyKeys, "idempotency keys remembered at once (`n`); beyond, the oldest is forgotten early (counted, logged)")
	fs.IntVar(&o.batch.MaxItems, "max-batch-items", o.batch.MaxItems, "messages in one POST /publish/batch (`n`); more get 413")
	fs.IntVar(&o.batch.MaxBytes, "max-batch-bytes", o.batch.MaxBytes, "body of one POST /publish/batch (`bytes`); more get 413")
	fs.StringVar(&o.nats, "nats", o.nats, "join a fan-out tier through JetStream at this NATS `URL` (nats://host:4222, tls://..., comma-separated for a cluster); empty runs standalone")
	fs.StringVar(&o.natsStream, "nats-stream", o.natsStream, "the JetStream `stream` the tier shares (created or updated at start-up; subjects NAME.>)")
	fs.StringVar(&o.natsStorage, "nats-storage", o.natsStorage, "the stream's storage: `file` (survives a NATS restart) or memory")
	fs.IntVar(&o.natsReplicas, "nats-replicas", o.natsReplicas, "the stream's `replicas` in a JetStream cluster (1-5)")
	fs.DurationVar(&o.natsTimeout, "nats-publish-timeout", o.natsTimeout, "how long a publish waits for JetStream's acknowledgement (`duration`) before it is refused with 503")
	fs.StringVar(&o.natsCreds, "nats-creds", o.natsCreds, "NATS credentials `file` (JWT and seed)")
	fs.StringVar(&o.natsNkey, "nats-nkey", o.natsNkey, "NATS nkey seed `file`")
	fs.StringVar(&o.natsUser, "nats-user", o.natsUser, "NATS `user` (with -nats-password)")
	fs.StringVar(&o.natsPassword, "nats-password", o.natsPassword, "NATS `password` (prefer FANOUT_NATS_PASSWORD: flags show in ps)")
	fs.StringVar(&o.natsTLSCA, "nats-tls-ca", o.natsTLSCA, "CA certificate `file` to verify the NATS server with")
	fs.StringVar(&o.natsTLSCert, "nats-tls-cert", o.natsTLSCert, "client certificate `file` for NATS (with -nats-tls-key)")
	fs.StringVar(&o.natsTLSKey, "nats-tls-key", o.natsTLSKey, "client key `file` for NATS (with -nats-tls-cert)")
	fs.StringVar(&o.origins, "origins", o.origins, "allowed browser `origins`, comma-separated: https://app.example.com (scheme and port compared), app.example.com (any), *.example.com or *; empty allows pages from loopback only (localhost, 127.0.0.0/8, [::1]); requests without Origin are always allowed")
	fs.StringVar(&c.PublicHost, "public-host", c.PublicHost, "the `host` browsers reach this server by (fanout.example.com, or https://fanout.example.com to compare scheme and port): its pages are allowed on top of -origins or the loopback default")
	fs.StringVar(&o.keys, "publish-keys", o.keys, "comma-separated bearer `keys` for POST /publish (prefer FANOUT_PUBLISH_KEYS or -publish-keys-file: flags show in ps); none disables /publish")
	fs.StringVar(&o.keysFile, "publish-keys-file", o.keysFile, "`file` with one publish key per line")
	fs.StringVar(&o.authSecret, "auth-secret", o.authSecret, "HS256 `secret`: clients must present a valid JWT (token query parameter or Authorization: Bearer); empty disables client auth")
	fs.StringVar(&o.secretFile, "auth-secret-file", o.secretFile, "`file` holding the -auth-secret")
	fs.StringVar(&o.authAudience, "auth-audience", o.authAudience, "with -auth-secret, the `audience` a token's aud claim must name; empty checks none")
	fs.StringVar(&o.authIssuer, "auth-issuer", o.authIssuer, "with -auth-secret, the `issuer` a token's iss claim must be; empty checks none")
	fs.BoolVar(&o.version, "version", false, "print the version, the Go version and the commit, and exit")
	definePusherFlags(fs, &o.pusher)
	return fs
}

// applyEnv gives every flag not in given (set on the command line) the
// value of FANOUT_<FLAG> (upper case, dashes as underscores), if that is
// set and not empty, and adds the variables present, empty or not, to
// given: an empty one changes no flag, but a secret's being given empty
// is an error (readSecrets).
func applyEnv(fs *flag.FlagSet, env func(string) (string, bool), given map[string]string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] != "" || err != nil {
			return
		}
		name := envName(f.Name)
		v, ok := env(name)
		if !ok {
			return
		}
		given[f.Name] = name
		if v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %s", name, badValue(f, v))
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envPrefix starts the name of every variable fanout reads for a flag.
const envPrefix = "FANOUT_"

// readSecrets gathers the publish keys (-publish-keys, then the lines of
// -publish-keys-file that are not blank or # comments) and reads
// -auth-secret-file, which wins over -auth-secret. A client-auth secret
// given empty, or a file holding none, is an error: it would turn auth
// off. A short one is a warning.
func readSecrets(o *options) error {
	for _, k := range strings.Split(o.keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			o.publishKeys = append(o.publishKeys, k)
		}
	}
	if o.keysFile != "" {
		b, err := os.ReadFile(o.keysFile)
		if err != nil {
			return fmt.Errorf("-publish-keys-file: %w", err)
		}
		for _, k := range strings.Split(string(b), "\n") {
			if k = strings.TrimSpace(k); k != "" && !strings.HasPrefix(k, "#") {
				o.publishKeys = append(o.publishKeys, k)
			}
		}
	}
	if by := o.given["auth-secret"]; by != "" && strings.TrimSpace(o.authSecret) == "" {
		return fmt.Errorf("-auth-secret: %s is set but empty, which would turn client auth off; unset it to run without auth", by)
	}
	if by := o.given["auth-secret-file"]; by != "" {
		if o.secretFile == "" {
			return fmt.Errorf("-auth-secret-file: %s is set but empty; unset it to run without auth", by)
		}
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return fmt.Errorf("-auth-secret-file: %w", err)
		}
		if o.authSecret = strings.TrimSpace(string(b)); o.authSecret == "" {
			return fmt.Errorf("-auth-secret-file: %s holds no secret (empty or only whitespace), which would turn client auth off", o.secretFile)
		}
	}
	if n := len(o.authSecret); n > 0 && n < minSecretBytes {
		o.warnings = append(o.warnings, fmt.Sprintf("the -auth-secret is shorter than %d bytes (%d): an HS256 key should be at least as long as the hash (RFC 7518 §3.2)", minSecretBytes, n))
	}
	return nil
}

// minSecretBytes is the shortest -auth-secret that starts without a
// warning: HS256 wants a key of at least the hash's 256 bits.
const minSecretBytes = 32

// validate refuses values out of range and parses the ones given as
// names (-slow-policy, -log-level).
func validate(o *options) error {
	if err := validateChoices(o); err != nil {
		return err
	}
	return validateLimits(o)
}

// validateChoices checks the flags that name things: listeners, log
// settings, the slow policy, Origins, token checks.
func validateChoices(o *options) error {
	c := &o.cfg
	if o.pprof && o.pprofAddr == "" {
		o.pprofAddr = defaultPprofAddr
		o.warnings = append(o.warnings, "-pprof is deprecated: pprof has a listener of its own now, "+defaultPprofAddr+"; use -pprof-addr")
	}
	for _, a := range []struct{ name, addr string }{{"addr", o.addr}, {"admin-addr", o.adminAddr}, {"pprof-addr", o.pprofAddr}} {
		if a.addr == "" && a.name != "addr" {
			continue // disabled
		}
		if err := checkAddr(a.addr); err != nil {
			return fmt.Errorf("%s: %w", o.src(a.name), err)
		}
	}
	if o.pprofAddr != "" {
		if err := loopbackAddr(o.pprofAddr); err != nil {
			return fmt.Errorf("%s: %w", o.src("pprof-addr"), err)
		}
	}
	for _, p := range []struct{ name, path string }{{"path", c.Path}, {"sse-path", c.SSEPath}} {
		if !strings.HasPrefix(p.path, "/") || strings.ContainsAny(p.path, "? ") {
			return fmt.Errorf("%s: %q: want an absolute path, no query (e.g. /ws)", o.src(p.name), p.path)
		}
	}
	if err := decideDemo(o); err != nil {
		return err
	}
	for _, p := range splitList(o.subprotocols) {
		if !isToken(p) {
			return fmt.Errorf("%s: %q is not a subprotocol name: want an HTTP token, no spaces, commas or quotes (e.g. chat,graphql-transport-ws)", o.src("subprotocols"), p)
		}
	}
	if o.compression != "on" && o.compression != "off" {
		return fmt.Errorf("%s: %q: want on or off", o.src("compression"), o.compression)
	}
	if o.sse && c.SSEPath == c.Path {
		return fmt.Errorf("%s: %q is -path too: they must differ (e.g. /sse)", o.src("sse-path"), c.SSEPath)
	}
	if err := validateNATS(o); err != nil {
		return err
	}
	if err := validatePusher(o); err != nil {
		return err
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return fmt.Errorf("%s: %q: want text or json", o.src("log-format"), o.logFormat)
	}
	if err := o.level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("%s: %q: want debug, info, warn or error", o.src("log-level"), o.logLevel)
	}
	var err error
	if c.SlowPolicy, err = broadcast.ParseSlowPolicy(o.slowPolicy); err != nil {
		return fmt.Errorf("%s: %q: want close or drop", o.src("slow-policy"), o.slowPolicy)
	}
	for _, e := range splitList(o.origins) {
		if err := checkOrigin(e); err != nil {
			return fmt.Errorf("%s: %w", o.src("origins"), err)
		}
	}
	if err := admit.CheckOrigins(splitList(o.origins)); err != nil {
		return fmt.Errorf("%s: %w", o.src("origins"), err)
	}
	if err := admit.CheckPublicHost(c.PublicHost); err != nil {
		return fmt.Errorf("%s: %w", o.src("public-host"), err)
	}
	trusted, err := parseTrusted(o.proxyProtocol)
	if err != nil {
		return fmt.Errorf("%s: %w", o.src("proxy-protocol"), err)
	}
	c.ProxyProtocol = trusted
	for _, name := range []string{"auth-audience", "auth-issuer"} {
		if o.given[name] != "" && o.authSecret == "" && (o.authAudience != "" || o.authIssuer != "") {
			return fmt.Errorf("%s needs -auth-secret or -auth-secret-file: without them no token is checked", o.src(name))
		}
	}
	return nil
}

// validateLimits checks the numbers and durations: the first one out of
// range is named as the user gave it, with its range and its default.
func validateLimits(o *options) error {
	c := &o.cfg
	def := defaults()
	for _, v := range []struct {
		name          string
		val, min, def int64
	}{
		{"workers", int64(c.Workers), 0, int64(def.cfg.Workers)},
		{"shards", int64(c.Shards), 1, int64(def.cfg.Shards)},
		{"queue-bytes", int64(c.QueueBytes), 1, int64(def.cfg.QueueBytes)},
		{"max-message", int64(c.MaxMessage), 1, int64(def.cfg.MaxMessage)},
		{"max-conns", int64(c.MaxConns), 0, int64(def.cfg.MaxConns)},
		{"backlog", int64(c.Backlog), 1, int64(def.cfg.Backlog)},
		{"max-handshakes", int64(c.MaxHandshakes), 1, int64(def.cfg.MaxHandshakes)},
		{"read-buffer", int64(c.ReadBufferSize), 64, int64(def.cfg.ReadBufferSize)},
		{"admin-max-conns", int64(o.adminMaxConns), 1, int64(def.adminMaxConns)},
		{"max-channels-per-conn", int64(c.MaxChannelsPerConn), 1, int64(def.cfg.MaxChannelsPerConn)},
		{"compress-min-bytes", int64(c.CompressMinBytes), 1, int64(def.cfg.CompressMinBytes)},
		{"replay-bytes", int64(c.ReplayBytes), 1, int64(def.cfg.ReplayBytes)},
		{"history-size", int64(c.HistorySize), 0, int64(def.cfg.HistorySize)},
		{"history-bytes", c.HistoryBytes, 1, def.cfg.HistoryBytes},
		{"idempotency-keys", int64(c.IdempotencyKeys), 1, int64(def.cfg.IdempotencyKeys)},
		{"max-batch-items", int64(o.batch.MaxItems), 1, int64(def.batch.MaxItems)},
		{"max-batch-bytes", int64(o.batch.MaxBytes), 2, int64(def.batch.MaxBytes)},
		{"max-conns-per-ip", int64(c.MaxConnsPerIP), 0, int64(def.cfg.MaxConnsPerIP)},
		{"max-handshakes-per-ip", int64(c.MaxHandshakesPerIP), 0, int64(def.cfg.MaxHandshakesPerIP)},
		{"client-burst", int64(c.ClientBurst), 0, int64(def.cfg.ClientBurst)},
	} {
		if v.val < v.min {
			return fmt.Errorf("%s: %d is below the minimum %d (the default is %d)", o.src(v.name), v.val, v.min, v.def)
		}
	}
	if c.ClientRate < 0 {
		return fmt.Errorf("%s: %g: must not be negative (e.g. 10; 0 means no limit)", o.src("client-rate"), c.ClientRate)
	}
	for _, v := range []struct {
		name     string
		val, def time.Duration
	}{
		{"handshake-timeout", c.HandshakeTimeout, def.cfg.HandshakeTimeout},
		{"close-timeout", c.CloseTimeout, def.cfg.CloseTimeout},
		{"shutdown-timeout", o.shutdownTimeout, def.shutdownTimeout},
		{"history-ttl", c.HistoryTTL, def.cfg.HistoryTTL},
		{"sse-retry", c.SSERetry, def.cfg.SSERetry},
		{"idempotency-window", c.IdempotencyWindow, def.cfg.IdempotencyWindow},
	} {
		if v.val <= 0 {
			return fmt.Errorf("%s: %s: must be positive (the default is %s)", o.src(v.name), v.val, v.def)
		}
	}
	for _, v := range []struct {
		name     string
		val, def time.Duration
	}{
		{"ping-interval", c.PingInterval, def.cfg.PingInterval},
		{"idle-timeout", c.IdleTimeout, def.cfg.IdleTimeout},
		{"handshake-first-byte-timeout", c.HandshakeFirstByteTimeout, def.cfg.HandshakeFirstByteTimeout},
		{"message-timeout", c.MessageTimeout, def.cfg.MessageTimeout},
	} {
		if v.val == 0 {
			return fmt.Errorf("%s: 0: want a positive duration, or a negative one to disable (the default is %s)", o.src(v.name), v.def)
		}
	}
	if o.drainDelay < 0 {
		return fmt.Errorf("%s: %s: must not be negative (the default is %s)", o.src("drain-delay"), o.drainDelay, def.drainDelay)
	}
	if c.DrainSpread < 0 || c.DrainSpread >= o.shutdownTimeout {
		return fmt.Errorf("%s: %s: want 0 or more and under -shutdown-timeout (%s), which must also leave the last clients time for their close handshake", o.src("drain-spread"), c.DrainSpread, o.shutdownTimeout)
	}
	if c.FlushDelay < 0 || c.FlushDelay > time.Second {
		return fmt.Errorf("%s: %s: want 0 to 1s (e.g. 1ms)", o.src("flush-delay"), c.FlushDelay)
	}
	if c.MaxPartialBytes == 0 {
		return fmt.Errorf("%s: 0: want a positive number of bytes, or a negative one for no cap (the default is %d)", o.src("max-partial-bytes"), def.cfg.MaxPartialBytes)
	}
	return nil
}

// defaultPprofAddr is where the deprecated -pprof puts pprof: the port
// net/http/pprof's documentation uses.
const defaultPprofAddr = "127.0.0.1:6060"

// loopbackAddr refuses a listen address that is not host:port with a
// loopback host (an IP in 127.0.0.0/8, ::1, or localhost). Profiles show
// the program's memory and cost CPU: only this machine may ask for them
// (from elsewhere, through an SSH tunnel).
func loopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.1, [::1] or localhost): profiles are for this machine only", addr)
	}
	return nil
}

// decideDemo settles -demo: as given, or, unset, on only for a
// loopback -addr (a page anyone who reaches the port can open is the
// operator's choice, not a default) and only where / is free.
func decideDemo(o *options) error {
	c := &o.cfg
	taken := ""
	switch {
	case c.Path == "/":
		taken = o.src("path")
	case o.sse && c.SSEPath == "/":
		taken = o.src("sse-path")
	}
	if !o.demo.set {
		// Loopback only, and not behind a load balancer on this host
		// (-proxy-protocol): then the port is everyone's.
		o.demo.v = loopbackAddr(o.addr) == nil && taken == "" && strings.TrimSpace(o.proxyProtocol) == ""
		return nil
	}
	if o.demo.v && taken != "" {
		return fmt.Errorf("%s: the demo page is served at /, which is %s too: set -demo=false, or another %s", o.src("demo"), taken, taken)
	}
	return nil
}

// autoBool is a boolean flag whose default is decided once the other
// flags are known, unless the command line or the environment set it.
type autoBool struct {
	v   bool
	set bool // Set was called: the value is the user's
}

func (b *autoBool) String() string { return strconv.FormatBool(b.v) }

func (b *autoBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.v, b.set = v, true
	return nil
}

// IsBoolFlag lets -demo alone mean -demo=true, as for flag.Bool.
func (b *autoBool) IsBoolFlag() bool { return true }

// Get makes it a flag.Getter of a bool, for the errors that name one.
func (b *autoBool) Get() any { return b.v }

// isToken reports whether s is an HTTP token (RFC 9110 5.6.2), what a
// Sec-WebSocket-Protocol value must be (RFC 6455 4.1).
func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// parseTrusted reads -proxy-protocol: CIDRs (host bits are masked off) or
// single addresses, IPv4-mapped IPv6 taken as the IPv4 it is (the server
// compares unmapped addresses).
func parseTrusted(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range splitList(v) {
		var p netip.Prefix
		var err error
		if strings.Contains(e, "/") {
			p, err = netip.ParsePrefix(e)
		} else {
			var a netip.Addr
			if a, err = netip.ParseAddr(e); err == nil && a.Zone() == "" {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil || !p.IsValid() {
			return nil, fmt.Errorf("%q is not a CIDR or an address: want the load balancers' networks or addresses, comma-separated (e.g. 10.0.0.0/24,192.0.2.7)", e)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// configure finishes o.cfg with what the flags give in another form:
// the Origin list, the JWT check for -auth-secret, -client-publish,
// -max-handshakes-per-ip 0.
func configure(o *options) {
	c := &o.cfg
	c.Origins = splitList(o.origins)
	c.Subprotocols = splitList(o.subprotocols)
	if o.authSecret != "" {
		var checks []admit.JWTOption
		if o.authAudience != "" {
			checks = append(checks, admit.JWTAudience(o.authAudience))
		}
		if o.authIssuer != "" {
			checks = append(checks, admit.JWTIssuer(o.authIssuer))
		}
		c.Authenticate = broadcast.JWTAuthenticator([]byte(o.authSecret), checks...)
	}
	c.ReceiveOnly = !o.clientPublish
	c.NoSSE = !o.sse
	c.Demo = o.demo.v
	c.NoCompression = o.compression == "off"
	if c.HistorySize == 0 {
		c.HistorySize = -1 // the flag's "none"; the Config's zero is the default
	}
	if c.MaxHandshakesPerIP == 0 {
		c.MaxHandshakesPerIP = -1 // the flag's "no cap"; the Config's zero is the default
	}
	if o.pusher.on() {
		c.Pusher = &o.pusher.cfg
	}
}

// validateNATS checks the tier's flags and builds the NATS connection's
// options from them (credentials files are read now: a bad one is a bad
// flag, not a failure at the first connect).
func validateNATS(o *options) error {
	if o.nats == "" {
		return nil
	}
	for _, u := range strings.Split(o.nats, ",") {
		u = strings.TrimSpace(u)
		scheme, _, ok := strings.Cut(u, "://")
		if !ok || (scheme != "nats" && scheme != "tls" && scheme != "ws" && scheme != "wss") {
			return fmt.Errorf("%s: %q: want a URL with its scheme, nats://, tls://, ws:// or wss:// (e.g. nats://127.0.0.1:4222)", o.src("nats"), bus.RedactURL(u))
		}
	}
	if !validStreamName(o.natsStream) {
		return fmt.Errorf("%s: %q: want a JetStream stream name: letters, digits, - and _ (e.g. fanout)", o.src("nats-stream"), o.natsStream)
	}
	if o.natsStorage != "file" && o.natsStorage != "memory" {
		return fmt.Errorf("%s: %q: want file or memory", o.src("nats-storage"), o.natsStorage)
	}
	if o.natsReplicas < 1 || o.natsReplicas > 5 {
		return fmt.Errorf("%s: %d: want 1 to 5", o.src("nats-replicas"), o.natsReplicas)
	}
	if o.natsTimeout <= 0 {
		return fmt.Errorf("%s: %s: must be positive (e.g. 5s)", o.src("nats-publish-timeout"), o.natsTimeout)
	}
	if (o.natsUser == "") != (o.natsPassword == "") {
		return fmt.Errorf("%s and %s go together: set both or neither", o.src("nats-user"), o.src("nats-password"))
	}
	if (o.natsTLSCert == "") != (o.natsTLSKey == "") {
		return fmt.Errorf("%s and %s go together: set both or neither", o.src("nats-tls-cert"), o.src("nats-tls-key"))
	}
	var opts []nats.Option
	if o.natsCreds != "" {
		if _, err := os.Stat(o.natsCreds); err != nil {
			return fmt.Errorf("%s: %w", o.src("nats-creds"), err)
		}
		opts = append(opts, nats.UserCredentials(o.natsCreds))
	}
	if o.natsNkey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.natsNkey)
		if err != nil {
			return fmt.Errorf("%s: %w", o.src("nats-nkey"), err)
		}
		opts = append(opts, opt)
	}
	if o.natsUser != "" {
		opts = append(opts, nats.UserInfo(o.natsUser, o.natsPassword))
	}
	if o.natsTLSCA != "" {
		if _, err := os.Stat(o.natsTLSCA); err != nil {
			return fmt.Errorf("%s: %w", o.src("nats-tls-ca"), err)
		}
		opts = append(opts, nats.RootCAs(o.natsTLSCA))
	}
	if o.natsTLSCert != "" {
		if _, err := tls.LoadX509KeyPair(o.natsTLSCert, o.natsTLSKey); err != nil {
			return fmt.Errorf("%s, %s: %w", o.src("nats-tls-cert"), o.src("nats-tls-key"), err)
		}
		opts = append(opts, nats.ClientCert(o.natsTLSCert, o.natsTLSKey))
	}
	o.natsOptions = opts
	return nil
}

// validStreamName: what JetStream takes as a stream name and fanout as a
// subject prefix.
func validStreamName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
