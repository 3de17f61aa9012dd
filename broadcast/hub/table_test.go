package hub_test

import (
	"fmt"
	"slices"
	"testing"

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
