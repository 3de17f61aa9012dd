package hub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/hub"
)

// tableSub records what a Table delivers to it, in one encoding.
type tableSub struct {
	hub.Slot
	enc     hub.Encoding
	got     []string
	batches int // Deliver calls
}

func (s *tableSub) Join(hub.Joined)        {}
func (s *tableSub) Encoding() hub.Encoding { return s.enc }
func (s *tableSub) Deliver(frames [][]byte, _ int, _ *[]unix.Iovec) (int, int) {
	s.batches++
	for _, f := range frames {
		s.got = append(s.got, string(f[2:]))
	}
	return len(frames), 0
}
func (s *tableSub) Sweep(int64, bool) int { return 0 }
func (s *tableSub) Drain()                {}
func (s *tableSub) Kill()                 {}

func batchOf(msgs ...[2]string) []hub.Message {
	out := make([]hub.Message, len(msgs))
	for i, m := range msgs {
		out[i] = hub.NewMessage(m[0], hub.KindText, []byte(m[1]))
		out[i].Seq = uint64(i + 1)
	}
	return out
}

// A subscriber gets its channels' messages of a batch, merged in batch
// order, in one Deliver; others' messages never; a batch of one channel
// goes to that channel's members only.
func TestTableFanOutByChannel(t *testing.T) {
	var tb hub.Table
	a, b, ab, def := &tableSub{}, &tableSub{}, &tableSub{}, &tableSub{}
	tb.Link(a, []string{"a"})
	tb.Link(b, []string{"b"})
	tb.Link(ab, []string{"a", "b"})
	tb.Link(def, nil)
	d, _ := tb.FanOut(batchOf([2]string{"a", "1"}, [2]string{"b", "2"}, [2]string{"c", "3"}, [2]string{"", "4"}, [2]string{"a", "5"}, [2]string{"b", "6"}))
	for _, tc := range []struct {
		sub  *tableSub
		want []string
	}{
		{a, []string{"1", "5"}},
		{b, []string{"2", "6"}},
		{ab, []string{"1", "2", "5", "6"}},
		{def, []string{"4"}},
	} {
		if !slices.Equal(tc.sub.got, tc.want) || tc.sub.batches != 1 {
			t.Errorf("got %v in %d Delivers, want %v in 1", tc.sub.got, tc.sub.batches, tc.want)
		}
	}
	if d != 9 {
		t.Errorf("%d deliveries, want 9", d)
	}
	if n := tb.Members("a"); n != 2 {
		t.Errorf("Members(a) = %d, want 2", n)
	}
}

// Unlinking swaps the last member into the hole: every remaining
// subscriber still gets exactly its messages, a channel with no members
// left is gone (a publish to it reaches no one), and unlinking twice is
// harmless.
func TestTableUnlink(t *testing.T) {
	var tb hub.Table
	subs := make([]*tableSub, 6)
	for i := range subs {
		subs[i] = &tableSub{}
		chans := []string{"x", fmt.Sprint("own", i)}
		if i%2 == 0 {
			chans = append(chans, "even")
		}
		tb.Link(subs[i], chans)
	}
	tb.Unlink(subs[0])
	tb.Unlink(subs[3])
	tb.Unlink(subs[3])
	tb.FanOut(batchOf([2]string{"x", "x"}, [2]string{"even", "e"}, [2]string{"own0", "o0"}, [2]string{"own5", "o5"}))
	want := map[int][]string{1: {"x"}, 2: {"x", "e"}, 4: {"x", "e"}, 5: {"x", "o5"}}
	for i, s := range subs {
		if !slices.Equal(s.got, want[i]) {
			t.Errorf("subscriber %d got %v, want %v", i, s.got, want[i])
		}
	}
	if tb.Len() != 4 || tb.Members("own0") != 0 || tb.Members("x") != 4 || tb.Members("even") != 2 {
		t.Errorf("Len %d, own0 %d, x %d, even %d", tb.Len(), tb.Members("own0"), tb.Members("x"), tb.Members("even"))
	}
	for _, s := range subs {
		tb.Unlink(s)
	}
	if tb.Len() != 0 || tb.Members("x") != 0 {
		t.Errorf("after unlinking everyone: Len %d, x %d", tb.Len(), tb.Members("x"))
	}
}

// Members of one channel in different encodings get their own encoding
// of the same messages, each built once.
func TestTableEncodings(t *testing.T) {
	var tb hub.Table
	raw, js := &tableSub{enc: hub.EncodingFrame}, &tableSub{enc: hub.EncodingJSON}
	tb.Link(raw, []string{"a"})
	tb.Link(js, []string{"a"})
	batch := batchOf([2]string{"a", "hi"})
	tb.FanOut(batch)
	if !slices.Equal(raw.got, []string{"hi"}) || len(js.got) != 1 || js.got[0] != `{"type":"message","channel":"a","seq":1,"data":"hi"}` {
		t.Fatalf("raw %q, json %q", raw.got, js.got)
	}
}

// joinSub records its Joined and the seqs delivered to it; block, when
// set, holds its first Deliver until closed (a shard kept busy).
type joinSub struct {
	hub.Slot
	mu      sync.Mutex
	joined  chan hub.Joined
	block   chan struct{}
	entered chan struct{} // with block: closed as the blocked Deliver starts
	seqs    []uint64
}

func (s *joinSub) Join(j hub.Joined)      { s.joined <- hub.Joined{Seq: j.Seq, Recovered: j.Recovered} }
func (s *joinSub) Encoding() hub.Encoding { return hub.EncodingJSON }
func (s *joinSub) Deliver(frames [][]byte, _ int, _ *[]unix.Iovec) (int, int) {
	if s.block != nil {
		if s.entered != nil {
			close(s.entered)
			s.entered = nil
		}
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		var e struct{ Seq uint64 }
		_ = json.Unmarshal(f[2:], &e)
		s.seqs = append(s.seqs, e.Seq)
	}
	return len(frames), 0
}
func (s *joinSub) Sweep(int64, bool) int { return 0 }
func (s *joinSub) Drain()                {}
func (s *joinSub) Kill()                 {}

// A client resuming from a seq its new shard has not taken yet (another
// shard, ahead, delivered it) joins once the shard has passed it: it is
// recovered, and gets nothing it already had.
func TestResumeOnALaggingShard(t *testing.T) {
	h := hub.New(hub.Config{Shards: 2, History: historyOf(t)})
	defer h.Stop()
	busy := &joinSub{joined: make(chan hub.Joined, 1), block: make(chan struct{}), entered: make(chan struct{})}
	entered := busy.entered
	h.Add(busy, 0, hub.Subscription{Channels: []string{"a"}}) // shard 0
	<-busy.joined
	ahead := &joinSub{joined: make(chan hub.Joined, 1)}
	h.Add(ahead, 1, hub.Subscription{Channels: []string{"a"}}) // shard 1
	<-ahead.joined
	var last uint64
	for i := 0; i < 5; i++ {
		var err error
		if last, err = h.Broadcast(hub.NewMessage("a", hub.KindText, []byte("m"))); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-entered // shard 0 took only the first, and is stuck delivering it
		}
	}
	waitUntil(t, "shard 1 to deliver everything", func() bool {
		ahead.mu.Lock()
		defer ahead.mu.Unlock()
		return len(ahead.seqs) == 5
	})
	// Shard 0 is stuck in its first batch: the resume lands there.
	late := &joinSub{joined: make(chan hub.Joined, 1)}
	h.Add(late, 2, hub.Subscription{Channels: []string{"a"}, Resume: true, Since: hub.Cursor{Epoch: h.Epoch(), Seq: last}})
	close(busy.block)
	j := <-late.joined
	if !j.Recovered || j.Seq < last {
		t.Fatalf("joined %+v, want recovered at seq >= %d", j, last)
	}
	next, err := h.Broadcast(hub.NewMessage("a", hub.KindText, []byte("after")))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the late one to get the next message", func() bool {
		late.mu.Lock()
		defer late.mu.Unlock()
		return len(late.seqs) > 0
	})
	late.mu.Lock()
	defer late.mu.Unlock()
	if !slices.Equal(late.seqs, []uint64{next}) {
		t.Fatalf("the late one got seqs %v, want only %d: messages it already had came again", late.seqs, next)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPublishToEmptyChannel: a publish to a channel nobody is on
// costs the same with no subscribers at all and with 100,000 on 10,000
// other channels (per shard, one map lookup that misses), through the
// hub's whole path: Broadcast, the shards' take and grouping.
func BenchmarkPublishToEmptyChannel(b *testing.B) {
	for _, others := range []int{0, 100000} {
		b.Run(fmt.Sprintf("others=%d", others), func(b *testing.B) {
			h := hub.New(hub.Config{Shards: 16})
			defer h.Stop()
			for i := 0; i < others; i++ {
				h.Add(&tableSub{}, uint64(i), hub.Subscription{Channels: []string{fmt.Sprint("c", i%10000)}})
			}
			for h.Len() < others {
				time.Sleep(time.Millisecond) // the shards apply their inboxes
			}
			b.ReportAllocs()
			for b.Loop() {
				for {
					_, err := h.Broadcast(hub.NewMessage("nobody", hub.KindText, []byte("x")))
					if err == nil {
						break
					}
					time.Sleep(10 * time.Microsecond) // backlog: the shards catch up
				}
			}
		})
	}
}

// BenchmarkFanOutSeveralChannels: subscribers on 64 channels each, a
// batch of 64 messages over those channels: the merge per subscriber.
func BenchmarkFanOutSeveralChannels(b *testing.B) {
	var tb hub.Table
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprint("c", i)
	}
	for i := 0; i < 1000; i++ {
		tb.Link(&discardSub{}, names)
	}
	batch := make([]hub.Message, 64)
	for i := range batch {
		batch[i] = hub.NewMessage(names[i], hub.KindText, []byte("x"))
		batch[i].Seq = uint64(i + 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		tb.FanOut(batch)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/recipient")
}

// discardSub takes every frame and keeps nothing.
type discardSub struct{ hub.Slot }

func (s *discardSub) Join(hub.Joined)                                       {}
func (s *discardSub) Encoding() hub.Encoding                                { return hub.EncodingFrame }
func (s *discardSub) Deliver(f [][]byte, _ int, _ *[]unix.Iovec) (int, int) { return len(f), 0 }
func (s *discardSub) Sweep(int64, bool) int                                 { return 0 }
func (s *discardSub) Drain()                                                {}
func (s *discardSub) Kill()                                                 {}
