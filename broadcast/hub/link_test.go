package hub_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fanout/fanout/broadcast/hub"
)

// idSub is a tableSub with an id (hub.Identified), for Meta.Exclude.
type idSub struct {
	tableSub
	id uint64
}

func (s *idSub) ID() uint64 { return s.id }

// Channels joined and left at run time: a subscriber on Nowhere gets
// nothing; each AddLink brings that channel's messages, each DropLink
// stops them; the member lists stay right through the swaps (checked
// against a model over random operations), and the last DropLink leaves
// it on Nowhere, not on the default channel.
func TestTableAddDropLink(t *testing.T) {
	var tb hub.Table
	const subs, channels = 12, 5
	ss := make([]*tableSub, subs)
	model := make([]map[string]bool, subs)
	for i := range ss {
		ss[i] = &tableSub{}
		tb.Link(ss[i], []string{hub.Nowhere})
		model[i] = map[string]bool{}
	}
	name := func(c int) string { return fmt.Sprintf("c%d", c) }
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 400 {
		i, c := rng.IntN(subs), name(rng.IntN(channels))
		if rng.IntN(2) == 0 {
			if got, want := tb.AddLink(ss[i], c), !model[i][c]; got != want {
				t.Fatalf("round %d: AddLink(%d, %s) = %v, want %v", round, i, c, got, want)
			}
			model[i][c] = true
		} else {
			if got, want := tb.DropLink(ss[i], c), model[i][c]; got != want {
				t.Fatalf("round %d: DropLink(%d, %s) = %v, want %v", round, i, c, got, want)
			}
			delete(model[i], c)
		}
		if round%20 != 0 {
			continue
		}
		// One message per channel, and one to the default channel.
		for _, s := range ss {
			s.got = s.got[:0]
		}
		var batch [][2]string
		for ch := range channels {
			batch = append(batch, [2]string{name(ch), name(ch)})
		}
		batch = append(batch, [2]string{"", "default"})
		tb.FanOut(batchOf(batch...))
		for j, s := range ss {
			var want []string
			for ch := range channels {
				if model[j][name(ch)] {
					want = append(want, name(ch))
				}
			}
			if !slices.Equal(s.got, want) {
				t.Fatalf("round %d: sub %d got %v, want %v", round, j, s.got, want)
			}
		}
		var memberships int64
		for j := range ss {
			memberships += int64(len(model[j]))
		}
		if got := tb.Subscriptions(); got != memberships {
			t.Fatalf("round %d: Subscriptions() = %d, want %d (Nowhere counts none)", round, got, memberships)
		}
		for ch := range channels {
			n := 0
			for j := range ss {
				if model[j][name(ch)] {
					n++
				}
			}
			if m := tb.Members(name(ch)); m != n {
				t.Fatalf("round %d: Members(%s) = %d, want %d", round, name(ch), m, n)
			}
		}
	}
	// Unlink after all that leaves nothing behind.
	for _, s := range ss {
		tb.Unlink(s)
	}
	for ch := range channels {
		if m := tb.Members(name(ch)); m != 0 {
			t.Errorf("Members(%s) = %d after every Unlink", name(ch), m)
		}
	}
	if m := tb.Members(hub.Nowhere); m != 0 || tb.Len() != 0 || tb.Subscriptions() != 0 {
		t.Errorf("Nowhere has %d, table %d after every Unlink", m, tb.Len())
	}
	if tb.DropLink(ss[0], "c0") || tb.AddLink(ss[0], "c0") {
		t.Error("AddLink or DropLink of a subscriber not in the table said yes")
	}
}

// A message that excludes a subscriber (Meta.Exclude, its ID) reaches the
// others on its channel and not it, whether it is on one channel or
// several; the batch's other messages still reach it.
func TestTableExclude(t *testing.T) {
	var tb hub.Table
	one, other, multi := &idSub{id: 1}, &idSub{id: 2}, &idSub{id: 3}
	tb.Link(one, []string{"a"})
	tb.Link(other, []string{"a"})
	tb.Link(multi, []string{"a", "b"})
	batch := []hub.Message{
		hub.NewMessage("a", hub.KindText, []byte("m1")),
		hub.NewEvent("a", hub.KindText, []byte("from-1"), hub.Meta{Event: "client-x", Exclude: 1}),
		hub.NewEvent("b", hub.KindText, []byte("from-3"), hub.Meta{Exclude: 3}),
		hub.NewEvent("a", hub.KindText, []byte("from-3a"), hub.Meta{Exclude: 3}),
		hub.NewMessage("b", hub.KindText, []byte("m2")),
	}
	for i := range batch {
		batch[i].Seq = uint64(i + 1)
	}
	tb.FanOut(batch)
	for _, tc := range []struct {
		s    *idSub
		want []string
	}{
		{one, []string{"m1", "from-3a"}},
		{other, []string{"m1", "from-1", "from-3a"}},
		{multi, []string{"m1", "from-1", "m2"}},
	} {
		if !slices.Equal(tc.s.got, tc.want) {
			t.Errorf("sub %d got %v, want %v", tc.s.id, tc.s.got, tc.want)
		}
	}
}

// The Pusher encoding: data always a JSON string (the text as published,
// JSON as its text, bytes in base64), the event "message" when none was
// given, user_id when sent as a presence user, and the channel as the
// hub's PusherChannel names it; a json-format client sees the event.
func TestPusherEncoding(t *testing.T) {
	for _, tc := range []struct {
		m    hub.Message
		want string
	}{
		{hub.NewMessage("c", hub.KindText, []byte(`he said "hi"`)), `{"event":"message","channel":"c","data":"he said \"hi\""}`},
		{hub.NewEvent("c", hub.KindText, []byte(`{"a":1}`), hub.Meta{Event: "ev"}), `{"event":"ev","channel":"c","data":"{\"a\":1}"}`},
		{hub.NewEvent("c", hub.KindJSON, []byte(`{"a":1}`), hub.Meta{Event: "client-t", UserID: "7"}), `{"event":"client-t","channel":"c","data":"{\"a\":1}","user_id":"7"}`},
		{hub.NewMessage("c", hub.KindBinary, []byte{0, 255}), `{"event":"message","channel":"c","data":"AP8="}`},
	} {
		m := tc.m
		m.Seq = 1
		f := m.Bytes(hub.EncodingPusher)
		if got := string(f[2:]); got != tc.want || int(f[1]) != len(tc.want) {
			t.Errorf("got %s (length byte %d), want %s", got, f[1], tc.want)
		}
	}
	m := hub.NewEvent("c", hub.KindText, []byte("x"), hub.Meta{Event: "ev"})
	m.Seq = 4
	f := m.Bytes(hub.EncodingJSON)
	if got, want := string(f[2:]), `{"type":"message","channel":"c","seq":4,"event":"ev","data":"x"}`; got != want || int(f[1]) != len(want) {
		t.Errorf("json envelope %s (length byte %d), want %s", got, f[1], want)
	}
}
