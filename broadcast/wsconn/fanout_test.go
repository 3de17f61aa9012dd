package wsconn_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// devnullSubscribers returns n connections whose socket is /dev/null (one
// fd for all): every write succeeds in full and costs the kernel little,
// so what is measured is the fan-out path's own cost. The loopback cost
// is measured by fanout-bench ceiling, not here.
func devnullSubscribers(tb testing.TB, n int) []hub.Subscriber {
	tb.Helper()
	devnull, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(devnull) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := wsconn.NewEnv(wsconn.Config{Logger: log}, outbound.NewEnv(outbound.Config{Logger: log}), nil, nil, nil)
	subs := make([]hub.Subscriber, n)
	for i := range subs {
		subs[i] = wsconn.New(env, uint64(i+1), devnull)
	}
	return subs
}

// BenchmarkFanout measures the fan-out path, encode once plus one writev
// per connection, at 100, 1,000 and 10,000 receivers, with 1 and 4
// messages per batch. Allocations per broadcast must not grow with
// receivers.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, batch := range []int{1, 4} {
			b.Run(fmt.Sprintf("receivers=%d/frames=%d", n, batch), func(b *testing.B) {
				subs := devnullSubscribers(b, n)
				payload := make([]byte, 64)
				msgs := make([]hub.Message, batch)
				var sc hub.Scratch
				var delivered uint64
				b.ReportAllocs()
				b.SetBytes(int64(n * batch * (len(payload) + 2)))
				for b.Loop() {
					for i := range msgs {
						msgs[i] = hub.NewMessage(ws.OpBinary, payload)
					}
					d, _ := hub.FanOut(subs, msgs, &sc)
					delivered += d
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*batch), "ns/delivery")
				if delivered != uint64(b.N*n*batch) {
					b.Fatalf("%d deliveries, want %d", delivered, b.N*n*batch)
				}
			})
		}
	}
}

// TestBroadcastAllocatesOnce asserts what the README claims: a broadcast
// allocates O(1), the encoded message, whatever the number of recipients.
func TestBroadcastAllocatesOnce(t *testing.T) {
	payload := make([]byte, 64)
	for _, n := range []int{1, 100, 2000} {
		subs := devnullSubscribers(t, n)
		var sc hub.Scratch
		msgs := make([]hub.Message, 1)
		hub.FanOut(subs, msgs, &sc) // grow the scratch once
		var delivered uint64
		allocs := testing.AllocsPerRun(50, func() {
			msgs[0] = hub.NewMessage(ws.OpText, payload)
			d, _ := hub.FanOut(subs, msgs, &sc)
			delivered += d
		})
		if allocs != 1 {
			t.Errorf("%d recipients: %.1f allocations per broadcast, want 1", n, allocs)
		}
		if want := uint64(51 * n); delivered != want {
			t.Errorf("%d recipients: %d deliveries, want %d", n, delivered, want)
		}
	}
}
