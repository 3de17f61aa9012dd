package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/hub"
)

// waitFor polls cond until it holds, failing the test after 10 s: the
// assertion is on the state, never on the speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listener is a client of another channel than the bench's, on an
// independent library (gorilla/websocket).
type listener struct {
	conn *websocket.Conn
	ch   string
}

// listen connects a listener to channel ("": the default one) and waits
// until the server has it on that channel.
func listen(t *testing.T, srv *broadcast.Server, wsURL, channel string) *listener {
	t.Helper()
	u := wsURL
	if channel != "" {
		u += "?channel=" + channel
	}
	before := srv.Channels()
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitFor(t, "the listener on "+fmt.Sprintf("%q", channel), func() bool {
		return subscribers(srv.Channels(), channel) > subscribers(before, channel)
	})
	return &listener{conn: conn, ch: channel}
}

func subscribers(cs []broadcast.ChannelInfo, name string) int {
	for _, c := range cs {
		if c.Name == name {
			return c.Subscribers
		}
	}
	return 0
}

// drain publishes an end marker on l's channel and returns what l
// received before it. The server keeps one order over all channels, so
// anything published before the marker that reached l came first.
func (l *listener) drain(t *testing.T, srv *broadcast.Server) []string {
	t.Helper()
	if _, err := srv.Publish(broadcast.Message{Channel: l.ch, Kind: broadcast.KindText, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	_ = l.conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // fail, not hang, if the marker never comes
	for {
		_, b, err := l.conn.ReadMessage()
		if err != nil {
			t.Fatalf("listener on %q: %v (after %d messages)", l.ch, err, len(got))
		}
		if string(b) == "end" {
			return got
		}
		got = append(got, string(b))
	}
}

// noise is what noisyAPI publishes on the other channels.
const noise = "noise: not for the bench"

// noisyAPI serves the publish API, counting the POSTs to /publish and
// those that name another channel than want; before each, it publishes
// noise on every one of others. A receiver on want that got any would
// have got it before the bench message that follows.
func noisyAPI(t *testing.T, srv *broadcast.Server, want string, others []string, posts, offChannel *atomic.Int64) string {
	t.Helper()
	a, err := api.New(api.Config{Server: srv, PublishKeys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/publish" {
			posts.Add(1)
			if r.URL.Query().Get("channel") != want {
				offChannel.Add(1)
			}
			for _, ch := range others {
				if _, err := srv.Publish(broadcast.Message{Channel: ch, Kind: broadcast.KindBinary, Payload: []byte(noise)}); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/publish"
}

// With -channel, receivers get every message published to their channel,
// by WebSocket publishers on it or through POST /publish?channel=, and
// nothing published to another channel (the default one included); no
// other channel's client gets any of theirs.
func TestChannelKeepsItsStreamApart(t *testing.T) {
	for _, viaAPI := range []bool{false, true} {
		name := "websocket publishers"
		if viaAPI {
			name = "publish API"
		}
		t.Run(name, func(t *testing.T) {
			wsURL, srv := startFanout(t)
			others := []*listener{listen(t, srv, wsURL, "sports"), listen(t, srv, wsURL, "")}
			cfg := Config{
				Scenario: ScenarioFanout, URL: wsURL, Conns: 20, Publishers: 2, Channel: "news",
				Messages: 30, Rate: 600, Duration: time.Minute, Drain: 5 * time.Second,
			}
			var posts, offChannel atomic.Int64
			if viaAPI {
				cfg.PublishURL, cfg.PublishKey = noisyAPI(t, srv, "news", []string{"sports", ""}, &posts, &offChannel), "k"
			}
			res, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			if f.Sent != 60 || f.Expected != 1200 || f.Received != 1200 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || f.Foreign != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dups %d reordered %d foreign %d; want 60, 1200, 1200 and nothing else",
					f.Sent, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered, f.Foreign)
			}
			if viaAPI && (posts.Load() != int64(f.PublishRequests) || posts.Load() < 60 || offChannel.Load() != 0) {
				t.Fatalf("%d POSTs (bench: %d), %d not to channel news; want at least 60, all to news", posts.Load(), f.PublishRequests, offChannel.Load())
			}
			for _, l := range others {
				got := l.drain(t, srv)
				for _, m := range got {
					if m != noise {
						t.Fatalf("listener on %q got %q, published to news", l.ch, m)
					}
				}
				if viaAPI && int64(len(got)) != posts.Load() {
					t.Fatalf("listener on %q got %d noise messages, want one per POST (%d)", l.ch, len(got), posts.Load())
				}
			}
		})
	}
}

// connect -channel puts every receiver on the channel, none on the
// default one.
func TestConnectOnAChannel(t *testing.T) {
	wsURL, srv := startFanout(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Config{Scenario: ScenarioConnect, URL: wsURL, Conns: 10, Channel: "lobby", Hold: time.Minute}, nil)
		done <- err
	}()
	waitFor(t, "10 receivers on lobby", func() bool { return subscribers(srv.Channels(), "lobby") == 10 })
	if n := len(srv.Channels()); n != 1 {
		t.Fatalf("server channels %+v, want lobby only", srv.Channels())
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("run ended with %v, want it cancelled", err)
	}
}

func TestChannelURLs(t *testing.T) {
	base := "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws?token=t"
	cfg, err := Config{URL: base, PublishURL: "http://127.0.0.1:3/publish"}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	// No channel: the URLs as given, byte for byte.
	if u0, u1, api := cfg.urlFor(0, cfg.channelFor(0)), cfg.urlFor(1, cfg.channelFor(1)), cfg.publishURLFor(0, cfg.Channel); u0 != "ws://127.0.0.1:1/ws" || u1 != "ws://127.0.0.1:2/ws?token=t" || api != cfg.PublishURL {
		t.Fatalf("urls %q %q %q, want them as given", u0, u1, api)
	}
	cfg.Channel = "a/b=c:d@e"
	if cfg, err = cfg.WithDefaults(); err != nil {
		t.Fatal(err)
	}
	if u0, u1, api := cfg.urlFor(0, cfg.channelFor(0)), cfg.urlFor(1, cfg.channelFor(1)), cfg.publishURLFor(0, cfg.Channel); u0 != "ws://127.0.0.1:1/ws?channel=a%2Fb%3Dc%3Ad%40e" ||
		u1 != "ws://127.0.0.1:2/ws?token=t&channel=a%2Fb%3Dc%3Ad%40e" || api != "http://127.0.0.1:3/publish?channel=a%2Fb%3Dc%3Ad%40e" {
		t.Fatalf("urls %q %q %q", u0, u1, api)
	}
	rooms, err := Config{Scenario: ScenarioRooms, URL: "ws://x/ws", Conns: 3}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if u := rooms.urlFor(2, rooms.channelFor(2)); u != "ws://x/ws?channel=room-2" || rooms.RatePerClient != 1 || rooms.Publishers != 0 {
		t.Fatalf("rooms: url %q, rate per client %v, publishers %d; want room-2, 1, 0", u, rooms.RatePerClient, rooms.Publishers)
	}

	for _, bad := range []Config{
		{Channel: "two words"},
		{Channel: strings.Repeat("x", hub.MaxChannelName+1)},
		{URL: "ws://x/ws?channel=a", Channel: "b"},
		{URL: "ws://x/ws?channel=a"}, // -channel says it to the publish API too
		{RoomPrefix: "room-"},
		{RatePerClient: 2},
		{Scenario: ScenarioRooms, Channel: "news"},
		{Scenario: ScenarioRooms, RoomPrefix: "a room "},
		{Scenario: ScenarioRooms, Conns: 1000, RoomPrefix: strings.Repeat("r", hub.MaxChannelName-2)}, // room 999's name is one byte over
		{Scenario: ScenarioRooms, RatePerClient: -1},
		{Scenario: ScenarioRooms, Publishers: 2},
		{Scenario: ScenarioRooms, Rate: 100},
		{Scenario: ScenarioRooms, PublishURL: "http://x/publish"},
		{Scenario: ScenarioRooms, Size: roomPayloadHeader - 1},
	} {
		if bad.URL == "" {
			bad.URL = "ws://x/ws"
		}
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
	if _, err := (Config{Scenario: ScenarioRooms, URL: "ws://x/ws", Conns: 1000, RoomPrefix: strings.Repeat("r", 125)}).WithDefaults(); err != nil {
		t.Errorf("a 128-byte last room refused: %v", err)
	}
}
