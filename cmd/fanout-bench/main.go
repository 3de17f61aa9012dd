// Command fanout-bench load-tests a WebSocket broadcast server (fanout, or
// any server that sends every client's message to every client).
//
//	fanout-bench connect  -url ws://127.0.0.1:8080/ws -conns 10000 -hold 10s -server-pid PID
//	fanout-bench fanout   -url ws://127.0.0.1:8080/ws -conns 1000 -publishers 2 -rate 1000 -size 64
//	fanout-bench slow     -url ... -conns 1000 -slow-fraction 0.1
//	fanout-bench churn    -url ... -conns 1000 -churn-rate 50
//	fanout-bench fanout   -url ... -publish-url http://127.0.0.1:8081/publish -publish-key K   (publishers POST)
//	fanout-bench fanout   -url ... -channel news            (receivers and publishers on one channel)
//	fanout-bench fanout   -url ... -channels 1000 -channel-rate 0.25   (half the receivers over 1,000 channels, a publisher each)
//	fanout-bench fanout   -url ... -transport sse           (receivers are Server-Sent Events streams)
//	fanout-bench fanout   -url ... -compression -payload json -size 1024   (deflate receivers, JSON messages)
//	fanout-bench rooms    -url ... -conns 10000 -rate-per-client 2   (a channel per client, each publishing to its own)
//	fanout-bench baseline -addr 127.0.0.1:9090      (the classic hub, for side-by-side runs)
//
// Every run prints its environment first, then a table; -json and -report
// write all figures to files.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/fanout/fanout/bench"
	"github.com/fanout/fanout/bench/baseline"
)

func main() {
	if bench.RunChild() {
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: fanout-bench <scenario> [flags]

Scenarios:
  connect   ramp to -conns connections, hold them, report connect rate and server cost
  fanout    -conns receivers, -publishers publishing -size byte messages at -rate
  slow      fanout while -slow-fraction of the receivers never read
  churn     fanout while receivers leave and rejoin at -churn-rate
  rooms     -conns clients, each alone on its own channel, publishing there at -rate-per-client
  baseline  run the classic goroutine-per-connection hub (for comparisons)
  ceiling   measure this machine's raw write cost per delivery
  compare   print results (-json files) side by side with ratios
            (-html FILE: also one page with them all on the same charts)
  summary   one labelled line per result file: deliveries/s, loss ratio, p99, server CPU/delivery
            (-raw: the four numbers bare, for scripts)

-channel NAME puts connect, fanout, slow and churn on one fanout channel;
-transport sse makes their receivers SSE streams, -format json WebSocket
ones in the json format, -compression has them offer permessage-deflate,
and -payload json publishes JSON text.
Run fanout-bench <scenario> -help for its flags.

` + exitStatus

// exitStatus is what a scenario's exit status means, in -help.
const exitStatus = `Exit status: 0 when every wanted connection connected; 1 when any never
did (after -connect-retries: the table and -json still say what did, and
the first refusal is named: the server's status line, the TLS error), or
the run failed; 2 for a bad command line (a -server-pid that does not
exist included).
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "baseline":
		return runBaseline(args[1:], stderr)
	case "compare":
		return runCompare(args[1:], stdout, stderr)
	case "summary":
		return runSummary(args[1:], stdout, stderr)
	case "ceiling":
		return runCeiling(args[1:], stdout, stderr)
	case bench.ScenarioConnect, bench.ScenarioFanout, bench.ScenarioSlow, bench.ScenarioChurn, bench.ScenarioRooms:
		return runScenario(args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "fanout-bench: unknown scenario %q\n\n%s", args[0], usage)
	return 2
}

// rateFlag accepts a number or "max".
type rateFlag struct{ v *float64 }

func (r rateFlag) String() string {
	if r.v == nil || *r.v == 0 {
		return "max"
	}
	return strconv.FormatFloat(*r.v, 'f', -1, 64)
}

func (r rateFlag) Set(s string) error {
	if s == "max" {
		*r.v = 0
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return errors.New(`want a positive number of messages per second, or "max"`)
	}
	*r.v = v
	return nil
}

func runScenario(scenario string, args []string, stdout, stderr io.Writer) int {
	fs, a := scenarioFlags(scenario, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fanout-bench: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	var unused []string
	fs.Visit(func(f *flag.Flag) {
		if notFor(scenario, f.Name) {
			unused = append(unused, "-"+f.Name)
		}
	})
	if len(unused) > 0 {
		fmt.Fprintf(stderr, "fanout-bench: %s does not take %s (fanout-bench %s -help lists what it does)\n", scenario, strings.Join(unused, ", "), scenario)
		return 2
	}
	full, err := a.config()
	if err != nil {
		fmt.Fprintf(stderr, "fanout-bench: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "# env: %s\n", bench.ReadEnv())
	fmt.Fprintf(stdout, "# params: %s\n", params(full))

	progress := progressLine(stderr, a.quiet)
	tty := progress != nil
	if a.phaseLog != "" {
		f, err := os.OpenFile(a.phaseLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "fanout-bench: -phase-log: %v\n", err)
			return 2
		}
		defer f.Close()
		progress = logPhases(f, progress)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, a.cfg, progress)
	if tty {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if err != nil {
		fmt.Fprintf(stderr, "fanout-bench: %v\n", err)
		return 1
	}
	res.WriteText(stdout)
	if err := a.write(res); err != nil {
		fmt.Fprintf(stderr, "fanout-bench: %v\n", err)
		return 1
	}
	if err := res.Shortfall(); err != nil { // after the table and the files: they say what did connect
		fmt.Fprintf(stderr, "fanout-bench: %v\n", err)
		return 1
	}
	return 0
}

// scenarioArgs is what a scenario's command line says.
type scenarioArgs struct {
	cfg        bench.Config
	sourceIPs  string // -source-ips, parsed by config
	pids       string // -server-pid, parsed by config
	jsonPath   string
	reportPath string
	phaseLog   string
	quiet      bool
}

// params is the run's parameters line: what the scenario uses.
func params(c bench.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario=%s url=%s conns=%d conns-per-proc=%d", c.Scenario, c.URL, c.Conns, c.ConnsPerProc)
	if c.Scenario == bench.ScenarioRooms {
		fmt.Fprintf(&b, " room-prefix=%s rate-per-client=%g size=%d duration=%s messages=%d source-ips=%d",
			c.RoomPrefix, c.RatePerClient, c.Size, c.Duration, c.Messages, len(c.SourceIPs))
		return b.String()
	}
	fmt.Fprintf(&b, " publishers=%d size=%d payload=%s rate=%s window=%d duration=%s messages=%d source-ips=%d",
		c.Publishers, c.Size, c.Payload, rateFlag{&c.Rate}, c.Window, c.Duration, c.Messages, len(c.SourceIPs))
	fmt.Fprintf(&b, " transport=%s format=%s compression=%v", c.Transport, c.Format, c.Compression)
	if c.Transport == bench.TransportSSE {
		fmt.Fprintf(&b, " sse-path=%s", c.SSEPath)
	}
	if c.Protocol == bench.ProtocolPusher {
		fmt.Fprintf(&b, " protocol=%s pusher-key=%s pusher-app-id=%s pusher-event=%s", c.Protocol, c.PusherKey, c.PusherAppID, c.PusherEvent)
	}
	if c.PublishURL != "" {
		fmt.Fprintf(&b, " publish-url=%s publish-batch=%d", c.PublishURL, c.PublishBatch)
	}
	if c.IdempotencyKeys {
		fmt.Fprintf(&b, " idempotency-keys=true")
	}
	if c.Channel != "" {
		fmt.Fprintf(&b, " channel=%s", c.Channel)
	}
	if c.Channels > 0 {
		fmt.Fprintf(&b, " channels=%d channel-share=%g channel-prefix=%s channel-rate=%s", c.Channels, c.ChannelShare, c.ChannelPrefix, rateFlag{&c.ChannelRate})
	}
	return b.String()
}

// scenarioFlags defines a scenario's flags, to be parsed into the
// returned scenarioArgs: how it connects and reports, and how it
// publishes (rooms has flags of its own for that).
func scenarioFlags(scenario string, stderr io.Writer) (*flag.FlagSet, *scenarioArgs) {
	a := &scenarioArgs{cfg: bench.Config{Scenario: scenario}}
	fs := flag.NewFlagSet("fanout-bench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fanout-bench %s [flags]\n\n", scenario)
		// The flags this scenario takes: the set holds those its
		// siblings take too (connect, fanout, slow and churn share it).
		shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
		shown.SetOutput(stderr)
		fs.VisitAll(func(f *flag.Flag) {
			if !notFor(scenario, f.Name) {
				shown.Var(f.Value, f.Name, f.Usage)
			}
		})
		shown.PrintDefaults()
		fmt.Fprint(stderr, "\n"+exitStatus)
	}
	a.connectFlags(fs)
	if scenario == bench.ScenarioRooms {
		a.roomsFlags(fs)
	} else {
		a.publishFlags(fs)
	}
	a.reportFlags(fs)
	return fs, a
}

// notTaken are, per scenario, the flags of the set it shares with its
// siblings that it has no use for: connect publishes nothing, and only
// slow and churn have their knobs.
var notTaken = map[string][]string{
	bench.ScenarioConnect: {"publishers", "size", "payload", "rate", "window", "duration", "messages", "drain",
		"publish-url", "publish-key", "publish-batch", "idempotency-keys", "slow-fraction", "churn-rate",
		"channels", "channel-share", "channel-prefix", "channel-rate", "pusher-app-id", "pusher-secret", "pusher-event"},
	bench.ScenarioFanout: {"hold", "slow-fraction", "churn-rate"},
	bench.ScenarioSlow:   {"hold", "churn-rate", "channels", "channel-share", "channel-prefix", "channel-rate"},
	bench.ScenarioChurn:  {"hold", "slow-fraction", "channels", "channel-share", "channel-prefix", "channel-rate"},
}

func notFor(scenario, flagName string) bool { return slices.Contains(notTaken[scenario], flagName) }

// connectFlags are how a scenario's connections connect.
func (a *scenarioArgs) connectFlags(fs *flag.FlagSet) {
	cfg := &a.cfg
	conns := "receiving connections (`n`), over all processes"
	if cfg.Scenario == bench.ScenarioRooms {
		conns = "clients (`n`), over all processes, each alone in its room"
	}
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/ws", "server WebSocket `URL`; a comma-separated list spreads connections over a tier")
	fs.IntVar(&cfg.Conns, "conns", 1000, conns)
	fs.IntVar(&cfg.ConnsPerProc, "conns-per-proc", 15000, "connections per process (`n`); more spread over child processes")
	fs.StringVar(&a.sourceIPs, "source-ips", "", "local `addresses` for client sockets: 127.0.0.2-127.0.0.40, a CIDR, or a comma list")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 0, "new connections per `second` (0: as fast as possible)")
	fs.IntVar(&cfg.ConnectWorkers, "connect-workers", 64, "concurrent handshakes per process (`n`)")
	fs.IntVar(&cfg.ConnectRetries, "connect-retries", 2, "retries per failed connection (`n`)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 10*time.Second, "dial + handshake `timeout`")
	fs.StringVar(&cfg.CAFile, "ca", "", "PEM `file` of the certificates a wss:// (or https:// -publish-url) server's must chain to, e.g. a self-signed one (default: the system's roots)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "accept any certificate from a wss:// (or https://) server, unchecked")
	fs.BoolVar(&cfg.Compression, "compression", false, "WebSocket receivers offer permessage-deflate (without context takeover); the result says how many took it")
	if cfg.Scenario == bench.ScenarioRooms {
		return // its clients publish on their connections: raw-format WebSocket
	}
	fs.StringVar(&cfg.Transport, "transport", bench.TransportWS, "how receivers receive: `ws` (WebSocket) or sse (GET -sse-path on -url's host: Server-Sent Events); publishers are WebSocket either way")
	fs.StringVar(&cfg.SSEPath, "sse-path", "", "SSE streams' `path` on -url's host, with -transport sse (default /sse)")
	fs.StringVar(&cfg.Format, "format", "", "WebSocket receivers' `format`: raw (payloads as published; the default) or json (?format=json: each message in its JSON envelope)")
	fs.StringVar(&cfg.Protocol, "protocol", bench.ProtocolNative, "what receivers and publishers speak: `native` (the server's own) or pusher (Pusher Channels protocol 7: receivers dial /app/-pusher-key on -url's host and subscribe to -channel; publishers trigger events through the Pusher HTTP API on -publish-url's server)")
	fs.StringVar(&cfg.PusherKey, "pusher-key", "", "with -protocol pusher: the app's `key`")
}

// publishFlags are how connect, fanout, slow and churn publish.
func (a *scenarioArgs) publishFlags(fs *flag.FlagSet) {
	cfg := &a.cfg
	fs.DurationVar(&cfg.Hold, "hold", 5*time.Second, "connect: how long to hold the connections")
	fs.StringVar(&cfg.Channel, "channel", "", "fanout channel `name` for receivers and publishers (?channel=name on their URLs and on -publish-url; default: the default channel, URLs as given)")
	fs.IntVar(&cfg.Channels, "channels", 0, "spread the last -channel-share of the receivers over `n` channels (-channel-prefix0 …), each with a publisher of its own at -channel-rate; the rest stay on -channel with -publishers (0: none spread)")
	fs.Float64Var(&cfg.ChannelShare, "channel-share", 0, "with -channels: the `fraction` of the receivers spread (default 0.5)")
	fs.StringVar(&cfg.ChannelPrefix, "channel-prefix", "", "with -channels: the spread channels' names are `prefix`0, prefix1, … (default ch-)")
	fs.Float64Var(&cfg.ChannelRate, "channel-rate", 0, "with -channels: messages per `second` each spread channel's publisher publishes (default: -rate / -publishers)")
	fs.IntVar(&cfg.Publishers, "publishers", 1, "publishing connections (`n`)")
	fs.IntVar(&cfg.Size, "size", 64, "message size in `bytes` (≥ 20; ≥ 60 with -payload json)")
	fs.StringVar(&cfg.Payload, "payload", "", "what a message holds: `binary` (the bench header and padding; the default but with -protocol pusher), text (the header in hex and padding: the default with -protocol pusher) or json (a JSON object of -size bytes carrying the header: text, compressible like an API's)")
	fs.Var(rateFlag{&cfg.Rate}, "rate", "total messages per `second`, or max (closed loop, -window in flight per publisher)")
	fs.IntVar(&cfg.Window, "window", 16, "messages in flight per publisher with -rate max (`n`)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&cfg.Messages, "messages", 0, "stop each publisher after `n` messages (0: use -duration)")
	fs.DurationVar(&cfg.Drain, "drain", 5*time.Second, "wait this long at most for deliveries after publishing")
	fs.StringVar(&cfg.PublishURL, "publish-url", "", "publishers POST to this publish API `URL` (e.g. http://127.0.0.1:8081/publish, keep-alive; a comma-separated list spreads them over a tier's nodes) instead of writing WebSocket frames; they still read their own messages back over WebSocket")
	fs.StringVar(&cfg.PublishKey, "publish-key", "", "bearer `key` for -publish-url (default: the first of $FANOUT_PUBLISH_KEYS, which fanout reads too: flags show in ps)")
	fs.BoolVar(&cfg.IdempotencyKeys, "idempotency-keys", false, "with -publish-url: every POST carries an Idempotency-Key of its own (run, publisher, sequence): a message sent again after a 503 is stored once even if the first try was stored (one message per POST)")
	fs.IntVar(&cfg.PublishBatch, "publish-batch", 1, "messages per POST (`n`): 1 sends each alone (application/octet-stream); more sends them as application/x-ndjson, one text message per line")
	fs.StringVar(&cfg.PusherAppID, "pusher-app-id", "", "with -protocol pusher: the app's `id` (the HTTP API's /apps/id/events)")
	fs.StringVar(&cfg.PusherSecret, "pusher-secret", "", "with -protocol pusher: the app's `secret`, which signs the HTTP API requests (default: $FANOUT_PUSHER_SECRET, which fanout reads too: flags show in ps)")
	fs.StringVar(&cfg.PusherEvent, "pusher-event", "", "with -protocol pusher: the `name` of the events publishers trigger (default bench)")
	fs.Float64Var(&cfg.SlowFraction, "slow-fraction", 0.1, "slow: fraction of receivers that never read")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", 0, "churn: receivers replaced per `second` (0: 5% of -conns)")
}

// roomsFlags are how the rooms' clients publish.
func (a *scenarioArgs) roomsFlags(fs *flag.FlagSet) {
	cfg := &a.cfg
	fs.StringVar(&cfg.RoomPrefix, "room-prefix", "room-", "room names: client i is alone on channel `prefix`+i, i from 0 to -conns − 1")
	fs.Float64Var(&cfg.RatePerClient, "rate-per-client", 1, "messages per `second` each client publishes to its own room (a fixed rate; the total is this × -conns)")
	fs.IntVar(&cfg.Size, "size", 64, "message size in `bytes` (≥ 22)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&cfg.Messages, "messages", 0, "stop each client after `n` messages (0: use -duration)")
	fs.DurationVar(&cfg.Drain, "drain", 5*time.Second, "wait this long at most for messages after publishing")
}

// reportFlags are what a scenario watches on the server and writes.
func (a *scenarioArgs) reportFlags(fs *flag.FlagSet) {
	cfg := &a.cfg
	fs.StringVar(&a.pids, "server-pid", "", "sample these `pids` (comma-separated: a tier's processes, added up) for RSS, fds, threads and CPU from /proc")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "scrape this Prometheus `URL` for the server's cost")
	fs.IntVar(&cfg.Workers, "workers", 0, "netpoll workers per bench process (`n`; 0: default)")
	fs.StringVar(&a.jsonPath, "json", "", "write all figures as JSON to `file`")
	fs.StringVar(&a.reportPath, "report", "", "write a self-contained HTML report to `file`")
	fs.BoolVar(&a.quiet, "quiet", false, "no progress line")
	fs.StringVar(&a.phaseLog, "phase-log", "", "append a line to `file` each time the run's phase changes (connecting, publishing, holding, draining: the phase and the unix time in seconds), for a script that acts mid-run")
}

// config completes a.cfg from the flags that need parsing and returns it
// with its defaults, as the run will use it.
func (a *scenarioArgs) config() (bench.Config, error) {
	for _, p := range strings.Split(a.pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return bench.Config{}, fmt.Errorf("-server-pid: %q is not a pid", p)
		}
		a.cfg.ServerPIDs = append(a.cfg.ServerPIDs, n)
	}
	if a.sourceIPs != "" {
		ips, err := bench.ParseIPs(a.sourceIPs)
		if err != nil {
			return bench.Config{}, fmt.Errorf("-source-ips: %v", err)
		}
		a.cfg.SourceIPs = ips
	}
	if a.cfg.Protocol == bench.ProtocolPusher {
		if a.cfg.PublishURL != "" && a.cfg.PusherSecret == "" {
			a.cfg.PusherSecret = os.Getenv("FANOUT_PUSHER_SECRET")
			if a.cfg.PusherSecret == "" {
				return bench.Config{}, errors.New("-protocol pusher with -publish-url needs -pusher-secret (or FANOUT_PUSHER_SECRET)")
			}
		}
	} else if a.cfg.PublishURL != "" && a.cfg.PublishKey == "" {
		for _, k := range strings.Split(os.Getenv("FANOUT_PUBLISH_KEYS"), ",") {
			if k = strings.TrimSpace(k); k != "" {
				a.cfg.PublishKey = k
				break
			}
		}
		if a.cfg.PublishKey == "" {
			return bench.Config{}, errors.New("-publish-url needs -publish-key (or FANOUT_PUBLISH_KEYS)")
		}
	}
	return a.cfg.WithDefaults()
}

// progressLine is the live progress line on a terminal, or nil.
func progressLine(stderr io.Writer, quiet bool) bench.Progress {
	f, ok := stderr.(*os.File)
	if !ok || quiet || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(p bench.Point, phase string) {
		fmt.Fprintf(stderr, "\r\033[K%-10s t=%3ds conns %d  deliveries/s %.0f  p99 %.2f ms  errors %d", phase, p.Second, p.Conns, p.Deliveries, p.P99, p.Errors)
	}
}

// logPhases is progress (nil: none) that also writes "PHASE UNIXTIME" to
// w each time the phase changes (-phase-log): publishing as the first
// message goes out, draining once the publishers are done.
func logPhases(w io.Writer, progress bench.Progress) bench.Progress {
	last := ""
	return func(p bench.Point, phase string) {
		if phase != last {
			last = phase
			fmt.Fprintf(w, "%s %d\n", phase, time.Now().Unix())
		}
		if progress != nil {
			progress(p, phase)
		}
	}
}

// write saves res where -json and -report say.
func (a *scenarioArgs) write(res *bench.Result) error {
	if a.jsonPath != "" {
		if err := res.WriteJSON(a.jsonPath); err != nil {
			return err
		}
	}
	if a.reportPath != "" {
		if err := res.WriteHTML(a.reportPath); err != nil {
			return err
		}
	}
	return nil
}

func runBaseline(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("fanout-bench baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "listen `address`")
	path := fs.String("path", "/ws", "WebSocket `path`")
	sendBuf := fs.Int("send-buffer", 256, "per-client send channel capacity (`messages`)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	hub := baseline.New(baseline.Config{SendBuffer: *sendBuf, Logger: log})
	srv := &http.Server{Handler: baseline.Handler(hub, *path), ReadHeaderTimeout: 10 * time.Second}
	log.Info("baseline ready", "ws", "ws://"+ln.Addr().String()+*path, "pid", os.Getpid())
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		<-sigs
		hub.Close()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

func runCeiling(args []string, stdout, stderr io.Writer) int {
	var cfg bench.CeilingConfig
	var jsonPath string
	fs := flag.NewFlagSet("fanout-bench ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Conns, "conns", 1000, "loopback connections (`n`; two fds each, keep under half the file limit)")
	fs.IntVar(&cfg.Size, "size", 64, "payload `bytes` per frame")
	fs.IntVar(&cfg.Rounds, "rounds", 200, "writes per connection (`n`)")
	fs.StringVar(&jsonPath, "json", "", "write the result as JSON to `file`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cfg.Conns <= 0 || cfg.Size <= 0 || cfg.Rounds <= 0 {
		fmt.Fprintln(stderr, "fanout-bench ceiling: -conns, -size and -rounds must be positive")
		return 2
	}
	fmt.Fprintf(stdout, "# env: %s\n", bench.ReadEnv())
	res, err := bench.Ceiling(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fanout-bench ceiling: %v\n", err)
		return 1
	}
	res.WriteText(stdout)
	if jsonPath != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "fanout-bench ceiling: %v\n", err)
			return 1
		}
	}
	return 0
}

func runCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fanout-bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	labels := fs.String("labels", "", "comma-separated `names` for the result files (default: file names)")
	htmlPath := fs.String("html", "", "also write a self-contained HTML page to `file`: this table, and every chart with all the results on the same axes, one colour each")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: fanout-bench compare [-labels a,b] [-html FILE] A.json B.json...\n\nThe results (-json) side by side, with the first's ratio to each other one; a figure a result lacks is \"-\".")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	files := fs.Args()
	if len(files) < 2 {
		fmt.Fprintln(stderr, "fanout-bench compare: want two or more result files")
		return 2
	}
	names := files
	if *labels != "" {
		names = strings.Split(*labels, ",")
		if len(names) != len(files) {
			fmt.Fprintln(stderr, "fanout-bench compare: one label per file")
			return 2
		}
	}
	var rs []*bench.Result
	for _, f := range files {
		r, err := bench.LoadResult(f)
		if err != nil {
			fmt.Fprintf(stderr, "fanout-bench compare: %v\n", err)
			return 1
		}
		rs = append(rs, r)
	}
	bench.Compare(stdout, names, rs)
	if *htmlPath != "" {
		if err := bench.WriteCompareHTML(*htmlPath, names, rs); err != nil {
			fmt.Fprintf(stderr, "fanout-bench compare: %v\n", err)
			return 1
		}
	}
	return 0
}

func runSummary(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fanout-bench summary", flag.ContinueOnError)
	fs.SetOutput(stderr)
	raw := fs.Bool("raw", false, "print the four figures bare, space-separated, for scripts: deliveries/s, loss ratio, p99 (ms), server CPU per delivery (µs)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: fanout-bench summary [-raw] FILE...\n\nOne line per result file (-json): deliveries/s (messages/s in rooms), loss ratio, p99 latency, server CPU per delivery (0 unmeasured).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "fanout-bench summary: want result files")
		return 2
	}
	for _, f := range fs.Args() {
		r, err := bench.LoadResult(f)
		if err != nil {
			fmt.Fprintf(stderr, "fanout-bench summary: %v\n", err)
			return 1
		}
		var dps, loss, p99, cpu float64
		if r.Fanout != nil {
			dps, loss, p99 = r.Fanout.PerSecond, r.Fanout.LossRatio, float64(r.Fanout.Latency.P99)/1e6
		}
		if r.Server != nil {
			cpu = float64(r.Server.CPUPerDelivery) / 1e3
		}
		if *raw { // scripts/*.sh read these with read -r: keep the order
			fmt.Fprintf(stdout, "%.0f %.6f %.2f %.2f\n", dps, loss, p99, cpu)
			continue
		}
		per := "deliveries/s"
		if r.Rooms != nil {
			per = "messages/s"
		}
		fmt.Fprintf(stdout, "%s: %s %.0f  loss ratio %.6f  p99 %.2f ms  server CPU per delivery %.2f µs\n", f, per, dps, loss, p99, cpu)
	}
	return 0
}
