package broadcast

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/outbound"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// What a subscription costs the way a connection gets one: its URL's
// query parsed (parseSubscription, the names canonical, not pinning the
// query), the connection made, the table's entries (the connection keeps
// no list of its own). On channels others are on too (the common case: a
// room, a document, a match) one beyond the first costs at most 64 bytes.
func TestSubscriptionBytesRealPath(t *testing.T) {
	if os.Getenv("FANOUT_MEASURE_SUBSCRIPTIONS") == "" {
		// In a process of its own: the heap of one that ran other tests
		// (servers shutting down, their garbage) moves while it measures
		// (CI saw 77.8 B for a 51.5 B subscription that way).
		cmd := exec.Command(os.Args[0], "-test.run=^TestSubscriptionBytesRealPath$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "FANOUT_MEASURE_SUBSCRIPTIONS=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the measuring process: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		return
	}
	const n = 20000
	names := []string{"room:sports/football", "room:news/europe", "room:weather/paris", "room:markets/fx", "room:chat/general"}
	heap := func(k int) uint64 {
		devnull, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(devnull)
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		env := wsconn.NewEnv(wsconn.Config{Logger: log}, outbound.NewEnv(outbound.Config{Logger: log}), nil, nil, nil)
		query := ""
		for _, c := range names[:k] {
			query += "channel=" + url.QueryEscape(c) + "&"
		}
		query += "token=" + fmt.Sprintf("%0400d", 7) // a JWT's worth of query the names must not keep alive
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		tbl := new(hub.Table)
		conns := make([]*wsconn.Conn, n)
		for i := range conns {
			q, err := url.ParseQuery(string([]byte(query)))
			if err != nil {
				t.Fatal(err)
			}
			sub, err := parseSubscription(q, 64)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = wsconn.New(env, uint64(i+1), devnull, wsconn.Options{Format: wsconn.FormatJSON, Channels: sub.channels})
			tbl.Link(conns[i], sub.channels)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(conns)
		runtime.KeepAlive(tbl)
		return after.HeapAlloc - before.HeapAlloc
	}
	per := math.Inf(1)
	for range 3 { // the least of three: what the table holds, not what the collector left
		one, five := heap(1), heap(5)
		per = min(per, (float64(five)-float64(one))/(4*n))
	}
	one, five := heap(1), heap(5)
	t.Logf("%.1f bytes per subscription beyond the first, on the real path (least of 3; %d connections: %d B on 1 channel, %d B on 5 in a last run)", per, n, one, five)
	if per > 64 {
		t.Errorf("%.1f bytes per subscription, over 64", per)
	}
}
