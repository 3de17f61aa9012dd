package bench

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
)

// The Pusher Channels protocol, version 7, as far as the bench needs it to
// measure a server that speaks it (Config.Protocol ProtocolPusher): fanout's
// Pusher front door, or any other (soketi, Reverb).
//
// A receiver dials ws://HOST/app/KEY?protocol=7&client=fanout-bench&version=1,
// takes the server's first event, pusher:connection_established (its
// handshake latency ends there), subscribes to its channel and waits for
// pusher_internal:subscription_succeeded (dialPusher: a receiver that is
// not subscribed is not connected). From then on every app event is a
// message whose data string is the payload exactly as its publisher gave
// it; it is read by a scanner of the bench's own (decodePusherEvent, held
// to encoding/json by a fuzz target) and counted like a raw frame. The
// receiver answers pusher:ping with pusher:pong and, as pusher-js does,
// sends pusher:ping when it has read nothing for the server's
// activity_timeout.
//
// Publishers trigger events through the Pusher HTTP API: POST
// /apps/ID/events, {"name","channel","data"}, signed with the app's secret
// (pusherSigner), one event per request; each holds a Pusher connection
// subscribed to its channel and reads its own events back on it, as a
// native publisher reads its frames. Only public channels: a private or
// presence channel would need an auth signature per connection.
//
// An event's data is a string, so payloads are text: PayloadText (the
// default here, the header in hex: no byte a JSON string must escape) or
// PayloadJSON (a JSON object as a string, escaped on the wire, as the
// Pusher SDKs send objects).

// Protocols (Config.Protocol).
const (
	ProtocolNative = "native"
	ProtocolPusher = "pusher"
)

// defaultPusherEvent is Config.PusherEvent's default.
const defaultPusherEvent = "bench"

// pusherQuery is the query of a receiver's URL: the protocol version the
// bench speaks, and its name as a client library.
const pusherQuery = "protocol=7&client=fanout-bench&version=1"

// Pusher's limits, as its service states them: channel and event names up
// to 200 characters, channel names of [A-Za-z0-9_\-=@,.;].
const pusherMaxName = 200

var pusherChannelRE = regexp.MustCompile(`^[A-Za-z0-9_\-=@,.;]+$`)

// fillPusher checks the protocol and, for Pusher, what it needs: the app's
// key, a public channel, text payloads, the HTTP API's server for
// publishers (Config.PublishURL, its path left to the bench) and the
// app's id. The secret is not checked here: child processes, which do not
// publish, never get it.
func (c *Config) fillPusher() error {
	if c.Protocol == "" {
		c.Protocol = ProtocolNative
	}
	switch c.Protocol {
	case ProtocolNative:
		if c.PusherKey != "" || c.PusherAppID != "" || c.PusherSecret != "" || c.PusherEvent != "" {
			return fmt.Errorf("pusher key, app id, secret and event: only with the %s protocol", ProtocolPusher)
		}
		return nil
	case ProtocolPusher:
	default:
		return fmt.Errorf("protocol %q: want %s or %s", c.Protocol, ProtocolNative, ProtocolPusher)
	}
	switch {
	case c.Scenario == ScenarioRooms:
		return fmt.Errorf("%s: the %s protocol only (a Pusher client publishes client events only, on private channels)", ScenarioRooms, ProtocolNative)
	case c.Transport != "" && c.Transport != TransportWS:
		return fmt.Errorf("transport %s: the %s protocol is WebSocket", c.Transport, ProtocolPusher)
	case c.Format != "" && c.Format != FormatRaw: // raw: as a child gets it, filled in
		return fmt.Errorf("format %s: the %s protocol has its own (every frame a JSON event)", c.Format, ProtocolPusher)
	case c.PusherKey == "":
		return fmt.Errorf("the %s protocol needs the app's key (pusher key)", ProtocolPusher)
	case c.Channel == "":
		return fmt.Errorf("the %s protocol subscribes to a named channel: say which (channel)", ProtocolPusher)
	}
	names := []string{c.Channel}
	if c.Channels > 0 {
		names = append(names, cmp.Or(c.ChannelPrefix, defaultChannelPrefix)+strconv.Itoa(c.Channels-1)) // the longest
	}
	for _, name := range names {
		if err := validPusherChannel(name); err != nil {
			return err
		}
	}
	if c.Payload == "" {
		c.Payload = PayloadText
	}
	if c.Payload == PayloadBinary {
		return fmt.Errorf("payload %s: a Pusher event's data is a string: %s or %s", PayloadBinary, PayloadText, PayloadJSON)
	}
	c.PusherEvent = cmp.Or(c.PusherEvent, defaultPusherEvent)
	if len(c.PusherEvent) > pusherMaxName || strings.HasPrefix(c.PusherEvent, "pusher") || strings.HasPrefix(c.PusherEvent, "client-") {
		return fmt.Errorf("pusher event %q: want an app event's name, at most %d bytes, not pusher… nor client-…", c.PusherEvent, pusherMaxName)
	}
	if c.Scenario == ScenarioConnect {
		return nil
	}
	switch {
	case c.PublishURL == "":
		return fmt.Errorf("the %s protocol's publishers trigger events through its HTTP API: name its server (publish url http://HOST:PORT)", ProtocolPusher)
	case c.PusherAppID == "":
		return fmt.Errorf("the %s protocol's publishers need the app's id (pusher app id)", ProtocolPusher)
	case c.PublishBatch > 1:
		return fmt.Errorf("publish batch %d: the %s protocol triggers one event per request (POST /apps/ID/events)", c.PublishBatch, ProtocolPusher)
	case c.IdempotencyKeys:
		return fmt.Errorf("idempotency keys: the Pusher HTTP API has none")
	}
	for _, one := range c.publishURLs {
		if u, err := url.Parse(one); err == nil && (strings.Trim(u.Path, "/") != "" || u.RawQuery != "") {
			return fmt.Errorf("publish url %q: with the %s protocol, the HTTP API's server only (http://HOST:PORT): the bench posts to /apps/ID/events", one, ProtocolPusher)
		}
	}
	return nil
}

// validPusherChannel checks a public channel's name by Pusher's rules.
func validPusherChannel(name string) error {
	switch {
	case len(name) > pusherMaxName || !pusherChannelRE.MatchString(name):
		return fmt.Errorf("channel %q: not a Pusher channel name (at most %d of [A-Za-z0-9_-=@,.;])", name, pusherMaxName)
	case strings.HasPrefix(name, "private-") || strings.HasPrefix(name, "presence-"):
		return fmt.Errorf("channel %q: the bench subscribes to public channels only (a private or presence one needs an auth signature per connection)", name)
	}
	return nil
}

// pusherURL is the URL the idx-th connection dials: its server's (URL
// spread round robin), the path replaced by /app/KEY, its query kept and
// the protocol's added.
func (c Config) pusherURL(idx int) string {
	u := c.URL
	if len(c.urls) > 0 {
		u = c.urls[idx%len(c.urls)]
	}
	p, err := url.Parse(u) // checked by checkTargets
	if err != nil {
		return u
	}
	p.Path, p.RawPath = "/app/"+c.PusherKey, ""
	if p.RawQuery != "" {
		p.RawQuery += "&"
	}
	p.RawQuery += pusherQuery
	return p.String()
}

// pusherEventsURL is the HTTP API's events URL on the server of u (a
// PublishURL, checked by fillPusher).
func (c Config) pusherEventsURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	p.Path, p.RawPath, p.RawQuery = pusherEventsPath(c.PusherAppID), "", ""
	return p.String()
}

func pusherEventsPath(appID string) string { return "/apps/" + appID + "/events" }

// pusherSession is what dialPusher learned of a connection.
type pusherSession struct {
	socketID    string
	activity    time.Duration // the server's activity_timeout
	established time.Time     // when connection_established was read
}

// pusherMaxSetup bounds the events a server may send before it says the
// subscription succeeded (subscription counts, a cache miss…).
const pusherMaxSetup = 16

// dialPusher opens the idx-th connection (offering permessage-deflate if
// offerDeflate) and subscribes it to channel: the WebSocket handshake, connection_established, pusher:subscribe, and
// subscription_succeeded, within ConnectTimeout. A pusher:error (or a
// close) instead is the error, with its code and message. It returns the
// bytes read after subscription_succeeded, to be parsed first.
func dialPusher(ctx context.Context, cfg Config, idx int, channel string, offerDeflate bool) (nc net.Conn, extra []byte, deflate bool, s pusherSession, err error) {
	u := cfg.pusherURL(idx)
	if nc, extra, deflate, err = dial(ctx, cfg, idx, u, offerDeflate); err != nil {
		return nil, nil, false, s, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) }) // a cancelled run stops waiting
	defer stop()
	fail := func(err error) (net.Conn, []byte, bool, pusherSession, error) {
		nc.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
		}
		return nil, nil, false, s, fmt.Errorf("bench: %s: %w", u, err)
	}
	rd := &eventReader{nc: nc, buf: extra, parser: frame.Parser{MaxMessage: maxServerFrame, Deflate: deflate}}
	ev, err := rd.next()
	if err != nil {
		return fail(err)
	}
	if s, err = established(ev); err != nil {
		return fail(err)
	}
	sub, _ := json.Marshal(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"auth": "", "channel": channel}})
	if _, err := nc.Write(frame.CompileMasked(ws.OpText, sub)); err != nil {
		return fail(err)
	}
	for n := 0; ; n++ {
		if n == pusherMaxSetup {
			return fail(fmt.Errorf("no pusher_internal:subscription_succeeded for %q in the first %d events after the subscribe", channel, n))
		}
		if ev, err = rd.next(); err != nil {
			return fail(err)
		}
		if ok, err := subscribed(ev, channel); err != nil {
			return fail(err)
		} else if ok {
			break
		}
		if ev.Event == "pusher:ping" {
			if _, err := nc.Write(frame.CompileMasked(ws.OpText, pusherPong)); err != nil {
				return fail(err)
			}
		}
	}
	if !stop() {
		return fail(ctx.Err())
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return nc, rd.buf, deflate, s, nil
}

// pusherJSON is an event as encoding/json reads it: the setup path, once
// per connection, where cost does not matter and strictness does.
type pusherJSON struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

// inner is the event's data as JSON: the text of its string (what Pusher
// sends), or the value itself (pusher:error's object; pusher-js takes
// either).
func (e pusherJSON) inner() []byte {
	var s string
	if json.Unmarshal(e.Data, &s) == nil {
		return []byte(s)
	}
	return e.Data
}

// pusherErr is a pusher:error (or pusher:subscription_error) as an error.
func (e pusherJSON) err() error {
	var d struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
		Error   string `json:"error"`  // subscription_error's
		Status  int    `json:"status"` // subscription_error's
	}
	_ = json.Unmarshal(e.inner(), &d)
	code := "null"
	if d.Code != nil {
		code = strconv.Itoa(*d.Code)
	}
	if e.Event == "pusher:subscription_error" {
		return fmt.Errorf("%s on %q: status %d: %s", e.Event, e.Channel, d.Status, cmp.Or(d.Error, string(e.Data)))
	}
	return fmt.Errorf("%s %s: %s", e.Event, code, cmp.Or(d.Message, string(e.Data)))
}

var socketIDRE = regexp.MustCompile(`^\d+\.\d+$`)

// established reads the server's first event: connection_established,
// with a socket_id as the SDKs check it and a non-zero activity_timeout
// (pusher-js throws without one), or a pusher:error.
func established(ev pusherJSON) (pusherSession, error) {
	s := pusherSession{established: time.Now()}
	switch ev.Event {
	case "pusher:connection_established":
	case "pusher:error":
		return s, ev.err()
	default:
		return s, fmt.Errorf("the first event is %q, want pusher:connection_established", ev.Event)
	}
	var d struct {
		SocketID        string   `json:"socket_id"`
		ActivityTimeout *float64 `json:"activity_timeout"`
	}
	if err := json.Unmarshal(ev.inner(), &d); err != nil {
		return s, fmt.Errorf("pusher:connection_established: data %s: %w", ev.Data, err)
	}
	switch {
	case !socketIDRE.MatchString(d.SocketID):
		return s, fmt.Errorf("pusher:connection_established: socket_id %q: want digits.digits", d.SocketID)
	case d.ActivityTimeout == nil || *d.ActivityTimeout <= 0:
		return s, fmt.Errorf("pusher:connection_established: data %s: no activity_timeout (pusher-js refuses the handshake)", ev.Data)
	}
	s.socketID, s.activity = d.SocketID, time.Duration(*d.ActivityTimeout*float64(time.Second))
	return s, nil
}

// subscribed reports whether ev says the subscription to channel
// succeeded; a pusher:error or subscription_error is the error.
func subscribed(ev pusherJSON, channel string) (bool, error) {
	switch ev.Event {
	case "pusher_internal:subscription_succeeded":
		if ev.Channel != channel {
			return false, fmt.Errorf("pusher_internal:subscription_succeeded for channel %q, subscribed to %q", ev.Channel, channel)
		}
		return true, nil
	case "pusher:error", "pusher:subscription_error":
		return false, ev.err()
	}
	return false, nil
}

// eventReader reads a connection's Pusher events one at a time, blocking
// (the setup path).
type eventReader struct {
	nc     net.Conn
	buf    []byte // read, not yet parsed
	parser frame.Parser
	msg    []byte // the message stopOne kept
	rerr   error
}

// errOne stops a parse after its first message.
var errOne = errors.New("bench: one message")

func (e *eventReader) Message(_ ws.OpCode, p []byte) error {
	e.msg = append(e.msg[:0], p...)
	return errOne
}

func (e *eventReader) Ping(p []byte) { _, _ = e.nc.Write(frame.CompileMasked(ws.OpPong, p)) }
func (e *eventReader) Pong([]byte)   {}

// next returns the next event; a close from the server, a frame that
// breaks RFC 6455 or a message that is not an event is the error.
func (e *eventReader) next() (pusherJSON, error) {
	for {
		used, err := e.parser.ParseServer(e.buf, e)
		e.buf = e.buf[:copy(e.buf, e.buf[used:])]
		switch {
		case err == errOne:
			var ev pusherJSON
			if err := json.Unmarshal(e.msg, &ev); err != nil || ev.Event == "" {
				return ev, fmt.Errorf("not a Pusher event: %q", e.msg)
			}
			return ev, nil
		case err != nil:
			if ce, ok := frame.AsClose(err); ok && ce.Peer {
				return pusherJSON{}, fmt.Errorf("the server closed the connection: %d %q", ce.Code, ce.Reason)
			}
			return pusherJSON{}, err
		case e.rerr != nil:
			return pusherJSON{}, e.rerr
		}
		if len(e.buf) == cap(e.buf) {
			e.buf = append(e.buf, make([]byte, max(e.parser.Need()-len(e.buf), 4<<10))...)[:len(e.buf)]
		}
		var n int
		n, e.rerr = e.nc.Read(e.buf[len(e.buf):cap(e.buf)])
		e.buf = e.buf[:len(e.buf)+n]
	}
}

// Frames a Pusher client sends on its own.
var (
	pusherPing = []byte(`{"event":"pusher:ping","data":{}}`)
	pusherPong = []byte(`{"event":"pusher:pong","data":{}}`)
)

// pusherKind is what an event is to a receiver.
type pusherKind uint8

const (
	pusherApp      pusherKind = iota // an app event: its data is a message
	pusherPingKind                   // pusher:ping: answer pusher:pong
	pusherError                      // pusher:error
	pusherOther                      // the protocol's others (pong, subscription_succeeded, counts…): read, not counted
)

// decodePusherEvent reads the event b, {"event":"NAME","channel":…,
// "data":…}, with the envelope's scanner: what it is and, for an app event
// or an error, its data: the string's value (aliasing b, or decoded into
// dst, returned grown for reuse), or any other value as it is. An event
// without data has nil data. It is a strict JSON parser for one object,
// held to encoding/json by FuzzPusherEvent; valid JSON that is no event
// (not an object, no event name, a name that is no string, a member given
// twice) is errEnvelope.
func decodePusherEvent(b, dst []byte) (kind pusherKind, data, out []byte, err error) {
	d := pusherDecoder{scanner: scanner{b: b}, dst: dst}
	d.space()
	if !d.peek('{') {
		if err := d.value(0); err != nil {
			return 0, nil, d.dst, err
		}
		d.shape = errEnvelope
	} else if err := d.object(d.member); err != nil {
		return 0, nil, d.dst, err
	}
	if d.space(); d.i != len(d.b) {
		return 0, nil, d.dst, errJSON
	}
	if d.shape == nil && d.event == nil {
		d.shape = errEnvelope
	}
	if d.shape != nil {
		return 0, nil, d.dst, d.shape
	}
	kind = pusherApp
	if ev := d.event; bytes.HasPrefix(ev, []byte("pusher:")) || bytes.HasPrefix(ev, []byte("pusher_internal:")) {
		switch string(ev) {
		case "pusher:ping":
			kind = pusherPingKind
		case "pusher:error":
			kind = pusherError
		default:
			kind, d.data = pusherOther, nil
		}
	}
	return kind, d.data, d.dst, nil
}

// pusherDecoder is one decodePusherEvent in progress.
type pusherDecoder struct {
	scanner
	dst   []byte
	event []byte // the name, unescaped (nil: none yet)
	data  []byte
	seen  uint8 // of seenEvent, seenData, seenChannel
	shape error // valid JSON that is no event: said once the whole is read
}

const (
	seenEvent uint8 = 1 << iota
	seenPusherData
	seenChannel
)

// member reads key's value.
func (d *pusherDecoder) member(key []byte) error {
	var bit uint8
	switch string(key) {
	case "event":
		bit = seenEvent
	case "data":
		bit = seenPusherData
	case "channel":
		bit = seenChannel
	default:
		return d.value(1)
	}
	if d.seen&bit != 0 {
		d.shape = errEnvelope
	}
	d.seen |= bit
	switch {
	case bit == seenPusherData && d.peek('"'):
		val, dst, err := d.strDecode(d.dst[:0])
		d.dst, d.data = dst, val
		return err
	case bit == seenPusherData:
		start := d.i
		if err := d.value(1); err != nil {
			return err
		}
		d.data = d.b[start:d.i]
		return nil
	case !d.peek('"'):
		if err := d.value(1); err != nil {
			return err
		}
		d.shape = errEnvelope // event and channel are strings
		return nil
	}
	raw, esc, err := d.str()
	if err != nil {
		return err
	}
	if bit == seenEvent {
		if esc {
			raw = unescape(nil, raw)
		}
		d.event = raw
		if d.event == nil {
			d.event = []byte{}
		}
	}
	return nil
}

// appendPusherEvent appends the HTTP API's body for one event to dst:
// {"name":NAME,"channel":CHANNEL,"data":"DATA"}, data as a JSON string.
func appendPusherEvent(dst []byte, name, channel string, data []byte) []byte {
	dst = append(dst, `{"name":`...)
	dst = hub.AppendJSONString(dst, name)
	dst = append(dst, `,"channel":`...)
	dst = hub.AppendJSONString(dst, channel)
	dst = append(dst, `,"data":`...)
	dst = hub.AppendJSONString(dst, string(data)) // the server's own encoder; a publisher's rate, not a hot path
	return append(dst, '}')
}

// pusherSigner signs the HTTP API's requests as the Pusher server SDKs
// do: the query auth_key, auth_timestamp, auth_version=1.0 and body_md5
// (hex MD5 of the body), sorted and joined unescaped, signed with
// auth_signature = hex HMAC-SHA256(secret, "POST\n" + path + "\n" + query).
type pusherSigner struct {
	key, secret string
	path        string // /apps/ID/events
}

// query is the signed query of a POST of body at unix time now.
func (s pusherSigner) query(body []byte, now int64) string {
	sum := md5.Sum(body)
	q := "auth_key=" + s.key + "&auth_timestamp=" + strconv.FormatInt(now, 10) +
		"&auth_version=1.0&body_md5=" + hex.EncodeToString(sum[:])
	mac := hmac.New(sha256.New, []byte(s.secret))
	mac.Write([]byte("POST\n" + s.path + "\n" + q))
	return q + "&auth_signature=" + hex.EncodeToString(mac.Sum(nil))
}
