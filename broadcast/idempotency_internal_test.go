package broadcast

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"
)

// Failed keyed publishes are not remembered (the retry runs) and do not
// pile up: the order stays within the cap, whatever fails.
func TestIdempotencyFailuresStayBounded(t *testing.T) {
	d := newIdempotency(time.Minute, 100, slog.New(slog.NewTextHandler(io.Discard, nil)))
	fail := errors.New("refused")
	for i := 0; i < 100000; i++ {
		if _, err := d.do(fmt.Sprint("k", i), func() (Receipt, error) { return Receipt{}, fail }); err != fail {
			t.Fatal(err)
		}
	}
	d.mu.Lock()
	n, keys := len(d.order)-d.at, len(d.keys)
	d.mu.Unlock()
	if keys != 0 || n > 2*100+1024+1 {
		t.Fatalf("after 100,000 failures: %d keys, %d in the order; want 0 and a bounded order", keys, n)
	}
	calls := 0
	for i := 0; i < 2; i++ {
		r, err := d.do("again", func() (Receipt, error) { calls++; return Receipt{Seq: 7}, nil })
		if err != nil || r.Seq != 7 {
			t.Fatal(r, err)
		}
	}
	if calls != 1 {
		t.Fatalf("published %d times for one key, want 1", calls)
	}
}
