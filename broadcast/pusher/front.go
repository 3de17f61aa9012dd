package pusher

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unique"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/internal/lograte"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// Config configures the front door. The zero value of each field says
// what zero means.
type Config struct {
	Apps *Apps
	// ActivityTimeout is the activity_timeout clients are told, in whole
	// seconds: a client that received nothing for that long pings. Zero
	// means 30s.
	ActivityTimeout time.Duration
	// MaxPayload bounds an event's data (API and client events), in
	// bytes; over it is refused (413, or pusher:error 4301). Zero means
	// 10 KiB, Pusher's own limit.
	MaxPayload int
	// MaxChannels bounds one connection's subscriptions. Zero means 100.
	MaxChannels int
	// MaxPresenceMembers bounds the users of one presence channel (on
	// this node). Zero means 100, Pusher's own limit.
	MaxPresenceMembers int
	// MaxUserInfo bounds a presence member's user_info, in bytes. Zero
	// means 1 KiB.
	MaxUserInfo int
	// ClientEventRate limits each connection's client events per second
	// (bursts of the same); over it is pusher:error 4301. Zero means 10.
	ClientEventRate float64
	// SubscribeRate limits each connection's subscribes per second, in
	// bursts of MaxChannels (what pusher-js sends at once when it
	// reconnects); over it is pusher:subscription_error LimitReached. A
	// client that toggles a presence subscription would otherwise make
	// every member's client and the webhook endpoint pay. Zero means 10.
	SubscribeRate float64
	// ReceiveOnly refuses every client event (-client-publish=false).
	ReceiveOnly bool
	// MaxBatch bounds batch_events. Zero means 10.
	MaxBatch int
	// MaxTriggerChannels bounds the channels of one event. Zero: 100.
	MaxTriggerChannels int
	// Webhook configures the webhook senders.
	Webhook WebhookConfig
	Logger  *slog.Logger
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.ActivityTimeout <= 0 {
		c.ActivityTimeout = 30 * time.Second
	}
	def(&c.MaxPayload, 10<<10)
	def(&c.MaxChannels, 100)
	def(&c.MaxPresenceMembers, 100)
	def(&c.MaxUserInfo, 1<<10)
	def(&c.MaxBatch, 10)
	def(&c.MaxTriggerChannels, 100)
	if c.ClientEventRate <= 0 {
		c.ClientEventRate = 10
	}
	if c.SubscribeRate <= 0 {
		c.SubscribeRate = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Node is what the front door needs of its server.
type Node interface {
	// Hub is where connections subscribe.
	Hub() *hub.Hub
	// PublishEvent publishes an API event and returns once it is taken
	// (in a tier: acknowledged by the stream).
	PublishEvent(channel string, kind hub.Kind, payload []byte, meta hub.Meta) error
	// PublishClient publishes a client event the way a client's message
	// is (in a tier, without waiting for the acknowledgement).
	PublishClient(channel string, kind hub.Kind, payload []byte, meta hub.Meta) error
}

// Front is the Pusher front door of one server. Create it with New.
type Front struct {
	cfg    Config
	apps   *Apps
	node   Node
	log    *slog.Logger
	nodeID uint64 // the first part of every socket_id here

	mu       sync.Mutex
	presence map[string]*roster // fanout channel → its members here; guarded by mu
	occupied map[string]int     // fanout channel → Pusher subscriptions here; guarded by mu
	conns    map[*App]int       // connections per app; guarded by mu

	members members
	hooks   map[*App]*webhooks
	m       metrics
	logRate *lograte.Limiter

	established []byte // the part of connection_established before the socket id
	pong        []byte
}

// New makes the front door of node.
func New(cfg Config, node Node) (*Front, error) {
	cfg = cfg.withDefaults()
	if cfg.Apps == nil {
		return nil, errors.New("pusher: no apps")
	}
	f := &Front{
		cfg: cfg, apps: cfg.Apps, node: node, log: cfg.Logger,
		nodeID:   uint64(rand.Uint32N(1<<31-1) + 1),
		presence: make(map[string]*roster),
		occupied: make(map[string]int),
		conns:    make(map[*App]int),
		hooks:    make(map[*App]*webhooks),
		logRate:  lograte.New(5, 10),
		pong:     textFrame(`{"event":"pusher:pong","data":"{}"}`),
	}
	f.m.init()
	f.members.init()
	for _, a := range cfg.Apps.List() {
		if a.WebhookURL != "" {
			w, err := newWebhooks(a, cfg.Webhook, cfg.Logger, &f.m)
			if err != nil {
				return nil, err
			}
			f.hooks[a] = w
		}
	}
	go f.runMembers()
	return f, nil
}

// Close stops the webhook senders, after trying, until deadline, to send
// what they hold.
func (f *Front) Close(deadline time.Time) {
	f.stopMembers() // the last leaves' webhooks queued first
	for _, w := range f.hooks {
		w.close(deadline)
	}
}

// NodeID is the first part of this node's socket_ids.
func (f *Front) NodeID() uint64 { return f.nodeID }

// Exclude maps a socket_id to the id of this node's connection it names
// (hub.Meta.Exclude); 0 when it is another node's or not one.
func (f *Front) Exclude(socketID string) uint64 {
	node, conn, ok := strings.Cut(socketID, ".")
	if !ok || node != strconv.FormatUint(f.nodeID, 10) {
		return 0
	}
	id, _ := strconv.ParseUint(conn, 10, 64)
	return id
}

func (f *Front) socketID(c *wsconn.Conn) string {
	return strconv.FormatUint(f.nodeID, 10) + "." + strconv.FormatUint(c.ID(), 10)
}

// Refusal is a connection the front door turns away once it is upgraded:
// the pusher:error to send, then the close with the same code.
type Refusal struct {
	Code    ws.StatusCode
	Message string
}

// Frames are the refusal's pusher:error and close frames.
func (r *Refusal) Frames() (errFrame, closeFrame []byte) {
	return errorFrame(int(r.Code), r.Message), frame.Close(r.Code, r.Message)
}

// Open decides about a connection at /app/{key}?protocol=N, from its
// request line: its app, or the refusal (unknown app 4001, a protocol
// version it does not speak 4007/4008). Hold takes the app's quota once
// the server admitted it.
func (f *Front) Open(key, protocol string) (*App, *Refusal) {
	app := f.apps.ByKey(key)
	switch {
	case app == nil:
		f.m.refusals.WithLabelValues("unknown_app").Inc()
		return nil, &Refusal{4001, fmt.Sprintf("App key %.40s not in this cluster", key)}
	case protocol == "":
		f.m.refusals.WithLabelValues("protocol").Inc()
		return nil, &Refusal{4008, "No protocol version supplied"}
	}
	if v, err := strconv.Atoi(protocol); err != nil || v < 5 || v > 7 {
		f.m.refusals.WithLabelValues("protocol").Inc()
		return nil, &Refusal{4007, fmt.Sprintf("Unsupported protocol version %.10s (5 to 7)", protocol)}
	}
	return app, nil
}

// Hold counts an admitted connection against its app's max_connections
// (4004 over it), once its handshake is complete: a client that stalls
// its handshake holds no quota. Release gives the hold back: Closed does,
// or the handshake when the connection never started.
func (f *Front) Hold(app *App) *Refusal {
	f.mu.Lock()
	defer f.mu.Unlock()
	if app.MaxConnections > 0 && f.conns[app] >= app.MaxConnections {
		f.m.refusals.WithLabelValues("app_quota").Inc()
		return &Refusal{4004, fmt.Sprintf("App is over its connection quota (%d)", app.MaxConnections)}
	}
	f.conns[app]++
	return nil
}

// Release gives back a Hold.
func (f *Front) Release(app *App) {
	f.mu.Lock()
	f.conns[app]--
	f.mu.Unlock()
}

// OverCapacity is the refusal of a connection the server has no room for
// (4100: pusher-js retries in a second).
func (f *Front) OverCapacity(why string) *Refusal {
	f.m.refusals.WithLabelValues("over_capacity").Inc()
	return &Refusal{4100, "Over capacity: " + why}
}

// State is a connection's per-connection state (wsconn Options.ProtoState).
// It counts the connection open; its Closed counts it gone.
func (f *Front) State(app *App) any {
	f.m.connections.Inc()
	return &connState{app: app}
}

// connState is what the front door keeps per connection.
type connState struct {
	app *App

	mu      sync.Mutex
	subs    []*subState   // guarded by mu
	limiter *rate.Limiter // client events; made on the first
	subRate *rate.Limiter // subscribes past the first burst; made then
	subsIn  int32         // subscribes so far, up to the first burst
	closed  bool          // guarded by mu: Closed ran
}

// subState is one subscription of a connection.
type subState struct {
	channel string          // the fanout channel: the app's prefix, then the Pusher name
	member  *presenceMember // presence only: the member it is
	plen    uint8           // the prefix's length (at most MaxPrefix)
	active  bool            // guarded by connState.mu: linked, and counted in occupied (and the roster)
}

// name is the subscription's Pusher channel name.
func (s *subState) name() string { return s.channel[s.plen:] }

// presenceMember is who a presence subscription is (its channel_data).
type presenceMember struct {
	user string
	info json.RawMessage
}

// userID is the presence user the subscription is, "" for none.
func (s *subState) userID() string {
	if s.member == nil {
		return ""
	}
	return s.member.user
}

func (cs *connState) find(name string) int {
	for i := range cs.subs {
		if cs.subs[i].name() == name {
			return i
		}
	}
	return -1
}

// Welcome implements wsconn.Protocol.
func (f *Front) Welcome(c *wsconn.Conn) []byte {
	data := `{"socket_id":"` + f.socketID(c) + `","activity_timeout":` + strconv.Itoa(int(max(f.cfg.ActivityTimeout/time.Second, 1))) + `}`
	return eventFrame("pusher:connection_established", "", data)
}

// inbound is a message from a client.
type inbound struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
}

type subscribeData struct {
	Channel     string `json:"channel"`
	Auth        string `json:"auth"`
	ChannelData string `json:"channel_data"`
}

// Message implements wsconn.Protocol.
func (f *Front) Message(c *wsconn.Conn, op ws.OpCode, payload []byte) error {
	cs := c.ProtoState().(*connState)
	var m inbound
	if op != ws.OpText || json.Unmarshal(payload, &m) != nil || m.Event == "" {
		f.m.badMessages.Inc()
		c.Send(errorFrame(4200, `Invalid message format: want a JSON text frame {"event":...,"data":...}`))
		return nil
	}
	switch {
	case m.Event == "pusher:ping":
		c.Send(f.pong)
	case m.Event == "pusher:pong":
	case m.Event == "pusher:subscribe":
		f.subscribe(c, cs, m.Data)
	case m.Event == "pusher:unsubscribe":
		var d struct {
			Channel string `json:"channel"`
		}
		if err := decodeData(m.Data, &d); err == nil {
			f.unsubscribe(c, cs, d.Channel)
		}
	case m.Event == "pusher:signin":
		c.Send(errorFrame(4009, "User sign-in (pusher:signin) is not supported by this server"))
	case strings.HasPrefix(m.Event, "client-"):
		f.clientEvent(c, cs, &m)
	default:
		c.Send(errorFrame(4200, fmt.Sprintf("Unsupported event %.60q", m.Event)))
	}
	return nil
}

// decodeData reads a client message's data: an object, or a string that
// holds one (some clients send it so).
func decodeData(raw json.RawMessage, v any) error {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		raw = json.RawMessage(s)
	}
	return json.Unmarshal(raw, v)
}

func (f *Front) subscribe(c *wsconn.Conn, cs *connState, raw json.RawMessage) {
	var d subscribeData
	if err := decodeData(raw, &d); err != nil {
		c.Send(errorFrame(4200, "pusher:subscribe: data must be {\"channel\":...}"))
		return
	}
	name := d.Channel
	refuse := func(kind, why string, status int) {
		f.m.subErrors.WithLabelValues(kind).Inc()
		f.logRate.Warn(f.log, "pusher: subscription refused", "conn", c.ID(), "channel", name, "why", why)
		c.Send(subscriptionError(name, kind, why, status))
	}
	if err := validChannel(name); err != nil {
		refuse("InvalidChannel", err.Error(), 400)
		return
	}
	// Canonical copies (package unique): the connections on a channel
	// share its name's bytes, and the message they came in is let go.
	name = unique.Make(name).Value()
	channel := name
	if cs.app.Prefix != "" {
		channel = unique.Make(cs.app.Prefix + name).Value()
	}
	sub := &subState{channel: channel, plen: uint8(len(cs.app.Prefix))}
	if isPrivate(name) || isPresence(name) {
		if !checkChannelAuth(cs.app, f.socketID(c), name, d.ChannelData, d.Auth) {
			refuse("AuthError", fmt.Sprintf("Invalid signature: expected HMAC SHA256 hex digest of %s:%s%s with the app's secret, as key:signature", f.socketID(c), name, dataSuffix(d.ChannelData)), 401)
			return
		}
	}
	if isPresence(name) {
		user, info, err := f.member(d.ChannelData)
		if err != nil {
			refuse("InvalidChannelData", err.Error(), 400)
			return
		}
		sub.member = &presenceMember{user: user, info: info}
	}
	cs.mu.Lock()
	switch {
	case cs.find(name) >= 0:
		cs.mu.Unlock()
		return // subscribed already: pusher-js never asks twice
	case !f.subscribeAllowed(cs):
		cs.mu.Unlock()
		refuse("LimitReached", fmt.Sprintf("subscribing faster than %g/s", f.cfg.SubscribeRate), 4100)
		return
	case len(cs.subs) >= f.cfg.MaxChannels:
		cs.mu.Unlock()
		refuse("LimitReached", fmt.Sprintf("more than %d channels on one connection", f.cfg.MaxChannels), 4100)
		return
	}
	if sub.userID() != "" && !f.roomFor(channel, sub.userID()) {
		cs.mu.Unlock()
		refuse("LimitReached", fmt.Sprintf("presence channel is full: %d members", f.cfg.MaxPresenceMembers), 4100)
		return
	}
	cs.subs = append(cs.subs, sub)
	cs.mu.Unlock()
	f.node.Hub().Link(c, channel, func(ok bool) { f.linked(c, cs, sub, ok) })
}

// subscribeAllowed charges a subscribe to the connection's bucket of
// MaxChannels at SubscribeRate. The first MaxChannels (what a client
// sends as it connects) cost no limiter: most connections never make
// one, and an idle connection's bytes count. cs.mu is held.
func (f *Front) subscribeAllowed(cs *connState) bool {
	if cs.subRate == nil {
		if int(cs.subsIn) < f.cfg.MaxChannels {
			cs.subsIn++
			return true
		}
		// The burst is spent: from here on the rate, from an empty bucket.
		cs.subRate = rate.NewLimiter(rate.Limit(f.cfg.SubscribeRate), f.cfg.MaxChannels)
		cs.subRate.AllowN(time.Now(), f.cfg.MaxChannels)
	}
	return cs.subRate.Allow()
}

func dataSuffix(channelData string) string {
	if channelData == "" {
		return ""
	}
	return ":" + channelData
}

// member reads a presence subscription's channel_data: user_id (a string,
// or a number, as Laravel sends it) and user_info.
func (f *Front) member(channelData string) (user string, info json.RawMessage, err error) {
	var d struct {
		UserID   json.RawMessage `json:"user_id"`
		UserInfo json.RawMessage `json:"user_info"`
	}
	if err := json.Unmarshal([]byte(channelData), &d); err != nil {
		return "", nil, fmt.Errorf("channel_data %.80q: want JSON {\"user_id\":...,\"user_info\":...}", channelData)
	}
	switch {
	case len(d.UserID) > 0 && d.UserID[0] == '"':
		_ = json.Unmarshal(d.UserID, &user)
	case len(d.UserID) > 0 && (d.UserID[0] == '-' || d.UserID[0] >= '0' && d.UserID[0] <= '9'):
		user = string(d.UserID)
	}
	if user == "" {
		return "", nil, errors.New("channel_data has no user_id (a string or a number)")
	}
	if err := validName("user_id", user, 128); err != nil {
		return "", nil, err
	}
	switch {
	case len(d.UserInfo) > f.cfg.MaxUserInfo:
		return "", nil, fmt.Errorf("user_info is %d bytes, over %d", len(d.UserInfo), f.cfg.MaxUserInfo)
	}
	if len(d.UserInfo) == 0 {
		d.UserInfo = json.RawMessage("null")
	}
	return user, d.UserInfo, nil
}

func (f *Front) clientEvent(c *wsconn.Conn, cs *connState, m *inbound) {
	refuse := func(reason string, code int, why string) {
		f.m.clientRefused.WithLabelValues(reason).Inc()
		c.Send(errorFrame(code, why))
	}
	switch {
	case f.cfg.ReceiveOnly || !cs.app.clientEvents():
		refuse("disabled", 4301, "Client events are not enabled for this app")
		return
	case validName("event", m.Event, MaxEventName) != nil:
		refuse("event_name", 4301, validName("event", m.Event, MaxEventName).Error())
		return
	case !isPrivate(m.Channel) && !isPresence(m.Channel), isEncrypted(m.Channel):
		refuse("channel", 4301, "Client events are only for private and presence channels (not encrypted ones)")
		return
	case len(m.Data) > f.cfg.MaxPayload:
		refuse("too_big", 4301, fmt.Sprintf("The data content of this event is %d bytes, over %d", len(m.Data), f.cfg.MaxPayload))
		return
	}
	cs.mu.Lock()
	i := cs.find(m.Channel)
	var sub subState
	if i >= 0 {
		sub = *cs.subs[i]
	}
	if cs.limiter == nil {
		cs.limiter = rate.NewLimiter(rate.Limit(f.cfg.ClientEventRate), max(1, int(f.cfg.ClientEventRate)))
	}
	allowed := cs.limiter.Allow()
	cs.mu.Unlock()
	switch {
	case i < 0 || !sub.active:
		refuse("not_subscribed", 4301, fmt.Sprintf("Not subscribed to %.80q", m.Channel))
		return
	case !allowed:
		refuse("rate_limit", 4301, fmt.Sprintf("Client event rejected due to rate limit (%g/s)", f.cfg.ClientEventRate))
		return
	}
	data := m.Data
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	kind, payload, err := hub.FromJSON(data)
	if err != nil {
		refuse("invalid", 4301, "Client event data is not valid JSON")
		return
	}
	socket := f.socketID(c)
	meta := hub.Meta{Event: m.Event, Exclude: c.ID(), Socket: socket, UserID: sub.userID()}
	if err := f.node.PublishClient(sub.channel, kind, payload, meta); err != nil {
		refuse("publish", 4301, "Client event not published: "+err.Error())
		return
	}
	f.m.clientEvents.Inc()
	ev := webhookEvent{Name: "client_event", Channel: m.Channel, Event: m.Event, Data: string(data), SocketID: socket, UserID: sub.userID()}
	if kind == hub.KindText {
		ev.Data = string(payload)
	}
	f.hook(cs.app, ev)
}

func (f *Front) hook(app *App, ev webhookEvent) {
	if w := f.hooks[app]; w != nil {
		w.add(ev)
	}
}

func kindOf(name string) string {
	switch {
	case isPresence(name):
		return "presence"
	case isPrivate(name):
		return "private"
	}
	return "public"
}

// Frames.

func textFrame(s string) []byte { return frame.Compile(ws.OpText, []byte(s)) }

// eventFrame is {"event":E[,"channel":C],"data":"DATA"}: data, JSON,
// sent as a string, the way Pusher does.
func eventFrame(event, channel, data string) []byte {
	b := make([]byte, 0, 48+len(event)+len(channel)+len(data)*5/4)
	b = append(b, `{"event":`...)
	b = hub.AppendJSONString(b, event)
	if channel != "" {
		b = append(b, `,"channel":`...)
		b = hub.AppendJSONString(b, channel)
	}
	b = append(b, `,"data":`...)
	b = hub.AppendJSONString(b, data)
	b = append(b, '}')
	return frame.Compile(ws.OpText, b)
}

// errorFrame is pusher:error, its data an object (as Pusher sends it).
func errorFrame(code int, message string) []byte {
	if !utf8.ValidString(message) {
		message = strings.ToValidUTF8(message, "?")
	}
	b := []byte(`{"event":"pusher:error","data":{"code":`)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = hub.AppendJSONString(b, message)
	b = append(b, "}}"...)
	return frame.Compile(ws.OpText, b)
}

// subscriptionError is pusher:subscription_error on the channel (the
// form Laravel Echo's .error() and pusher-js's subscription_error see).
func subscriptionError(channel, kind, why string, status int) []byte {
	if !utf8.ValidString(channel) {
		channel = strings.ToValidUTF8(channel, "?")
	}
	b := []byte(`{"event":"pusher:subscription_error","channel":`)
	b = hub.AppendJSONString(b, channel)
	b = append(b, `,"data":{"type":`...)
	b = hub.AppendJSONString(b, kind)
	b = append(b, `,"error":`...)
	b = hub.AppendJSONString(b, why)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, "}}"...)
	return frame.Compile(ws.OpText, b)
}

func memberData(user string, info json.RawMessage) string {
	b := []byte(`{"user_id":`)
	b = hub.AppendJSONString(b, user)
	b = append(b, `,"user_info":`...)
	b = append(b, info...)
	return string(append(b, '}'))
}

// roster is one presence channel's members on this node: users, each
// with its info and its connections (a user in two tabs is one member).
type roster struct {
	users map[string]*user
}

type user struct {
	info  json.RawMessage
	conns []*wsconn.Conn
}

// join adds c as user; first reports whether the user is new.
func (r *roster) join(id string, info json.RawMessage, c *wsconn.Conn) (first bool) {
	u := r.users[id]
	if u == nil {
		u = &user{info: info}
		r.users[id] = u
		first = true
	}
	u.conns = append(u.conns, c)
	return first
}

// leave takes c out; last reports whether that was the user's last.
func (r *roster) leave(id string, c *wsconn.Conn) (last bool) {
	u := r.users[id]
	if u == nil {
		return false
	}
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	if len(u.conns) > 0 {
		return false
	}
	delete(r.users, id)
	return true
}

// connsBut is every connection of the roster's users other than id.
func (r *roster) connsBut(id string) []*wsconn.Conn {
	var out []*wsconn.Conn
	for uid, u := range r.users {
		if uid != id {
			out = append(out, u.conns...)
		}
	}
	return out
}

// snapshot is the presence data of subscription_succeeded.
func (r *roster) snapshot() string {
	b := []byte(`{"presence":{"ids":[`)
	i := 0
	for id := range r.users {
		if i > 0 {
			b = append(b, ',')
		}
		b = hub.AppendJSONString(b, id)
		i++
	}
	b = append(b, `],"hash":{`...)
	i = 0
	for id, u := range r.users {
		if i > 0 {
			b = append(b, ',')
		}
		b = hub.AppendJSONString(b, id)
		b = append(b, ':')
		b = append(b, u.info...)
		i++
	}
	b = append(b, `},"count":`...)
	b = strconv.AppendInt(b, int64(len(r.users)), 10)
	return string(append(b, "}}"...))
}

// PresenceUsers is the user ids of a presence channel's roster here.
func (f *Front) presenceUsers(channel string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.presence[channel]
	if r == nil {
		return nil
	}
	out := make([]string, 0, len(r.users))
	for id := range r.users {
		out = append(out, id)
	}
	return out
}

var _ wsconn.Protocol = (*Front)(nil)

// Signed reports whether a fanout channel is a private or presence
// channel of one of the apps: one a Pusher client needs a signature for,
// which a native client without a token must not get around.
func (f *Front) Signed(channel string) bool {
	for _, a := range f.apps.List() {
		if name, ok := a.owns(channel); ok && (isPrivate(name) || isPresence(name)) {
			return true
		}
	}
	return false
}

// Owns reports whether a fanout channel is one of the apps' Pusher
// channels (its name, less the app's prefix, a Pusher name).
func (f *Front) Owns(channel string) bool {
	for _, a := range f.apps.List() {
		if name, ok := a.owns(channel); ok && validChannel(name) == nil {
			return true
		}
	}
	return false
}
