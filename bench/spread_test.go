package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/bench/baseline"
	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/hub"
)

// Half the receivers on the default channel, half spread over channels
// of their own with a publisher each: against fanout, each receiver gets
// its channel's messages and no other, once, in order (per publisher and,
// in the json format, by seq), over WebSocket frames and over the publish
// API (spread over two URLs, with idempotency keys).
func TestSpreadChannelsGetTheirOwnMessages(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format string
		api    bool
	}{
		{"raw, frames", FormatRaw, false},
		{"json, publish API", FormatJSON, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wsURL, apiURL, srv := startFanoutConfig(t, broadcast.Config{})
			cfg := Config{
				Scenario: ScenarioFanout, URL: wsURL, Conns: 40, Publishers: 2, Format: tc.format,
				Messages: 20, Rate: 2000, Duration: time.Minute, Drain: 5 * time.Second,
				Channels: 10, ChannelRate: 500,
			}
			if tc.api {
				cfg.PublishURL, cfg.PublishKey, cfg.IdempotencyKeys = apiURL+"/publish,"+apiURL+"/publish", "k", true
			}
			res, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			// 20 receivers on the default channel get 2 × 20 messages;
			// 2 on each of 10 channels get their publisher's 20.
			if f.Publishers != 12 || f.Sent != 240 || f.Receivers != 40 || f.Expected != 20*40+20*20 || f.Received != f.Expected ||
				f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || f.OutOfOrder != 0 || f.Misrouted != 0 || f.Foreign != 0 || f.Corrupt != 0 {
				t.Fatalf("publishers %d sent %d receivers %d expected %d received %d lost %d dups %d reordered %d out of order %d misrouted %d foreign %d corrupt %d",
					f.Publishers, f.Sent, f.Receivers, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered, f.OutOfOrder, f.Misrouted, f.Foreign, f.Corrupt)
			}
			on, sp := f.OnChannel, f.Spread
			if on == nil || sp == nil || on.Receivers != 20 || on.Publishers != 2 || on.Received != 800 || sp.Receivers != 20 || sp.Publishers != 10 || sp.Channels != 10 || sp.Received != 400 {
				t.Fatalf("groups %+v and %+v", on, sp)
			}
			for _, p := range f.PerPublisher[2:] {
				if p.Sent != 20 || p.Expected != 40 || p.Received != 40 {
					t.Fatalf("spread publisher %+v: want 20 sent, 40 of 40 received", p)
				}
			}
			if st, want := srv.Stats(), 240+res.WarmupSent; st.Published != want {
				t.Fatalf("server published %d, want %d (240 and the warm-ups)", st.Published, want)
			}
		})
	}
}

// A server that ignores channels (the classic hub broadcasts everything
// to everyone): every message a receiver gets from another channel's
// publisher is counted as misrouted, not as received.
func TestSpreadChannelsCountMisrouted(t *testing.T) {
	h := baseline.New(baseline.Config{})
	t.Cleanup(h.Close)
	hs := httptest.NewServer(baseline.Handler(h, "/ws"))
	t.Cleanup(hs.Close)
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", Conns: 4, Publishers: 1,
		Messages: 10, Rate: 1000, Duration: time.Minute, Drain: 5 * time.Second, Channels: 2,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Fanout
	// Two default receivers each get both channels' 2 × 10; the two
	// spread ones (one a channel) each get the 10 of the default channel
	// and the 10 of the other.
	if f.Received != 40 || f.Expected != 40 || f.Lost != 0 || f.Misrouted != 80 {
		t.Fatalf("received %d of %d, lost %d, misrouted %d; want 40 of 40, 0, 80", f.Received, f.Expected, f.Lost, f.Misrouted)
	}
}

// seqCheatingHub speaks fanout's json format, numbering messages in the
// order it broadcasts them, and cheats its first client on purpose: it
// swaps messages 30 and 31 (order broken per publisher and by seq), and
// gives message 50 message 49's seq (in publisher order: by seq only).
type seqCheatingHub struct {
	mu      sync.Mutex
	clients []*cheatClient
	seq     uint64 // seqs given so far
	n       int    // counted messages broadcast so far
	held    []byte
}

func (h *seqCheatingHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &cheatClient{conn: conn}
	h.mu.Lock()
	h.clients = append(h.clients, c)
	h.mu.Unlock()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		h.broadcast(data)
	}
}

func (h *seqCheatingHub) envelope(data []byte, seq uint64) msg {
	m := hub.NewMessage("", hub.KindBinary, data)
	m.Seq = seq
	return msg{websocket.TextMessage, hub.AppendEnvelope(nil, &m)}
}

func (h *seqCheatingHub) broadcast(data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	honest := h.envelope(data, h.seq)
	if pub, _, _, err := parsePayload(data); err == nil && pub == warmPub {
		for _, c := range h.clients {
			c.send(honest)
		}
		return
	}
	k := h.n
	h.n++
	for i, c := range h.clients {
		switch {
		case i != 0:
			c.send(honest)
		case k == 30:
			h.held = data
		case k == 31:
			c.send(honest)
			c.send(h.envelope(h.held, h.seq-1))
		case k == 50:
			c.send(h.envelope(data, h.seq-1))
		default:
			c.send(honest)
		}
	}
}

// A json-format receiver checks the server's seqs: each must be above the
// last on its connection. The bench reports exactly the two the server
// broke for one client, one of them also out of its publisher's order.
func TestBenchReportsSeqOrderExactly(t *testing.T) {
	url := serve(t, &seqCheatingHub{})
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: url, Conns: 5, Publishers: 1, Format: FormatJSON,
		Messages: 100, Rate: 2000, Duration: time.Minute, Drain: 2 * time.Second,
		ConnectWorkers: 1, // the first receiver to connect is the cheated one
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Fanout
	if f.Received != 500 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 1 || f.OutOfOrder != 2 || f.Foreign != 0 {
		t.Fatalf("received %d lost %d dups %d reordered %d out of order %d foreign %d; want 500, 0, 0, 1, 2, 0",
			f.Received, f.Lost, f.Duplicates, f.Reordered, f.OutOfOrder, f.Foreign)
	}
}

func TestSpreadConfig(t *testing.T) {
	cfg, err := Config{URL: "ws://x/ws", Conns: 10, Publishers: 2, Rate: 10, Channels: 3}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ChannelShare != 0.5 || cfg.ChannelPrefix != "ch-" || cfg.ChannelRate != 5 || cfg.allPublishers() != 5 {
		t.Fatalf("defaults: share %v prefix %q rate %v publishers %d; want 0.5, ch-, 5, 5", cfg.ChannelShare, cfg.ChannelPrefix, cfg.ChannelRate, cfg.allPublishers())
	}
	var got []string
	for i := range 10 {
		got = append(got, cfg.channelFor(i))
	}
	if want := ",,,,,ch-0,ch-1,ch-2,ch-0,ch-1"; strings.Join(got, ",") != want {
		t.Fatalf("channels %q, want %q", strings.Join(got, ","), want)
	}
	if pc := cfg.channelPublisher(2); pc.Channel != "ch-2" || pc.Publishers != 1 || pc.Rate != 5 {
		t.Fatalf("publisher of ch-2: channel %q publishers %d rate %v", pc.Channel, pc.Publishers, pc.Rate)
	}
	if again, err := cfg.WithDefaults(); err != nil || again.ChannelRate != 5 { // a child's config, defaulted twice
		t.Fatalf("defaults again: rate %v, %v", again.ChannelRate, err)
	}
	for _, bad := range []Config{
		{ChannelShare: 0.5},
		{ChannelRate: 1},
		{ChannelPrefix: "x"},
		{Channels: -1},
		{Channels: 3, ChannelShare: 1.5},
		{Channels: 3, ChannelRate: -1},
		{Channels: 6},                              // 5 spread receivers for 6 channels
		{Channels: 3, ChannelPrefix: "two words "}, // not a channel name
		{Channels: 70000},
		{Scenario: ScenarioSlow, Channels: 3},
		{Scenario: ScenarioRooms, Channels: 3},
		{IdempotencyKeys: true},
		{IdempotencyKeys: true, PublishURL: "http://x/publish", PublishBatch: 2},
	} {
		bad.URL, bad.Conns = "ws://x/ws", 10
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}
