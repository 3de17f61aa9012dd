package hub_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
)

// cursorSub records how it joined: the cursor and what was replayed.
type cursorSub struct {
	hub.Slot
	joined chan joinedAt
}

type joinedAt struct {
	epoch     string
	seq       uint64
	recovered bool
	replay    []uint64
}

func (s *cursorSub) Join(j hub.Joined) {
	r := joinedAt{epoch: j.Epoch, seq: j.Seq, recovered: j.Recovered}
	for _, m := range j.Replay {
		r.replay = append(r.replay, m.Seq)
	}
	s.joined <- r
}
func (s *cursorSub) Encoding() hub.Encoding { return hub.EncodingFrame }
func (s *cursorSub) Deliver(frames [][]byte, _ int, _ *[]unix.Iovec) (int, int) {
	return len(frames), 0
}
func (s *cursorSub) Sweep(int64, bool) int { return 0 }
func (s *cursorSub) Drain()                {}
func (s *cursorSub) Kill()                 {}

func resume(t *testing.T, h *hub.Hub, id uint64, since hub.Cursor) joinedAt {
	t.Helper()
	s := &cursorSub{joined: make(chan joinedAt, 1)}
	h.Add(s, id, hub.Subscription{Channels: []string{"a"}, Resume: true, Since: since})
	select {
	case j := <-s.joined:
		return j
	case <-time.After(10 * time.Second):
		t.Fatalf("resume from %v never joined", since)
		return joinedAt{}
	}
}

func appendAt(t *testing.T, h *hub.Hub, epoch string, seq uint64) {
	t.Helper()
	if err := h.Append(hub.NewMessage("a", hub.KindText, []byte("m")), hub.Cursor{Epoch: epoch, Seq: seq}); err != nil {
		t.Fatalf("Append at %s:%d: %v", epoch, seq, err)
	}
}

// Seqs a tier's log gives: the hub starts where Begin says, replays
// within a run of seqs, never across a skip (messages it never saw may
// be there), refuses a seq it has passed, and a new epoch starts over,
// forgetting the old one.
func TestAppendCursors(t *testing.T) {
	h := hub.New(hub.Config{Shards: 1, History: historyOf(t)})
	defer h.Stop()
	if err := h.Begin(hub.Cursor{Epoch: "one", Seq: 10}); err != nil {
		t.Fatal(err)
	}
	if j := resume(t, h, 0, hub.Cursor{Epoch: "one", Seq: 10}); j.epoch != "one" || j.seq != 10 || !j.recovered {
		t.Fatalf("resume at the start: %+v, want recovered at one:10", j)
	}
	appendAt(t, h, "one", 11)
	appendAt(t, h, "one", 12)
	if err := h.Append(hub.NewMessage("a", hub.KindText, nil), hub.Cursor{Epoch: "one", Seq: 12}); !errors.Is(err, hub.ErrOrder) {
		t.Fatalf("Append at a seq passed: %v, want ErrOrder", err)
	}
	if j := resume(t, h, 0, hub.Cursor{Epoch: "one", Seq: 9}); j.recovered {
		t.Fatalf("resume from before Begin: %+v, want not recovered (the hub never had 10)", j)
	}
	appendAt(t, h, "one", 15) // 13 and 14 never came
	if j := resume(t, h, 0, hub.Cursor{Epoch: "one", Seq: 12}); j.recovered {
		t.Fatalf("resume across a skip: %+v, want not recovered", j)
	}
	appendAt(t, h, "one", 16)
	if j := resume(t, h, 0, hub.Cursor{Epoch: "one", Seq: 15}); !j.recovered || !slices.Equal(j.replay, []uint64{16}) || j.seq != 16 {
		t.Fatalf("resume after the skip: %+v, want recovered, replaying 16", j)
	}
	appendAt(t, h, "two", 1) // the log was recreated
	if h.Epoch() != "two" {
		t.Fatalf("epoch %q after a message of epoch two", h.Epoch())
	}
	if j := resume(t, h, 0, hub.Cursor{Epoch: "one", Seq: 16}); j.recovered || j.epoch != "two" || j.seq != 1 {
		t.Fatalf("resume from the old epoch: %+v, want not recovered, joined at two:1", j)
	}
	appendAt(t, h, "two", 2)
	if j := resume(t, h, 0, hub.Cursor{Epoch: "two", Seq: 1}); !j.recovered || !slices.Equal(j.replay, []uint64{2}) {
		t.Fatalf("resume in the new epoch: %+v, want recovered, replaying 2", j)
	}
	if err := h.Begin(hub.Cursor{Epoch: "three"}); err == nil {
		t.Fatal("Begin after messages: no error")
	}
}

// AppendWait holds a message while the ring is full and puts it in once
// the slowest shard frees a slot; nothing is refused.
func TestAppendWaitBackPressure(t *testing.T) {
	h := hub.New(hub.Config{Shards: 1, Backlog: 2})
	defer h.Stop()
	block := make(chan struct{})
	var unblock sync.Once
	defer unblock.Do(func() { close(block) }) // before Stop: a failure must not leave the shard stuck
	entered := make(chan struct{})
	busy := &joinSub{joined: make(chan hub.Joined, 1), block: block, entered: entered}
	h.Add(busy, 0, hub.Subscription{})
	<-busy.joined
	msg := func() hub.Message { return hub.NewMessage("", hub.KindText, []byte("m")) }
	ctx := context.Background()
	if err := h.AppendWait(ctx, msg(), hub.Cursor{Epoch: "e", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	<-entered // the shard took 1 and is stuck delivering it
	for seq := uint64(2); seq <= 3; seq++ {
		if err := h.AppendWait(ctx, msg(), hub.Cursor{Epoch: "e", Seq: seq}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Append(msg(), hub.Cursor{Epoch: "e", Seq: 4}); !errors.Is(err, hub.ErrBacklog) {
		t.Fatalf("Append into a full ring: %v, want ErrBacklog", err)
	}
	short, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.AppendWait(short, msg(), hub.Cursor{Epoch: "e", Seq: 4}); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendWait with its context done: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- h.AppendWait(ctx, msg(), hub.Cursor{Epoch: "e", Seq: 4}) }()
	// The canceled one waited once too: this one is the second.
	waitUntil(t, "AppendWait to wait", func() bool { return h.Stats().BacklogWaits == 2 })
	select {
	case err := <-done:
		t.Fatalf("AppendWait returned %v with the ring full", err)
	default:
	}
	unblock.Do(func() { close(block) }) // the shard moves on: room
	if err := <-done; err != nil {
		t.Fatalf("AppendWait once there was room: %v", err)
	}
	waitUntil(t, "all four delivered", func() bool {
		busy.mu.Lock()
		defer busy.mu.Unlock()
		return len(busy.seqs) == 4
	})
}
