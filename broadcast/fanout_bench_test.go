package broadcast

import (
	"fmt"
	"testing"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/frame"
)

// BenchmarkFanout measures the fan-out path, encode once plus one writev
// per connection, at 100, 1,000 and 10,000 receivers. The sockets are
// /dev/null (one fd for all: the kernel's loopback cost is measured by
// fanout-bench ceiling, not here), so what is left is the path's own
// cost. Allocations per broadcast must not grow with receivers.
func BenchmarkFanout(b *testing.B) {
	devnull, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(devnull)
	for _, n := range []int{100, 1000, 10000} {
		for _, batch := range []int{1, 4} {
			b.Run(fmt.Sprintf("receivers=%d/frames=%d", n, batch), func(b *testing.B) {
				srv := &Server{cfg: Config{}.withDefaults()}
				sh := &shard{srv: srv, fanoutHist: newBucketHist(fanoutBounds...), queueHist: newBucketHist(queueBounds...)}
				for i := 0; i < n; i++ {
					sh.conns = append(sh.conns, &conn{srv: srv, sh: sh, fd: devnull})
				}
				payload := make([]byte, 64)
				frames := make([][]byte, batch)
				b.ReportAllocs()
				b.SetBytes(int64(n * batch * (len(payload) + 2)))
				for b.Loop() {
					for i := range frames {
						frames[i] = frame.Compile(ws.OpBinary, payload)
					}
					sh.fanout(frames)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n*batch), "ns/delivery")
				if got := sh.deliveries.Load(); got != uint64(b.N*n*batch) {
					b.Fatalf("%d deliveries, want %d", got, b.N*n*batch)
				}
			})
		}
	}
}
