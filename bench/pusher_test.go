package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// fakePusher is a small Pusher Channels server (protocol 7, public
// channels only), written for the bench's own tests on an independent
// WebSocket library (gorilla/websocket): clients at /app/KEY, the HTTP
// API's POST /apps/ID/events refused unless signed as Pusher's REST
// documentation says (checked here independently of pusherSigner). With
// cheat, its first subscriber gets every 10th event dropped, the 20th
// twice and the 30th and 31st swapped, warm-ups untouched: the bench must
// report exactly that.
type fakePusher struct {
	key, appID, secret string
	activity           any  // connection_established's activity_timeout (nil: none sent)
	cheat              bool // cheat on the first subscriber
	pingClients        bool // send every client pusher:ping once subscribed

	pings, pongs atomic.Int64 // pusher:ping and pusher:pong events clients sent
	refused      atomic.Int64 // API requests refused
	nextID       atomic.Int64

	mu    sync.Mutex
	subs  map[string][]*fakeConn // guarded by mu: channel -> subscribers
	first *fakeConn              // guarded by mu: the first to subscribe
	n     int                    // guarded by mu: counted events triggered so far
	held  []byte                 // guarded by mu: the 30th, sent after the 31st
}

type fakeConn struct {
	mu sync.Mutex
	ws *websocket.Conn
}

// pusherEv is an event on the wire; Data is a string but for
// pusher:error, whose data is an object.
type pusherEv struct {
	Event   string `json:"event"`
	Channel string `json:"channel,omitempty"`
	Data    any    `json:"data,omitempty"`
}

func (c *fakeConn) send(ev pusherEv) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteJSON(ev) // a trailing newline, as encoding/json's Encoder writes it
}

func (f *fakePusher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/apps/") {
		f.api(w, r)
		return
	}
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	c := &fakeConn{ws: conn}
	if r.URL.Path != "/app/"+f.key || r.URL.Query().Get("protocol") != "7" {
		c.send(pusherEv{Event: "pusher:error", Data: map[string]any{"code": 4001, "message": "App key " + strings.TrimPrefix(r.URL.Path, "/app/") + " does not exist"}})
		c.mu.Lock()
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "unknown app"))
		c.mu.Unlock()
		return
	}
	hello := map[string]any{"socket_id": fmt.Sprintf("%d.%d", 100+f.nextID.Add(1), 7)}
	if f.activity != nil {
		hello["activity_timeout"] = f.activity
	}
	b, _ := json.Marshal(hello)
	c.send(pusherEv{Event: "pusher:connection_established", Data: string(b)})
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var ev struct {
			Event string `json:"event"`
			Data  struct {
				Channel string `json:"channel"`
			} `json:"data"`
		}
		if json.Unmarshal(msg, &ev) != nil {
			return
		}
		switch ev.Event {
		case "pusher:ping":
			f.pings.Add(1)
			c.send(pusherEv{Event: "pusher:pong", Data: "{}"})
		case "pusher:pong":
			f.pongs.Add(1)
		case "pusher:subscribe":
			f.mu.Lock()
			if f.subs == nil {
				f.subs = map[string][]*fakeConn{}
			}
			f.subs[ev.Data.Channel] = append(f.subs[ev.Data.Channel], c)
			if f.first == nil {
				f.first = c
			}
			f.mu.Unlock()
			c.send(pusherEv{Event: "pusher_internal:subscription_succeeded", Channel: ev.Data.Channel, Data: "{}"})
			if f.pingClients {
				c.send(pusherEv{Event: "pusher:ping", Data: "{}"})
			}
		}
	}
}

// api serves POST /apps/ID/events: signature, body_md5, key and
// timestamp checked, then the event sent to the channel's subscribers.
func (f *fakePusher) api(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if why := f.check(r, body); why != "" {
		f.refused.Add(1)
		http.Error(w, why, http.StatusUnauthorized)
		return
	}
	var ev struct {
		Name     string   `json:"name"`
		Channel  string   `json:"channel"`
		Channels []string `json:"channels"`
		Data     string   `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Name == "" {
		http.Error(w, fmt.Sprintf("bad body %q: %v", body, err), http.StatusBadRequest)
		return
	}
	if ev.Channel != "" {
		ev.Channels = append(ev.Channels, ev.Channel)
	}
	for _, ch := range ev.Channels {
		f.trigger(pusherEv{Event: ev.Name, Channel: ch, Data: ev.Data})
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

// check says what is wrong with a request's signature, or "".
func (f *fakePusher) check(r *http.Request, body []byte) string {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return err.Error()
	}
	var keys []string
	for k := range q {
		if k != "auth_signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+q.Get(k))
	}
	mac := hmac.New(sha256.New, []byte(f.secret))
	mac.Write([]byte(r.Method + "\n" + r.URL.Path + "\n" + strings.Join(parts, "&")))
	sum := md5.Sum(body)
	ts, _ := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/apps/"+f.appID+"/events":
		return "no such path: " + r.Method + " " + r.URL.Path
	case q.Get("auth_key") != f.key:
		return "unknown auth_key"
	case q.Get("auth_version") != "1.0":
		return "auth_version: want 1.0"
	case q.Get("body_md5") != hex.EncodeToString(sum[:]):
		return "body_md5 does not match"
	case time.Since(time.Unix(ts, 0)).Abs() > 600*time.Second:
		return "stale auth_timestamp"
	case !hmac.Equal([]byte(q.Get("auth_signature")), []byte(hex.EncodeToString(mac.Sum(nil)))):
		return "invalid signature"
	}
	return ""
}

func (f *fakePusher) trigger(ev pusherEv) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data := []byte(ev.Data.(string))
	subs := f.subs[ev.Channel]
	if pub, _, _, err := parsePayload(data); !f.cheat || (err == nil && pub == warmPub) {
		for _, c := range subs {
			c.send(ev)
		}
		return
	}
	k := f.n
	f.n++
	for _, c := range subs {
		if c != f.first {
			c.send(ev)
			continue
		}
		switch {
		case k%10 == 9: // dropped
		case k == 20:
			c.send(ev)
			c.send(ev)
		case k == 30:
			f.held = data
		case k == 31:
			c.send(ev)
			c.send(pusherEv{Event: ev.Event, Channel: ev.Channel, Data: string(f.held)})
		default:
			c.send(ev)
		}
	}
}

// startPusher serves f and returns its WebSocket and HTTP base URLs.
func startPusher(t *testing.T, f *fakePusher) (wsURL, apiURL string) {
	t.Helper()
	if f.key == "" {
		f.key, f.appID, f.secret = "key1", "42", "s3cret"
	}
	hs := httptest.NewServer(f)
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", hs.URL
}

func pusherConfig(f *fakePusher, wsURL, apiURL string) Config {
	return Config{
		Scenario: ScenarioFanout, URL: wsURL, Conns: 5, Publishers: 1, Channel: "bench-1",
		Messages: 100, Rate: 2000, Duration: time.Minute, Drain: 3 * time.Second,
		Protocol: ProtocolPusher, PusherKey: f.key, PusherAppID: f.appID, PusherSecret: f.secret,
		PublishURL: apiURL,
	}
}

// Pusher's REST documentation's worked example: key 278d425bdf160c739803,
// secret 7ad3773142a6692b25b8, app 3, at 1353088179, this body: the
// body_md5 and auth_signature it publishes.
func TestPusherSignatureWorkedExample(t *testing.T) {
	s := pusherSigner{key: "278d425bdf160c739803", secret: "7ad3773142a6692b25b8", path: pusherEventsPath("3")}
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	got := s.query(body, 1353088179)
	want := "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0" +
		"&body_md5=ec365a775a4cd0599faeb73354201b6f" +
		"&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	if got != want {
		t.Fatalf("signed query\n%s\nwant\n%s", got, want)
	}
}

// Through the Pusher protocol as through the native one, the bench
// reports exactly what the server did: against a server that drops every
// 10th event to one subscriber, sends one twice and swaps two, 10 lost, 1
// duplicate and 1 reordered; every subscription counted; every API
// request signed well enough for a server that checks.
func TestPusherReportsExactlyWhatTheServerDid(t *testing.T) {
	f := &fakePusher{activity: 120, cheat: true}
	wsURL, apiURL := startPusher(t, f)
	cfg := pusherConfig(f, wsURL, apiURL)
	cfg.ConnectWorkers = 1 // the first receiver to subscribe is the cheated one
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := res.Fanout
	if res.Connect.Connected != 5 || res.Connect.Joined != 5 || fs.Sent != 100 || fs.Receivers != 5 || fs.Expected != 500 {
		t.Fatalf("connected %d joined %d sent %d receivers %d expected %d; want 5, 5, 100, 5, 500",
			res.Connect.Connected, res.Connect.Joined, fs.Sent, fs.Receivers, fs.Expected)
	}
	if fs.Lost != 10 || fs.Duplicates != 1 || fs.Reordered != 1 || fs.Received != 490 || fs.Foreign != 0 || fs.Corrupt != 0 {
		t.Fatalf("lost %d dups %d reordered %d received %d foreign %d corrupt %d; want 10, 1, 1, 490, 0, 0",
			fs.Lost, fs.Duplicates, fs.Reordered, fs.Received, fs.Foreign, fs.Corrupt)
	}
	if fs.Latency.Count != 490 || len(res.PublisherErrors) != 0 || res.ReceiverErrors != 0 {
		t.Fatalf("latency samples %d (want 490), publisher errors %v, receiver errors %d (%s)", fs.Latency.Count, res.PublisherErrors, res.ReceiverErrors, res.ReceiverError)
	}
	if n := f.refused.Load(); n != 0 || fs.PublishRequests != 100+res.WarmupSent {
		t.Fatalf("%d requests refused, %d answered; want none refused, one per message and warm-up (%d)", n, fs.PublishRequests, 100+res.WarmupSent)
	}
}

// JSON payloads travel as Pusher SDKs send objects, a JSON string whose
// quotes are escaped on the wire; in two child processes, which never see
// the secret, every delivery is counted once.
func TestPusherJSONPayloadsInTwoProcesses(t *testing.T) {
	f := &fakePusher{activity: 120}
	wsURL, apiURL := startPusher(t, f)
	cfg := pusherConfig(f, wsURL, apiURL)
	cfg.Conns, cfg.ConnsPerProc, cfg.Payload, cfg.Size, cfg.Messages = 6, 3, PayloadJSON, 300, 40
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := res.Fanout
	if res.Procs != 2 || res.Connect.Joined != 6 || fs.Expected != 240 || fs.Received != 240 || fs.Lost != 0 || fs.Duplicates != 0 || fs.Foreign != 0 || fs.Corrupt != 0 {
		t.Fatalf("procs %d joined %d expected %d received %d lost %d dups %d foreign %d corrupt %d; want 2, 6, 240, 240 and no faults",
			res.Procs, res.Connect.Joined, fs.Expected, fs.Received, fs.Lost, fs.Duplicates, fs.Foreign, fs.Corrupt)
	}
}

// A connection the server refuses at the handshake, or whose handshake
// lacks what pusher-js needs, fails to connect, and the result says why.
func TestPusherHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *fakePusher
		key  string
		want string
	}{
		{"unknown app", &fakePusher{activity: 120}, "nokey", "pusher:error 4001: App key nokey does not exist"},
		{"no activity timeout", &fakePusher{}, "", "no activity_timeout"},
		{"zero activity timeout", &fakePusher{activity: 0}, "", "no activity_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wsURL, apiURL := startPusher(t, tc.f)
			cfg := pusherConfig(tc.f, wsURL, apiURL)
			cfg.Scenario, cfg.Conns, cfg.ConnectRetries, cfg.Hold = ScenarioConnect, 2, 1, time.Millisecond
			if tc.key != "" {
				cfg.PusherKey = tc.key
			}
			_, err := Run(context.Background(), cfg, nil)
			if !errors.Is(err, ErrNoConnection) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want no connection, because of %q", err, tc.want)
			}
		})
	}
}

// Receivers keep their connections alive as pusher-js does: pusher:ping
// after activity_timeout of silence, pusher:pong for the server's ping.
func TestPusherKeepAlive(t *testing.T) {
	f := &fakePusher{activity: 1, pingClients: true}
	wsURL, apiURL := startPusher(t, f)
	cfg := pusherConfig(f, wsURL, apiURL)
	cfg.Scenario, cfg.Conns = ScenarioConnect, 3
	cfg, err := cfg.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := newRecvPool(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.close()
	pool.connectAll(context.Background(), 3, 0, 0, 0)
	if n := pool.connected.Load(); n != 3 || pool.joined.Load() != 3 {
		t.Fatalf("%d connected, %d joined (%s); want 3, 3", n, pool.joined.Load(), pool.firstErr.text())
	}
	waitFor(t, "a pusher:pong from each receiver", func() bool { return f.pongs.Load() >= 3 })
	waitFor(t, "a pusher:ping from each receiver, silent for its activity_timeout", func() bool { return f.pings.Load() >= 3 })
}

func TestPusherConfig(t *testing.T) {
	base := Config{Scenario: ScenarioFanout, URL: "ws://127.0.0.1:1/ws?token=t", Channel: "news", Protocol: ProtocolPusher,
		PusherKey: "k", PusherAppID: "7", PublishURL: "http://127.0.0.1:2"}
	c, err := base.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Payload != PayloadText || c.PusherEvent != "bench" || c.Format != FormatRaw {
		t.Fatalf("payload %q event %q format %q; want text, bench, raw", c.Payload, c.PusherEvent, c.Format)
	}
	if _, err := c.WithDefaults(); err != nil { // as a child process does, from the parent's
		t.Fatalf("defaults twice: %v", err)
	}
	if got, want := c.receiverURL(0, "news"), "ws://127.0.0.1:1/app/k?token=t&protocol=7&client=fanout-bench&version=1"; got != want {
		t.Fatalf("receiver URL %s, want %s", got, want)
	}
	if got, want := c.publishURLFor(0, "news"), "http://127.0.0.1:2/apps/7/events"; got != want {
		t.Fatalf("publish URL %s, want %s", got, want)
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Protocol = "mqtt" }, `protocol "mqtt"`},
		{func(c *Config) { c.PusherKey = "" }, "app's key"},
		{func(c *Config) { c.Channel = "" }, "named channel"},
		{func(c *Config) { c.Channel = "private-x" }, "public channels only"},
		{func(c *Config) { c.Channel = "news/a" }, "not a Pusher channel name"}, // a fanout name, not a Pusher one
		{func(c *Config) { c.Payload = PayloadBinary }, "data is a string"},
		{func(c *Config) { c.Transport = TransportSSE }, "is WebSocket"},
		{func(c *Config) { c.Format = FormatJSON }, "has its own"},
		{func(c *Config) { c.PublishURL = "" }, "HTTP API"},
		{func(c *Config) { c.PublishURL = "http://127.0.0.1:2/publish" }, "the HTTP API's server only"},
		{func(c *Config) { c.PusherAppID = "" }, "app's id"},
		{func(c *Config) { c.PublishBatch = 4 }, "one event per request"},
		{func(c *Config) { c.PusherEvent = "pusher:ping" }, "app event's name"},
		{func(c *Config) { c.Scenario, c.Channel = ScenarioRooms, "" }, "native protocol only"},
		{func(c *Config) { c.Protocol = ProtocolNative }, "only with the pusher protocol"},
	} {
		c := base
		tc.edit(&c)
		if _, err := c.WithDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want an error saying %q", c, err, tc.want)
		}
	}
	// Connect publishes nothing: the key and a channel are enough.
	if _, err := (Config{Scenario: ScenarioConnect, URL: "ws://127.0.0.1:1", Channel: "c", Protocol: ProtocolPusher, PusherKey: "k"}).WithDefaults(); err != nil {
		t.Fatal(err)
	}
}

// The publishers' body is JSON whose data is the payload, byte for byte,
// whatever it holds.
func TestPusherEventBody(t *testing.T) {
	for _, data := range []string{"FT0001plain", `{"bench":"FJ","q":"a \"quoted\" \\ word"}`, "tab\t nl\n cr\r \x01 \x1f é 😀 </script> \u2028"} {
		b := appendPusherEvent(nil, "ev", "ch-1", []byte(data))
		var got struct{ Name, Channel, Data string }
		if err := json.Unmarshal(b, &got); err != nil || got.Name != "ev" || got.Channel != "ch-1" || got.Data != data {
			t.Fatalf("%s: %+v, %v; want data %q", b, got, err, data)
		}
	}
}

func TestPusherEventDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind pusherKind
		data string
		err  error
	}{
		{`{"event":"bench","channel":"c","data":"FT00"}`, pusherApp, "FT00", nil},
		{` {"data":"{\"a\":1}" , "event":"bench"}` + "\n", pusherApp, `{"a":1}`, nil},
		{`{"event":"bench","data":{"a":[1,2]}}`, pusherApp, `{"a":[1,2]}`, nil},
		{`{"event":"ev\u0065nt"}`, pusherApp, "", nil},
		{`{"event":"pusher:ping","data":{}}`, pusherPingKind, "{}", nil},
		{`{"event":"pusher:error","data":{"code":4301,"message":"rate"}}`, pusherError, `{"code":4301,"message":"rate"}`, nil},
		{`{"event":"pusher:pong","data":"{}"}`, pusherOther, "", nil},
		{`{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}`, pusherOther, "", nil},
		{`{"channel":"c","data":"x"}`, 0, "", errEnvelope},
		{`{"event":7,"data":"x"}`, 0, "", errEnvelope},
		{`{"event":"a","event":"b"}`, 0, "", errEnvelope},
		{`{"event":"a","channel":1}`, 0, "", errEnvelope},
		{`["event"]`, 0, "", errEnvelope},
		{`{"event":"a","data":"x"`, 0, "", errJSON},
		{`{"event":"a","data":"\q"}`, 0, "", errJSON},
		{`{"event":"a"} x`, 0, "", errJSON},
	} {
		kind, data, _, err := decodePusherEvent([]byte(tc.in), nil)
		if !errors.Is(err, tc.err) || (err == nil && (kind != tc.kind || string(data) != tc.data)) {
			t.Errorf("%s: kind %d data %q err %v; want %d %q %v", tc.in, kind, data, err, tc.kind, tc.data, tc.err)
		}
	}
}

// FuzzPusherEvent holds decodePusherEvent to encoding/json: invalid
// exactly where encoding/json says so (errJSON), and where it finds an
// event, encoding/json finds the same name and data in it.
func FuzzPusherEvent(f *testing.F) {
	for _, s := range []string{
		`{"event":"bench","channel":"c","data":"FT00xx"}`,
		`{"event":"bench","data":"{\"bench\":\"FJ\",\"n\":\"\\u00e9\ud83d\ude00\"}"}`,
		`{"event":"pusher:error","data":{"code":null,"message":"m"}}`,
		`{"event":"pusher:ping","data":{}}`,
		`{"ev\u0065nt":"x","data":"\ud800 lone"}`,
		`{"event":"a","event":"b"}`,
		` [1, {"event": -0.5E+2}] `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		kind, data, _, err := decodePusherEvent(in, nil)
		if valid := json.Valid(in); valid == errors.Is(err, errJSON) {
			t.Fatalf("%q: json.Valid %v, decodePusherEvent %v", in, valid, err)
		}
		if err != nil || !utf8.Valid(in) { // encoding/json turns invalid UTF-8 into U+FFFD; the bench keeps the bytes
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(in, &m) != nil {
			t.Fatalf("%q: an event that encoding/json does not take as an object", in)
		}
		var name string
		if json.Unmarshal(m["event"], &name) != nil {
			t.Fatalf("%q: event %s is not a string", in, m["event"])
		}
		want := []byte(nil)
		if raw := m["data"]; len(raw) > 0 && raw[0] == '"' {
			var s string
			_ = json.Unmarshal(raw, &s)
			want = []byte(s)
		} else if len(raw) > 0 {
			want = raw
		}
		wantKind := pusherApp
		switch {
		case name == "pusher:ping":
			wantKind = pusherPingKind
		case name == "pusher:error":
			wantKind = pusherError
		case strings.HasPrefix(name, "pusher:") || strings.HasPrefix(name, "pusher_internal:"):
			wantKind, want = pusherOther, nil
		}
		if kind != wantKind || !bytes.Equal(data, want) {
			t.Fatalf("%q: kind %d data %q; encoding/json: %q (%d) data %q", in, kind, data, name, wantKind, want)
		}
	})
}
