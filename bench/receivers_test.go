package bench

import (
	"context"
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

// benchStream is n server frames carrying bench messages of size bytes,
// with the offset of each payload.
func benchStream(n, size int) (stream []byte, offs []int) {
	for i := 0; i < n; i++ {
		f := frame.Compile(ws.OpBinary, make([]byte, size))
		offs = append(offs, len(stream)+len(f)-size)
		stream = append(stream, f...)
	}
	return stream, offs
}

// countingReceiver is a stable receiver of a pool that is counting.
func countingReceiver() *receiver {
	p := &recvPool{closes: map[int]int64{}}
	p.counting.Store(true)
	return &receiver{pool: p, stable: true, parser: frame.Parser{MaxMessage: maxServerFrame}}
}

// receive parses stream as onRead does, after stamping fresh sequence
// numbers from seq on (a repeated one would take the duplicate path).
func receive(r *receiver, stream []byte, offs []int, seq uint64) error {
	now := time.Now().UnixNano()
	for i, off := range offs {
		putPayload(stream[off:], 0, seq+uint64(i), now)
	}
	r.now = now
	_, err := r.parser.ParseServer(stream, r)
	return err
}

// The receive path, parse and accounting, runs for every delivery the
// bench measures: it must not allocate.
func TestReceiveDoesNotAllocate(t *testing.T) {
	stream, offs := benchStream(16, 64)
	r := countingReceiver()
	seq := uint64(0)
	if a := testing.AllocsPerRun(100, func() {
		if err := receive(r, stream, offs, seq); err != nil {
			t.Fatal(err)
		}
		seq += uint64(len(offs))
	}); a != 0 {
		t.Fatalf("%v allocations per 16 deliveries, want 0", a)
	}
	if got := r.pool.unique.Load(); got != seq {
		t.Fatalf("%d unique deliveries counted, want %d", got, seq)
	}
}

func BenchmarkReceive(b *testing.B) {
	for _, size := range []int{64, 1024} {
		stream, offs := benchStream(16, size)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			r := countingReceiver()
			seq := uint64(0)
			for b.Loop() {
				if err := receive(r, stream, offs, seq); err != nil {
					b.Fatal(err)
				}
				seq += uint64(len(offs))
			}
		})
	}
}
