package broadcast_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/internal/servertest"
	"github.com/fanout/fanout/broadcast/pusher"
)

// The Pusher front door, driven by servertest's client, written against
// the protocol (the npm clients are driven by cmd/fanout's TestNodePusher).

func pusherApps(t testing.TB, apps ...pusher.App) *pusher.Config {
	t.Helper()
	as, err := pusher.NewApps(apps)
	if err != nil {
		t.Fatal(err)
	}
	return &pusher.Config{Apps: as}
}

var appOne = pusher.App{ID: "1", Key: "key1", Secret: "secret1"}

type pusherEvent = servertest.PusherEvent

func dialPusher(t testing.TB, s *testServer, key string) *servertest.PusherClient {
	t.Helper()
	return servertest.DialPusher(t, s.addr, key)
}

func api(t testing.TB, s *testServer, app pusher.App, method, path string, body any) (int, string) {
	t.Helper()
	return servertest.PusherAPI(t, s.Pusher(), app, method, path, body)
}

// A Pusher channel is a fanout channel: an API event reaches native
// subscribers as a message with its event, a native publish reaches
// Pusher subscribers as the event "message", and a client event reaches
// both but its sender.
func TestPusherBothFrontDoors(t *testing.T) {
	s := startServer(t, broadcast.Config{Pusher: pusherApps(t, appOne)})
	a, b := dialPusher(t, s, "key1"), dialPusher(t, s, "key1")
	for _, p := range []*servertest.PusherClient{a, b} {
		if e := p.Subscribe(t, appOne, "private-room", ""); e.Event != "pusher_internal:subscription_succeeded" || e.Channel != "private-room" {
			t.Fatalf("subscribe: %+v", e)
		}
	}
	// A native client may not read a private channel without a token.
	if _, resp, err := websocket.DefaultDialer.Dial(s.url+"?channel=private-room", nil); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("native subscribe to private-room: %v %v", resp, err)
	}
	native := dialGorilla(t, s.url+"?channel=room&format=json")
	readJSON(t, native) // welcome
	pub := dialPusher(t, s, "key1")
	if e := pub.Subscribe(t, appOne, "room", ""); e.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("subscribe room: %+v", e)
	}

	if code, body := api(t, s, appOne, "POST", "/events", map[string]any{"name": "greet", "channels": []string{"room", "private-room"}, "data": `{"hi":1}`}); code != 200 || body != "{}" {
		t.Fatalf("events: %d %s", code, body)
	}
	for _, p := range []*servertest.PusherClient{a, b} {
		if e := p.Next(t); e.Event != "greet" || e.Channel != "private-room" || e.Str(t) != `{"hi":1}` {
			t.Errorf("pusher got %+v", e)
		}
	}
	if e := pub.Next(t); e.Event != "greet" || e.Str(t) != `{"hi":1}` {
		t.Errorf("pusher on room got %+v", e)
	}
	m := readJSON(t, native)
	if m["event"] != "greet" || m["data"] != `{"hi":1}` || m["channel"] != "room" {
		t.Errorf("native got %v", m)
	}

	if _, err := s.Publish(broadcast.Message{Channel: "room", Payload: []byte("plain")}); err != nil {
		t.Fatal(err)
	}
	if e := pub.Next(t); e.Event != "message" || e.Str(t) != "plain" {
		t.Errorf("native publish reached pusher as %+v", e)
	}
	readJSON(t, native)

	// A client event: to b, not back to a.
	a.Send(t, "client-typing", "private-room", map[string]int{"n": 1})
	if e := b.Next(t); e.Event != "client-typing" || e.Str(t) != `{"n":1}` {
		t.Errorf("client event reached b as %+v", e)
	}
	// a's next is the API event below, not its own client event.
	if code, _ := api(t, s, appOne, "POST", "/events", map[string]any{"name": "after", "channel": "private-room", "data": "x", "socket_id": b.SocketID}); code != 200 {
		t.Fatal("events with socket_id")
	}
	if e := a.Next(t); e.Event != "after" {
		t.Errorf("a got %+v, want the API event (its own client event is not echoed)", e)
	}
	if _, err := s.Publish(broadcast.Message{Channel: "private-room", Payload: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*servertest.PusherClient{b, a} {
		if e := p.Next(t); e.Event != "message" || e.Str(t) != "last" {
			t.Errorf("got %+v, want last (the event with b's socket_id left b out)", e)
		}
	}

	// Refusals that keep the connection.
	a.Send(t, "client-x", "room", map[string]int{})
	if e := a.Next(t); e.Event != "pusher:error" || !strings.Contains(string(e.Data), "4301") {
		t.Errorf("client event on a public channel: %+v", e)
	}
	if e := a.Subscribe(t, pusher.App{Key: "key1", Secret: "wrong"}, "private-other", ""); e.Event != "pusher:subscription_error" || !strings.Contains(string(e.Data), `"status":401`) {
		t.Errorf("wrong secret: %+v", e)
	}
	a.Send(t, "pusher:ping", "", map[string]any{})
	if e := a.Next(t); e.Event != "pusher:pong" {
		t.Errorf("ping: %+v", e)
	}
}

// Unknown app, over capacity: the upgrade succeeds and the client is
// told why, with the close code that tells pusher-js whether to retry.
func TestPusherRefusals(t *testing.T) {
	quota := pusher.App{ID: "2", Key: "key2", Secret: "s", Prefix: "two:", MaxConnections: 1}
	s := startServer(t, broadcast.Config{MaxConns: 3, Pusher: pusherApps(t, appOne, quota)})
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/app/nokey?protocol=7", 4001},
		{"/app/key1?protocol=3", 4007},
		{"/app/key1", 4008},
	} {
		c := dialGorilla(t, "ws://"+s.addr+tc.path)
		expectPusherRefusal(t, c, tc.code)
	}
	dialPusher(t, s, "key2")
	expectPusherRefusal(t, dialGorilla(t, "ws://"+s.addr+"/app/key2?protocol=7"), 4004)
	dialPusher(t, s, "key1")
	dialPusher(t, s, "key1") // 3 of MaxConns 3
	expectPusherRefusal(t, dialGorilla(t, "ws://"+s.addr+"/app/key1?protocol=7"), 4100)
	waitFor(t, "4 refusals by the front door, 1 for MaxConns", func() bool {
		st := s.Stats()
		return st.Rejects(broadcast.RejectPusher) == 4 && st.Rejects(broadcast.RejectFull) == 1
	})
}

func expectPusherRefusal(t testing.TB, c *websocket.Conn, code int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"event":"pusher:error"`) || !strings.Contains(string(b), fmt.Sprintf(`"code":%d`, code)) {
		t.Fatalf("want pusher:error %d first, got %s %v", code, b, err)
	}
	_, _, err = c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != code {
		t.Fatalf("want close %d, got %v", code, err)
	}
}

// Apps keep to their channels: app 2's "private-x" is fanout's
// "two:private-x", apart from app 1's; its events carry the Pusher name.
func TestPusherAppsApart(t *testing.T) {
	two := pusher.App{ID: "2", Key: "key2", Secret: "secret2", Prefix: "two:"}
	s := startServer(t, broadcast.Config{Pusher: pusherApps(t, appOne, two)})
	p1, p2 := dialPusher(t, s, "key1"), dialPusher(t, s, "key2")
	p1.Subscribe(t, appOne, "public", "")
	p2.Subscribe(t, two, "public", "")
	if code, _ := api(t, s, two, "POST", "/events", map[string]any{"name": "e", "channel": "public", "data": "for two"}); code != 200 {
		t.Fatal(code)
	}
	if code, _ := api(t, s, appOne, "POST", "/events", map[string]any{"name": "e", "channel": "public", "data": "for one"}); code != 200 {
		t.Fatal(code)
	}
	if e := p2.Next(t); e.Channel != "public" || e.Str(t) != "for two" {
		t.Errorf("app 2 got %+v", e)
	}
	if e := p1.Next(t); e.Str(t) != "for one" {
		t.Errorf("app 1 got %+v", e)
	}
	// App 1's key does not sign for app 2's API.
	if code, body := api(t, s, pusher.App{ID: "2", Key: "key1", Secret: "secret1"}, "GET", "/channels", nil); code != 401 || !strings.Contains(body, "not app 2's key") {
		t.Errorf("app 1 signing for app 2: %d %s", code, body)
	}
	code, body := api(t, s, two, "GET", "/channels", nil)
	if code != 200 || body != `{"channels":{"public":{}}}` {
		t.Errorf("app 2's channels: %d %s", code, body)
	}
}

// Presence: the roster on subscribe, member_added and member_removed to
// the others, once per user however many connections, the member cap,
// and the API's users and user_count.
func TestPusherPresence(t *testing.T) {
	cfg := pusherApps(t, appOne)
	cfg.MaxPresenceMembers = 2
	s := startServer(t, broadcast.Config{Pusher: cfg})
	join := func(user string) (*servertest.PusherClient, pusherEvent) {
		p := dialPusher(t, s, "key1")
		return p, p.Subscribe(t, appOne, "presence-r", `{"user_id":`+user+`,"user_info":{"name":"n`+strings.Trim(user, `"`)+`"}}`)
	}
	alice, e := join(`"a"`)
	if e.Event != "pusher_internal:subscription_succeeded" || e.Str(t) != `{"presence":{"ids":["a"],"hash":{"a":{"name":"na"}},"count":1}}` {
		t.Fatalf("alice: %+v", e)
	}
	bob, e := join(`7`) // a number, as Laravel sends it
	if !strings.Contains(e.Str(t), `"count":2`) {
		t.Fatalf("bob: %+v", e)
	}
	if e := alice.Next(t); e.Event != "pusher_internal:member_added" || e.Str(t) != `{"user_id":"7","user_info":{"name":"n7"}}` {
		t.Errorf("alice saw %+v", e)
	}
	bob2, e := join(`7`) // bob's second tab: no member_added
	if !strings.Contains(e.Str(t), `"count":2`) {
		t.Fatalf("bob2: %+v", e)
	}
	if _, e := join(`"carol"`); e.Event != "pusher:subscription_error" || !strings.Contains(string(e.Data), "LimitReached") {
		t.Errorf("a third user over the cap of 2: %+v", e)
	}
	if code, body := api(t, s, appOne, "GET", "/channels/presence-r/users", nil); code != 200 || body != `{"users":[{"id":"7"},{"id":"a"}]}` {
		t.Errorf("users: %d %s", code, body)
	}
	if code, body := api(t, s, appOne, "GET", "/channels/presence-r?info=user_count,subscription_count", nil); code != 200 || body != `{"occupied":true,"subscription_count":3,"user_count":2}` {
		t.Errorf("channel: %d %s", code, body)
	}
	_ = bob.C.Close() // bob still has a tab: nothing for alice
	bob2.Send(t, "pusher:unsubscribe", "", map[string]string{"channel": "presence-r"})
	if e := alice.Next(t); e.Event != "pusher_internal:member_removed" || e.Str(t) != `{"user_id":"7"}` {
		t.Errorf("alice saw %+v", e)
	}
	waitFor(t, "bob gone", func() bool {
		_, body := api(t, s, appOne, "GET", "/channels/presence-r/users", nil)
		return body == `{"users":[{"id":"a"}]}`
	})
}

// readJSON reads one json-format frame as a map.
func readJSON(t testing.TB, c *websocket.Conn) map[string]any {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

// Clients that subscribe and leave at once, many at a time, leave no
// member behind and the channel's webhooks balanced and in order:
// occupied, then (per user) added and removed, then vacated, each
// occupied closed by a vacated.
func TestPusherChurnLeavesNothing(t *testing.T) {
	var mu sync.Mutex
	var events []map[string]string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Events []map[string]string `json:"events"`
		}
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		events = append(events, b.Events...)
		mu.Unlock()
	}))
	defer hook.Close()
	app := appOne
	app.WebhookURL = hook.URL
	cfg := pusherApps(t, app)
	cfg.MaxPresenceMembers = 1000
	s := startServer(t, broadcast.Config{Pusher: cfg})
	clients := make([]*servertest.PusherClient, 200)
	for i := range clients {
		clients[i] = dialPusher(t, s, "key1")
	}
	var wg sync.WaitGroup
	for i, p := range clients {
		wg.Add(1)
		go func() { // all at once; errors are the server's closes, fine here
			defer wg.Done()
			data := fmt.Sprintf(`{"user_id":"u%d"}`, i%50) // 4 connections per user
			sig := "key1:" + hexHMAC("secret1", p.SocketID+":presence-churn:"+data)
			_ = p.C.WriteJSON(map[string]any{"event": "pusher:subscribe", "data": map[string]string{"channel": "presence-churn", "auth": sig, "channel_data": data}})
			if i%2 == 0 {
				_ = p.C.WriteJSON(map[string]any{"event": "pusher:unsubscribe", "data": map[string]string{"channel": "presence-churn"}})
			}
			_ = p.C.Close() // at once: the subscribe may not be linked yet
		}()
	}
	wg.Wait()
	waitFor(t, "every connection gone", func() bool { return s.Conns() == 0 })
	waitFor(t, "no member left", func() bool {
		_, body := api(t, s, appOne, "GET", "/channels/presence-churn/users", nil)
		return body == `{"users":[]}`
	})
	// One more, subscribed for sure, then gone: the last webhooks are its
	// own, ending with the channel vacated.
	last := dialPusher(t, s, "key1")
	if e := last.Subscribe(t, app, "presence-churn", `{"user_id":"last"}`); e.Event != "pusher_internal:subscription_succeeded" {
		t.Fatalf("last: %s", e)
	}
	_ = last.C.Close()
	waitFor(t, "the last user's member_removed and the channel_vacated", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := len(events)
		return n >= 2 && events[n-2]["name"] == "member_removed" && events[n-2]["user_id"] == "last" && events[n-1]["name"] == "channel_vacated"
	})
	mu.Lock()
	defer mu.Unlock()
	occupied, members := false, map[string]bool{}
	for i, e := range events {
		switch e["name"] {
		case "channel_occupied":
			if occupied {
				t.Fatalf("event %d: occupied twice", i)
			}
			occupied = true
		case "channel_vacated":
			if !occupied || len(members) > 0 {
				t.Fatalf("event %d: vacated while occupied=%v with members %v", i, occupied, members)
			}
			occupied = false
		case "member_added":
			if !occupied || members[e["user_id"]] {
				t.Fatalf("event %d: %s added while occupied=%v, a member already=%v", i, e["user_id"], occupied, members[e["user_id"]])
			}
			members[e["user_id"]] = true
		case "member_removed":
			if !members[e["user_id"]] {
				t.Fatalf("event %d: %s removed, not a member", i, e["user_id"])
			}
			delete(members, e["user_id"])
		}
	}
	if occupied || len(members) > 0 {
		t.Errorf("at the end occupied=%v, members %v", occupied, members)
	}
}

// A native client may not publish on a Pusher app's channel (only
// backends and signed client events do); on its other channels, and on
// the default one, it still may.
func TestPusherNativePublishRefused(t *testing.T) {
	two := pusher.App{ID: "2", Key: "key2", Secret: "s2", Prefix: "two:"}
	s := startServer(t, broadcast.Config{Pusher: pusherApps(t, two)})
	p := dialPusher(t, s, "key2")
	p.Subscribe(t, two, "news", "")
	native := dialGorilla(t, s.url+"?channel=two:news&format=json")
	readJSON(t, native) // welcome; reading a public channel is fine
	refused := s.Stats().Refused
	if err := native.WriteJSON(map[string]any{"channel": "two:news", "data": "spoofed"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publish refused", func() bool { return s.Stats().Refused == refused+1 })
	other := dialGorilla(t, s.url+"?channel=plain&format=json")
	readJSON(t, other)
	if err := other.WriteJSON(map[string]any{"channel": "plain", "data": "fine"}); err != nil {
		t.Fatal(err)
	}
	if m := readJSON(t, other); m["data"] != "fine" {
		t.Errorf("on a channel of no app: %v", m)
	}
	if _, err := s.Publish(broadcast.Message{Channel: "two:news", Payload: []byte("from the backend")}); err != nil {
		t.Fatal(err)
	}
	if e := p.Next(t); e.Str(t) != "from the backend" {
		t.Errorf("the Pusher client got %s, want only the backend's message", e)
	}
}

func hexHMAC(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// Subscribes are rate-limited per connection: the first burst (as many
// as a connection may hold, what a client sends as it reconnects) goes
// through, then SubscribeRate holds; a refusal is a subscription_error
// and the connection stays.
func TestPusherSubscribeRate(t *testing.T) {
	cfg := pusherApps(t, appOne)
	cfg.SubscribeRate = 0.001 // one in 1,000 s: none after the burst, within the test
	s := startServer(t, broadcast.Config{MaxChannelsPerConn: 3, Pusher: cfg})
	p := dialPusher(t, s, "key1")
	for _, ch := range []string{"a", "b", "c"} {
		if e := p.Subscribe(t, appOne, ch, ""); e.Event != "pusher_internal:subscription_succeeded" {
			t.Fatalf("%s: %s", ch, e)
		}
	}
	p.Send(t, "pusher:unsubscribe", "", map[string]string{"channel": "c"})
	if e := p.Subscribe(t, appOne, "d", ""); e.Event != "pusher:subscription_error" || !strings.Contains(string(e.Data), "subscribing faster than") {
		t.Fatalf("a 4th subscribe right after the burst: %s", e)
	}
	p.Send(t, "pusher:ping", "", map[string]any{})
	if e := p.Next(t); e.Event != "pusher:pong" {
		t.Errorf("after the refusal: %s", e)
	}
}
