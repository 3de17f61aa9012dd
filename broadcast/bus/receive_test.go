package bus

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func busMsg(origin, seq uint64) *nats.Msg {
	d := make([]byte, headerSize)
	binary.BigEndian.PutUint64(d, origin)
	binary.BigEndian.PutUint64(d[8:], seq)
	d[16], d[17] = 0, 0 // text, on the default channel
	return &nats.Msg{Data: append(d, fmt.Sprint(seq)...)}
}

// Receivers deliver each origin's messages once and in order, even when a
// resend arrives after newer messages; a gap that never fills is given up
// after HoldTimeout, counted, and what waited behind it goes out in order.
func TestReceiveReordersAndDedupes(t *testing.T) {
	var got []string
	b := newNATS(Config{BufferBytes: 1 << 20, HoldTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(_ string, _ byte, p []byte) { got = append(got, string(p)) })
	const x, y = 7, 9
	for _, s := range []uint64{1, 2, 5, 6, 3, 2, 4, 4, 7} { // 3 and 4 arrive late (a resend), 2 and 4 twice
		b.receive(busMsg(x, s))
	}
	b.receive(busMsg(y, 100)) // another node, first heard at 100
	b.receive(busMsg(y, 101))
	want := []string{"1", "2", "3", "4", "5", "6", "7", "100", "101"}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	if st := b.Stats(); st.Duplicates != 2 || st.Gaps != 0 || st.Received != 9 {
		t.Fatalf("stats %+v", st)
	}

	// 8 never comes: 9 and 10 wait, then go out when the gap is given up.
	got = nil
	b.receive(busMsg(x, 9))
	b.receive(busMsg(x, 10))
	if len(got) != 0 {
		t.Fatalf("delivered %v across a gap", got)
	}
	go b.expireHolds()
	defer close(b.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.rmu.Lock()
		n := len(got)
		b.rmu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gap was never given up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.rmu.Lock()
	defer b.rmu.Unlock()
	if !slices.Equal(got, []string{"9", "10"}) || b.Stats().Gaps != 1 {
		t.Fatalf("after giving up: %v, gaps %d", got, b.Stats().Gaps)
	}
}
