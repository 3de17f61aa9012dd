package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
)

// pingThenClose is a server that pings each client, waits for its pong,
// then closes it with 4001 and records the code the client echoed.
type pingThenClose struct {
	mu     sync.Mutex
	pongs  int
	echoes map[int]int // close code the client sent back -> count
}

func (s *pingThenClose) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	pong := make(chan struct{}, 1)
	conn.SetPongHandler(func(data string) error {
		if data == "are you there" {
			s.mu.Lock()
			s.pongs++
			s.mu.Unlock()
		}
		pong <- struct{}{}
		return nil
	})
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				read <- err
				return
			}
		}
	}()
	_ = conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second))
	select {
	case <-pong:
	case <-time.After(10 * time.Second):
	}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(time.Second))
	var ce *websocket.CloseError
	if err := <-read; errors.As(err, &ce) {
		s.mu.Lock()
		s.echoes[ce.Code]++
		s.mu.Unlock()
	}
}

// Receivers answer a ping with its payload and echo a close: the server
// sees a pong from each, and the bench files each close under its code.
func TestReceiversAnswerPingAndClose(t *testing.T) {
	srv := &pingThenClose{echoes: map[int]int{}}
	url := serve(t, srv)
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioConnect, URL: url, Conns: 5, Hold: 2 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connect.Connected != 5 || res.Closes["4001"] != 5 {
		t.Fatalf("connected %d, closes %v; want 5 and 5 of 4001", res.Connect.Connected, res.Closes)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.pongs != 5 || srv.echoes[4001] != 5 {
		t.Fatalf("server saw %d pongs and echoes %v; want 5 and 5 of 4001", srv.pongs, srv.echoes)
	}
}

// readSlow finds how the server ended a receiver that never read, from the
// bytes that came with the handshake on.
func TestReadSlow(t *testing.T) {
	msgs := slices.Concat(frame.Compile(ws.OpBinary, []byte("backlog")), frame.Compile(ws.OpPing, nil))
	for _, tc := range []struct {
		name   string
		stream []byte
		hangUp bool
		done   bool
		code   ws.StatusCode
	}{
		{"close after a backlog", slices.Concat(msgs, frame.Close(4001, "slow")), false, true, 4001},
		{"close without a code", slices.Concat(msgs, frame.Close(ws.StatusNoStatusRcvd, "")), false, true, ws.StatusNoStatusRcvd},
		{"hang-up without a close", msgs, true, true, ws.StatusAbnormalClosure},
		{"masked frame", slices.Concat(msgs, frame.CompileMasked(ws.OpBinary, []byte("x"))), false, true, ws.StatusProtocolError},
		{"still open", msgs, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := net.Pipe()
			defer theirs.Close()
			r := &receiver{pool: &recvPool{closes: map[int]int64{}}, nc: ours}
			r.buf = append([]byte(nil), tc.stream[:3]...) // came with the 101
			go func() {
				_, _ = theirs.Write(tc.stream[3:])
				if tc.hangUp {
					theirs.Close()
				}
			}()
			r.readSlow(200 * time.Millisecond)
			if r.done != tc.done || r.closeCode != tc.code {
				t.Fatalf("done %v code %d; want %v %d", r.done, r.closeCode, tc.done, tc.code)
			}
		})
	}
}

// receiveCase is a stream of 16 bench messages as a receiver of cfg (its
// Transport, Format, Compression and Payload) reads them from fanout,
// encoded as fanout encodes them, and such a receiver, stable and
// counting.
func receiveCase(t testing.TB, cfg Config) (stream []byte, r *receiver) {
	t.Helper()
	cfg, err := cfg.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	kind := hub.KindBinary
	if cfg.Payload == PayloadJSON || cfg.Payload == PayloadText {
		kind = hub.KindText // what a raw-format publisher's text frame is
	}
	p := newPayload(cfg)
	for i := range 16 {
		putMessage(cfg, p, 0, uint64(i), time.Now().UnixNano())
		switch {
		case cfg.Protocol == ProtocolPusher: // as encoding/json writes it: keys sorted
			ev, _ := json.Marshal(map[string]string{"event": cfg.PusherEvent, "channel": cfg.Channel, "data": string(p)})
			stream = append(stream, frame.Compile(ws.OpText, ev)...)
		case cfg.Transport == TransportSSE:
			stream = fmt.Appendf(stream, "id: epoch:%d\ndata: %s\n\n", i+1, envelopeOf("", kind, p, uint64(i+1)))
		case cfg.Format == FormatJSON:
			stream = append(stream, frame.Compile(ws.OpText, envelopeOf("", kind, p, uint64(i+1)))...)
		case cfg.Compression:
			f, ok := frame.CompileDeflate(kind.Op(), p)
			if !ok {
				t.Fatalf("%s payload of %d bytes does not compress", cfg.Payload, cfg.Size)
			}
			stream = append(stream, f...)
		default:
			stream = append(stream, frame.Compile(kind.Op(), p)...)
		}
	}
	pool, err := newRecvPool(cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.close)
	pool.counting.Store(true)
	r = &receiver{pool: pool, stable: true, parser: frame.Parser{MaxMessage: maxServerFrame, Deflate: cfg.Compression}}
	return stream, r
}

// receive parses stream as onRead does, every message new to r (its
// accounting forgotten first: a repeated sequence would take the
// duplicate path), and fails unless all 16 were counted.
func receive(t testing.TB, r *receiver, stream []byte) {
	r.tracks = r.tracks[:0]
	before := r.pool.unique.Load()
	r.buf = append(r.buf[:0], stream...)
	r.now = time.Now().UnixNano()
	if err := r.parse(); err != nil || len(r.buf) != 0 {
		t.Fatalf("parse: %v, %d bytes left", err, len(r.buf))
	}
	if got := r.pool.unique.Load() - before; got != 16 {
		t.Fatalf("%d of 16 messages counted (foreign %d, corrupt %d)", got, r.pool.foreign.Load(), r.pool.corrupt.Load())
	}
}

// receiveCases are the receive paths: raw frames, json-format frames and
// SSE events, binary and JSON payloads; deflate frames are benchmarked,
// but inflating (frame's, the server's codec) allocates.
var receiveCases = []struct {
	name   string
	cfg    Config
	allocs bool
}{
	{"raw-64", Config{Size: 64}, false},
	{"raw-1024", Config{Size: 1024}, false},
	{"raw-json-1024", Config{Size: 1024, Payload: PayloadJSON}, false},
	{"deflate-json-1024", Config{Size: 1024, Payload: PayloadJSON, Compression: true}, true},
	{"wsjson-json-1024", Config{Size: 1024, Payload: PayloadJSON, Format: FormatJSON}, false},
	{"sse-64", Config{Size: 64, Transport: TransportSSE}, false},
	{"sse-json-1024", Config{Size: 1024, Payload: PayloadJSON, Transport: TransportSSE}, false},
	{"pusher-text-64", pusherReceiveConfig(64, PayloadText), false},
	{"pusher-json-1024", pusherReceiveConfig(1024, PayloadJSON), false},
}

// pusherReceiveConfig is a Pusher receiver's (connect: it needs no API).
func pusherReceiveConfig(size int, payload string) Config {
	return Config{Scenario: ScenarioConnect, Protocol: ProtocolPusher, PusherKey: "k", Channel: "c", Size: size, Payload: payload}
}

// The receive path, parse and accounting, runs for every delivery the
// bench measures: it must not allocate, from a frame, an envelope or an
// event. (Envelopes decode into pooled buffers: not under the race
// detector, whose sync.Pool drops them at random.)
func TestReceiveDoesNotAllocate(t *testing.T) {
	for _, tc := range receiveCases {
		if tc.allocs || (raceEnabled && (tc.cfg.Transport == TransportSSE || tc.cfg.Format == FormatJSON || tc.cfg.Protocol == ProtocolPusher)) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.URL = "ws://127.0.0.1:1/ws"
			stream, r := receiveCase(t, tc.cfg)
			if a := testing.AllocsPerRun(100, func() { receive(t, r, stream) }); a != 0 {
				t.Fatalf("%v allocations per 16 deliveries, want 0", a)
			}
		})
	}
}

func BenchmarkReceive(b *testing.B) {
	for _, tc := range receiveCases {
		tc.cfg.URL = "ws://127.0.0.1:1/ws"
		stream, r := receiveCase(b, tc.cfg)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				receive(b, r, stream)
			}
		})
	}
}
