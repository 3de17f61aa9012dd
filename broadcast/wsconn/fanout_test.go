package wsconn_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// devnullSubscribers returns n connections in format on channel ("": the
// default one) whose socket is /dev/null (one fd for all): every write
// succeeds in full and costs the kernel little, so what is measured is
// the fan-out path's own cost. The loopback cost is measured by
// fanout-bench ceiling, not here.
func devnullSubscribers(tb testing.TB, n int, format wsconn.Format, channel string) []hub.Subscriber {
	tb.Helper()
	devnull, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(devnull) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	env := wsconn.NewEnv(wsconn.Config{Logger: log}, outbound.NewEnv(outbound.Config{Logger: log}), nil, nil, nil)
	var channels []string
	if channel != "" {
		channels = []string{channel}
	}
	subs := make([]hub.Subscriber, n)
	for i := range subs {
		subs[i] = wsconn.New(env, uint64(i+1), devnull, wsconn.Options{Format: format, Channels: channels})
	}
	return subs
}

// fanoutCase is a table of receivers: all of them on one channel, among
// others.
type fanoutCase struct {
	name    string
	format  wsconn.Format
	channel string // what the receivers are on, and the messages go to
	others  int    // channels with one subscriber each that get nothing
}

var fanoutCases = []fanoutCase{
	{"default", wsconn.FormatRaw, "", 0},
	{"channel", wsconn.FormatRaw, "room", 1000},
	{"json", wsconn.FormatJSON, "room", 1000},
}

// table links n receivers of fc, and fc.others bystanders, into a table.
func (fc fanoutCase) table(tb testing.TB, n int) *hub.Table {
	t := new(hub.Table)
	for _, sub := range devnullSubscribers(tb, n, fc.format, fc.channel) {
		t.Link(sub, channelsOf(fc.channel))
	}
	for i, sub := range devnullSubscribers(tb, fc.others, wsconn.FormatRaw, "x") {
		t.Link(sub, []string{fmt.Sprintf("other-%d", i)})
	}
	return t
}

func channelsOf(c string) []string {
	if c == "" {
		return nil
	}
	return []string{c}
}

// BenchmarkFanout measures the fan-out path, encode once plus one writev
// per connection, at 100, 1,000 and 10,000 receivers, with 1 and 4
// messages per batch: on the default channel, on a named channel among
// 1,000 others, and in the JSON envelope. Allocations per broadcast must
// not grow with receivers.
func BenchmarkFanout(b *testing.B) {
	for _, fc := range fanoutCases {
		for _, n := range []int{100, 1000, 10000} {
			for _, batch := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/receivers=%d/frames=%d", fc.name, n, batch), func(b *testing.B) {
					t := fc.table(b, n)
					payload := make([]byte, 64)
					msgs := make([]hub.Message, batch)
					var delivered uint64
					b.ReportAllocs()
					b.SetBytes(int64(n * batch * (len(payload) + 2)))
					seq := uint64(0)
					for b.Loop() {
						for i := range msgs {
							msgs[i] = hub.NewMessage(fc.channel, hub.KindBinary, payload)
							seq++
							msgs[i].Seq = seq
						}
						d, _ := t.FanOut(msgs)
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
}

// TestBroadcastAllocatesOnce asserts what the README claims: a broadcast
// allocates O(1), whatever the number of recipients: the message (its
// frame and its encodings' holder) and, for JSON recipients, the envelope.
func TestBroadcastAllocatesOnce(t *testing.T) {
	payload := make([]byte, 64)
	for _, fc := range fanoutCases {
		want := 2.0
		if fc.format == wsconn.FormatJSON {
			want = 3
		}
		for _, n := range []int{1, 100, 2000} {
			tbl := fc.table(t, n)
			msgs := make([]hub.Message, 1)
			msgs[0] = hub.NewMessage(fc.channel, hub.KindText, payload)
			tbl.FanOut(msgs) // grow the scratch once
			var delivered uint64
			allocs := testing.AllocsPerRun(50, func() {
				msgs[0] = hub.NewMessage(fc.channel, hub.KindText, payload)
				d, _ := tbl.FanOut(msgs)
				delivered += d
			})
			if allocs != want {
				t.Errorf("%s, %d recipients: %.1f allocations per broadcast, want %.0f", fc.name, n, allocs, want)
			}
			if want := uint64(51 * n); delivered != want {
				t.Errorf("%s, %d recipients: %d deliveries, want %d", fc.name, n, delivered, want)
			}
		}
	}
}
