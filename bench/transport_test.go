package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/hub"
)

// startFanoutConfig is startFanout with a configuration of its own; it
// also serves the publish API and /metrics (key "k").
func startFanoutConfig(t *testing.T, cfg broadcast.Config) (wsURL, apiURL string, srv *broadcast.Server) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := broadcast.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a, err := api.New(api.Config{Server: srv, PublishKeys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(hs.Close)
	return "ws://" + ln.Addr().String() + "/ws", hs.URL, srv
}

// exact fails unless every counted receiver got every message once, intact
// and in order, with a latency each.
func exact(t *testing.T, res *Result, sent uint64, receivers int) {
	t.Helper()
	f := res.Fanout
	if f.Sent != sent || f.Receivers != receivers || f.Expected != sent*uint64(receivers) || f.Received != f.Expected ||
		f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || f.Foreign != 0 || f.Corrupt != 0 || f.Latency.Count != f.Received {
		t.Fatalf("sent %d to %d receivers: expected %d received %d lost %d dups %d reordered %d foreign %d corrupt %d latencies %d; want %d to %d, all received once",
			f.Sent, f.Receivers, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered, f.Foreign, f.Corrupt, f.Latency.Count, sent, receivers)
	}
	if len(res.PublisherErrors) != 0 || res.WarmupIncomplete != 0 || res.Connect.Failed != 0 {
		t.Fatalf("publisher errors %v, warm-up incomplete %d, connects failed %d", res.PublisherErrors, res.WarmupIncomplete, res.Connect.Failed)
	}
}

// SSE receivers, and WebSocket ones in the json format, get every message
// exactly once, whatever form its data takes in the envelope: a string
// (text: a WebSocket publisher's JSON payload, a batch's lines), base64
// (binary), the value itself (JSON, POSTed as application/json); on a
// channel or the default one, in one process or two, churning. What they
// read is envelopes (SSE: in events), not raw frames.
func TestTransportsDeliverExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		kind hub.Kind // how the server takes the payload: the envelope's data
	}{
		{"sse, binary", Config{Transport: TransportSSE}, hub.KindBinary},
		{"sse, json payload on a channel", Config{Transport: TransportSSE, Payload: PayloadJSON, Size: 1024, Channel: "news"}, hub.KindText},
		{"sse, json payload POSTed as JSON", Config{Transport: TransportSSE, Payload: PayloadJSON, Size: 300, PublishURL: "api"}, hub.KindJSON},
		{"sse, POSTed batches of text", Config{Transport: TransportSSE, PublishURL: "api", PublishBatch: 4, Size: 64}, hub.KindText},
		{"sse, two processes", Config{Transport: TransportSSE, ConnsPerProc: 10}, hub.KindBinary},
		{"sse, churning", Config{Scenario: ScenarioChurn, Transport: TransportSSE, ChurnRate: 40, Rate: 60}, hub.KindBinary}, // a second of it
		{"ws json format, json payload", Config{Format: FormatJSON, Payload: PayloadJSON, Size: 1024}, hub.KindText},
		{"ws json format, binary POSTed", Config{Format: FormatJSON, PublishURL: "api"}, hub.KindBinary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wsURL, apiURL, _ := startFanoutConfig(t, broadcast.Config{})
			cfg := tc.cfg
			cfg.URL, cfg.Conns, cfg.Publishers, cfg.Messages = wsURL, 20, 2, 30
			cfg.Rate, cfg.Duration, cfg.Drain = cmp.Or(cfg.Rate, 600), time.Minute, 5*time.Second
			if cfg.PublishURL != "" {
				cfg.PublishURL, cfg.PublishKey = apiURL+"/publish", "k"
			}
			res, err := Run(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := res.Config.procs(); res.Procs != want || (cfg.ConnsPerProc == 10) != (want == 2) {
				t.Fatalf("%d processes, want %d", res.Procs, want)
			}
			receivers := 20
			if cfg.Scenario == ScenarioChurn {
				receivers = 18 // every tenth comes and goes, and is not counted
				if res.Churn.Reconnected == 0 {
					t.Fatalf("churn: %+v, want receivers replaced", res.Churn)
				}
			}
			exact(t, res, 60, receivers)
			// Each delivery was read as an envelope, and in an event for
			// SSE ("id: E:S\ndata: " and a blank line, 12 bytes or more
			// around it), in a frame for json WebSocket (a 2 or 4-byte
			// header).
			p := newPayload(res.Config)
			env := float64(len(envelopeOf(cfg.Channel, tc.kind, p, 100)))
			if w := res.Fanout.WireBytesPerDelivery; (cfg.Transport == TransportSSE) != (w >= env+12) || w < env {
				t.Fatalf("%.1f bytes read per delivery; an envelope is %.0f", w, env)
			}
		})
	}
}

// Deflate receivers get every message intact, and the server writes fewer
// bytes per delivery to them than to plain ones, for a compressible
// payload; the receivers read fewer too. A server that takes no offer
// (-compression=off) sends plain frames, and the result says none took it.
func TestCompressionShrinksWhatTheServerWrites(t *testing.T) {
	wsURL, apiURL, _ := startFanoutConfig(t, broadcast.Config{})
	offURL, offAPI, _ := startFanoutConfig(t, broadcast.Config{NoCompression: true})
	run := func(url, api string, compression bool, format string) *Result {
		t.Helper()
		res, err := Run(context.Background(), Config{
			Scenario: ScenarioFanout, URL: url, Conns: 20, Publishers: 1, Messages: 30, Rate: 600,
			Duration: time.Minute, Drain: 5 * time.Second, Payload: PayloadJSON, Size: 1024,
			Compression: compression, Format: format, MetricsURL: api + "/metrics",
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		exact(t, res, 30, 20)
		if res.Server == nil || res.Server.BytesOutPerDelivery == 0 {
			t.Fatalf("no bytes out per delivery: %+v", res.Server)
		}
		return res
	}
	plain := run(wsURL, apiURL, false, "")
	deflate := run(wsURL, apiURL, true, "")
	jsonDeflate := run(wsURL, apiURL, true, FormatJSON)
	declined := run(offURL, offAPI, true, "")
	if plain.Connect.Compressed != 0 || deflate.Connect.Compressed != 20 || jsonDeflate.Connect.Compressed != 20 || declined.Connect.Compressed != 0 {
		t.Fatalf("connections that took deflate: plain %d, deflate %d, json deflate %d, declined %d; want 0, 20, 20, 0",
			plain.Connect.Compressed, deflate.Connect.Compressed, jsonDeflate.Connect.Compressed, declined.Connect.Compressed)
	}
	// A plain delivery is the 1024-byte payload in a frame (4-byte header).
	for name, r := range map[string]*Result{"plain": plain, "declined": declined} {
		if w, b := r.Fanout.WireBytesPerDelivery, r.Server.BytesOutPerDelivery; w < 1028 || b < 1028 {
			t.Fatalf("%s: %.1f bytes read and %.1f written per delivery: less than a 1024-byte payload's frame", name, w, b)
		}
	}
	for name, r := range map[string]*Result{"deflate": deflate, "json deflate": jsonDeflate} {
		if w, b := r.Fanout.WireBytesPerDelivery, r.Server.BytesOutPerDelivery; w >= plain.Fanout.WireBytesPerDelivery || b >= plain.Server.BytesOutPerDelivery {
			t.Fatalf("%s: %.1f bytes read and %.1f written per delivery; plain: %.1f and %.1f", name, w, b, plain.Fanout.WireBytesPerDelivery, plain.Server.BytesOutPerDelivery)
		}
	}
}

// cheatingSSE is a broadcast server of its own (no fanout code): publishers
// are WebSocket clients (gorilla/websocket), receivers SSE streams, written
// with CRLF line ends, comments, retry: and explicit event types, and its
// envelopes made by encoding/json. It misbehaves towards its first stream
// on purpose: it drops the 10th message, sends the 20th twice and changes
// a byte of the 30th's padding. The bench must report exactly that.
type cheatingSSE struct {
	mu      sync.Mutex
	streams []*bufio.ReadWriter
	n       int // counted messages broadcast so far
	seq     int
}

func (h *cheatingSSE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/sse" {
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\n" +
			"retry: 1000\r\n: hello\r\n\r\nevent: message\r\ndata: {\"type\":\"welcome\",\"seq\":0}\r\n\r\n")
		_ = rw.Flush()
		h.mu.Lock()
		h.streams = append(h.streams, rw)
		h.mu.Unlock()
		_, _ = io.Copy(io.Discard, conn) // until the client leaves
		return
	}
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	pubs := make(chan []byte, 1024) // a publisher reads its own messages back
	go func() {
		for m := range pubs {
			_ = conn.WriteMessage(websocket.BinaryMessage, m)
		}
	}()
	defer close(pubs)
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		pubs <- data
		h.broadcast(data)
	}
}

func (h *cheatingSSE) broadcast(data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	event := func(payload []byte) []byte {
		env, _ := json.Marshal(struct {
			Type    string `json:"type"`
			Channel string `json:"channel"`
			Seq     int    `json:"seq"`
			Data    []byte `json:"data_base64"`
		}{"message", "", h.seq, payload})
		return fmt.Appendf(nil, "id: x:%d\r\ndata: %s\r\n\r\n", h.seq, env)
	}
	k := -1
	if pub, _, _, err := parsePayload(data); err == nil && pub != warmPub {
		k = h.n
		h.n++
	}
	for i, s := range h.streams {
		ev := event(data)
		if i == 0 {
			switch k {
			case 9:
				continue // dropped
			case 19:
				ev = append(ev, ev...)
			case 29:
				bad := append([]byte(nil), data...)
				bad[len(bad)-1] = 'y'
				ev = event(bad)
			}
		}
		_, _ = s.Write(ev)
		_, _ = s.WriteString(": ping\r\n\r\n")
		_ = s.Flush()
	}
}

func TestSSEBenchReportsExactlyWhatTheServerDid(t *testing.T) {
	url := serve(t, &cheatingSSE{})
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: url, Transport: TransportSSE, Conns: 5, Publishers: 1,
		Messages: 100, Rate: 2000, Duration: time.Minute, Drain: 2 * time.Second,
		ConnectWorkers: 1, // the first receiver to connect is the cheated one
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Fanout
	if f.Sent != 100 || f.Expected != 500 || f.Received != 498 || f.Lost != 2 || f.Duplicates != 1 || f.Corrupt != 1 || f.Reordered != 0 || f.Foreign != 0 {
		t.Fatalf("sent %d expected %d received %d lost %d dups %d corrupt %d reordered %d foreign %d; want 100, 500, 498, 2 (one dropped, one corrupt), 1, 1, 0, 0",
			f.Sent, f.Expected, f.Received, f.Lost, f.Duplicates, f.Corrupt, f.Reordered, f.Foreign)
	}
}

// An SSE answer that is not a stream to read to the end is a failed
// connect, with the reason: fanout's own, turning a client away at its
// limit (a 200 with a Content-Length, retry: and the reason), an error
// status, another content type, a chunked body.
func TestSSEAnswers(t *testing.T) {
	wsURL, _, _ := startFanoutConfig(t, broadcast.Config{MaxConns: 1})
	held, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	fake := func(answer string) string {
		return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = rw.WriteString(answer)
			_ = rw.Flush()
		}))
	}
	for _, tc := range []struct{ name, url, want string }{
		{"fanout at its limit", wsURL, "turned away"},
		{"404", fake("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"), "404 Not Found"},
		{"not an event stream", fake("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"), "text/plain"},
		{"chunked", fake("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n"), "chunked"},
	} {
		cfg, err := Config{URL: tc.url, Transport: TransportSSE}.WithDefaults()
		if err != nil {
			t.Fatal(err)
		}
		nc, _, err := dialSSE(context.Background(), cfg, 0, cfg.receiverURL(0, ""))
		if err == nil {
			nc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestTransportConfig(t *testing.T) {
	cfg, err := Config{URL: "ws://h:1/ws?token=t", Transport: TransportSSE, Channel: "a"}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.receiverURL(0, cfg.channelFor(0)); u != "http://h:1/sse?token=t&channel=a" || cfg.Format != FormatJSON || cfg.Payload != PayloadBinary {
		t.Fatalf("sse: url %q, format %q, payload %q", u, cfg.Format, cfg.Payload)
	}
	if cfg, err = (Config{URL: "ws://h:1/ws", Format: FormatJSON}).WithDefaults(); err != nil || cfg.receiverURL(0, "") != "ws://h:1/ws?format=json" {
		t.Fatalf("json format: %v, url %q", err, cfg.receiverURL(0, ""))
	}
	for _, bad := range []Config{
		{Transport: "quic"},
		{Transport: TransportSSE, Compression: true},
		{Transport: TransportSSE, Format: FormatRaw},
		{Transport: TransportSSE, SSEPath: "sse"},
		{Transport: TransportSSE, URL: "wss://h/ws"},
		{SSEPath: "/sse"},
		{Format: "xml"},
		{URL: "ws://h/ws?format=json"},
		{Payload: "protobuf"},
		{Payload: PayloadJSON, Size: jsonPayloadMin - 1},
		{Scenario: ScenarioRooms, Transport: TransportSSE},
		{Scenario: ScenarioRooms, Format: FormatJSON},
		{Scenario: ScenarioRooms, Payload: PayloadJSON, Size: 100},
	} {
		if bad.URL == "" {
			bad.URL = "ws://h/ws"
		}
		if _, err := bad.WithDefaults(); err == nil {
			t.Errorf("%+v: accepted", bad)
		}
	}
}

// A JSON payload is valid JSON of exactly the size asked for, its header
// read back as written, whatever the size.
func TestJSONPayload(t *testing.T) {
	for size := jsonPayloadMin; size <= 2048; size++ {
		p := jsonFiller(size)
		putJSONPayload(p, 0xbeef, 1<<60+7, 1234567890123456789)
		if len(p) != size || !json.Valid(p) {
			t.Fatalf("size %d: %d bytes, valid %v: %s", size, len(p), json.Valid(p), p)
		}
		pub, seq, sent, err := parsePayload(p)
		if err != nil || pub != 0xbeef || seq != 1<<60+7 || sent != 1234567890123456789 || payloadHeaderLen(p) != jsonPayloadHeader {
			t.Fatalf("size %d: %x %d %d %v", size, pub, seq, sent, err)
		}
	}
}
