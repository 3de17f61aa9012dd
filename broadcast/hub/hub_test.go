package hub_test

import (
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
)

// fakeSub records what its shard does to it.
type fakeSub struct {
	hub.Slot
	mu      sync.Mutex
	got     []string
	joined  chan struct{}
	drained chan struct{}
	swept   chan struct{} // capacity 1: a sweep ran since the last receive
	once    sync.Once
}

func newFake() *fakeSub {
	return &fakeSub{joined: make(chan struct{}), drained: make(chan struct{}), swept: make(chan struct{}, 1)}
}

func (f *fakeSub) Join(hub.Joined)        { close(f.joined) }
func (f *fakeSub) Encoding() hub.Encoding { return hub.EncodingFrame }
func (f *fakeSub) Deliver(frames [][]byte, size int, _ *[]unix.Iovec) (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range frames {
		f.got = append(f.got, string(b[2:])) // short frames: 2-byte header
	}
	return len(frames), 0
}
func (f *fakeSub) Sweep(int64, bool) int {
	select {
	case f.swept <- struct{}{}:
	default:
	}
	return 0
}
func (f *fakeSub) Drain() { f.once.Do(func() { close(f.drained) }) }
func (f *fakeSub) Kill()  {}

func (f *fakeSub) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func await(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A subscriber that joins after its shard carried out the drain is
// drained too, at once, instead of waiting out the shutdown timeout.
func TestJoinAfterDrainIsDrained(t *testing.T) {
	h := hub.New(hub.Config{Shards: 1})
	defer h.Stop()
	a := newFake()
	h.Add(a, 1, hub.Subscription{})
	await(t, "a to join", a.joined)
	h.Drain()
	await(t, "a to be drained", a.drained)
	b := newFake()
	h.Add(b, 2, hub.Subscription{})
	await(t, "b to join", b.joined)
	await(t, "b, added after the drain, to be drained", b.drained)
}

// Every subscriber gets every message broadcast after it joined, in hub
// order, and the seqs are the ring's order.
func TestBroadcastAfterJoinInOrder(t *testing.T) {
	h := hub.New(hub.Config{Shards: 4})
	defer h.Stop()
	subs := make([]*fakeSub, 8)
	for i := range subs {
		subs[i] = newFake()
		h.Add(subs[i], uint64(i), hub.Subscription{})
		await(t, "join", subs[i].joined)
	}
	const n = 500
	var want []string
	for i := 0; i < n; i++ {
		msg := string(rune('a' + i%26))
		want = append(want, msg)
		for {
			seq, err := h.Broadcast(hub.NewMessage("", hub.KindText, []byte(msg)))
			if err == hub.ErrBacklog {
				time.Sleep(time.Millisecond) // the shards catch up; retry
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if seq != uint64(i+1) {
				t.Fatalf("message %d got seq %d", i, seq)
			}
			break
		}
	}
	h.Drain()
	for i, s := range subs {
		await(t, "drain", s.drained)
		got := s.messages()
		if len(got) != n {
			t.Fatalf("subscriber %d got %d messages, want %d", i, len(got), n)
		}
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("subscriber %d message %d = %q, want %q", i, j, got[j], want[j])
			}
		}
	}
	if _, err := h.Broadcast(hub.NewMessage("", hub.KindText, []byte("late"))); err != hub.ErrClosed {
		t.Fatalf("Broadcast after Drain: %v, want ErrClosed", err)
	}
}

// With DrainSpread, the goodbyes are spread out: an hour-long spread
// drains none of 20 subscribers right away, while one that joins after
// the drain started is drained at once (so the shard did run the drain).
func TestDrainSpread(t *testing.T) {
	h := hub.New(hub.Config{Shards: 1, DrainSpread: time.Hour, SweepEvery: 5 * time.Millisecond})
	defer h.Stop()
	early := make([]*fakeSub, 20)
	for i := range early {
		early[i] = newFake()
		h.Add(early[i], uint64(i), hub.Subscription{})
		await(t, "join", early[i].joined)
	}
	h.Drain()
	// A sweep that signals after this receive ran in a round that goes on
	// to the drain step, which sees the drain begun: the drain has
	// started before the late subscriber's addition is applied.
	select {
	case <-early[0].swept:
	default:
	}
	await(t, "a sweep after the drain", early[0].swept)
	late := newFake()
	h.Add(late, 99, hub.Subscription{})
	await(t, "the late subscriber to be drained", late.drained)
	for i, s := range early {
		select {
		case <-s.drained:
			t.Fatalf("subscriber %d drained at once despite the spread", i)
		default:
		}
	}
}
