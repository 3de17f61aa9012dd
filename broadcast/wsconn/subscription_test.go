package wsconn_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// heapWith returns the live heap, in bytes, once n connections are each
// linked on the channels names(i) gives, in one table (and the table, so
// it stays alive until measured).
func heapWith(t testing.TB, n int, names func(i int) []string) (uint64, *hub.Table) {
	t.Helper()
	subs := devnullSubscribers(t, n, wsconn.FormatJSON, "")
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	tbl := new(hub.Table)
	for i, sub := range subs {
		tbl.Link(sub, names(i))
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(subs)
	return after.HeapAlloc - before.HeapAlloc, tbl
}

// TestSubscriptionBytes measures what a subscription costs beyond its
// connection: the table's memory with every connection on 5 channels,
// less with every one on 1, over the 4 extra subscriptions each. Shared
// channels (a room of many) must cost at most 64 bytes a subscription;
// channels of their own (one per user) add the channel itself, reported.
func TestSubscriptionBytes(t *testing.T) {
	const n = 20000
	shared := func(k int) func(int) []string {
		return func(int) []string { return []string{"a", "b", "c", "d", "e"}[:k] }
	}
	own := func(k int) func(int) []string {
		return func(i int) []string {
			out := make([]string, k)
			for j := range out {
				out[j] = fmt.Sprintf("u%d-%d", i, j)
			}
			return out
		}
	}
	for _, tc := range []struct {
		name  string
		names func(k int) func(int) []string
		limit float64
	}{
		{"shared channels", shared, 64},
		{"a channel of its own", own, 0},
	} {
		one, t1 := heapWith(t, n, tc.names(1))
		five, t5 := heapWith(t, n, tc.names(5))
		per := (float64(five) - float64(one)) / (4 * n)
		t.Logf("%s: %.1f bytes per subscription beyond the first (%d connections: %d B on 1 channel, %d B on 5)", tc.name, per, n, one, five)
		if tc.limit > 0 && per > tc.limit {
			t.Errorf("%s: %.1f bytes per subscription, over %v", tc.name, per, tc.limit)
		}
		runtime.KeepAlive(t1)
		runtime.KeepAlive(t5)
	}
}
