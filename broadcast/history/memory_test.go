package history_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fanout/fanout/broadcast/history"
	"github.com/fanout/fanout/broadcast/hub"
)

// clock is a settable time for TTL tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// feed appends messages to h as a hub would: seqs from next, in order.
type feed struct {
	h    *history.Memory
	next uint64
}

func (f *feed) add(channel string, payload string) uint64 {
	f.next++
	m := hub.NewMessage(channel, hub.KindText, []byte(payload))
	m.Seq = f.next
	f.h.Append(&m)
	return f.next
}

func seqs(ms []hub.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i := range ms {
		out[i] = ms[i].Seq
	}
	return out
}

// Replay returns every message on the channels after the cursor, up to
// upto, merged in seq order, and nothing of other channels.
func TestReplayMergesChannelsInSeqOrder(t *testing.T) {
	f := &feed{h: history.New(history.Config{})}
	for i := 0; i < 30; i++ {
		f.add([]string{"a", "b", "c"}[i%3], fmt.Sprint(i))
	}
	got, _, ok := f.h.Replay(nil, []string{"c", "a"}, hub.Cursor{Seq: 4}, 25, 1<<30)
	want := []uint64{6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24, 25}
	if !ok || !slices.Equal(seqs(got), want) {
		t.Fatalf("Replay(c,a after 4 upto 25) = %v %v, want %v true", seqs(got), ok, want)
	}
	got, _, ok = f.h.Replay(got[:0], []string{"never"}, hub.Cursor{Seq: 0}, 30, 1<<30)
	if !ok || len(got) != 0 {
		t.Fatalf("a channel never published to: %v %v, want nothing and true", seqs(got), ok)
	}
}

// Each channel keeps Size messages; a resume from before its oldest is
// refused (false), one from after it is not, and other channels are not
// affected.
func TestSizeBound(t *testing.T) {
	f := &feed{h: history.New(history.Config{Size: 3})}
	var a []uint64
	for i := 0; i < 5; i++ {
		a = append(a, f.add("a", "x"))
		f.add("b", "y")
	}
	// a keeps its last 3 (seqs 5, 7, 9): seq 3 is forgotten.
	if _, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: a[0]}, 100, 1<<30); ok {
		t.Fatal("resume from before a forgotten message said ok")
	}
	got, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: a[1]}, 100, 1<<30)
	if !ok || !slices.Equal(seqs(got), a[2:]) {
		t.Fatalf("resume from the last forgotten one: %v %v, want %v", seqs(got), ok, a[2:])
	}
	if st := f.h.Stats(); st.Messages != 6 || st.ForgotSize != 4 {
		t.Fatalf("stats %+v, want 6 kept, 4 forgotten for size", st)
	}
}

// Messages older than TTL are forgotten, on read as on write.
func TestTTL(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	f := &feed{h: history.New(history.Config{TTL: time.Minute, Now: c.now})}
	old := f.add("a", "old")
	c.t = c.t.Add(30 * time.Second)
	young := f.add("a", "young")
	c.t = c.t.Add(31 * time.Second) // old is 61 s old, young 31 s
	got, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: old}, 10, 1<<30)
	if !ok || !slices.Equal(seqs(got), []uint64{young}) {
		t.Fatalf("after old's TTL: %v %v, want [young] true", seqs(got), ok)
	}
	if _, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: old - 1}, 10, 1<<30); ok {
		t.Fatal("resume from before an expired message said ok")
	}
	c.t = c.t.Add(time.Minute)
	if st := f.h.Stats(); st.Messages != 0 || st.Channels != 0 || st.ForgotTTL != 2 {
		t.Fatalf("stats %+v, want everything expired", st)
	}
	// The channel's record went with its last message; what it forgot is
	// still known: a resume from before it is refused.
	if _, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: old}, 10, 1<<30); ok {
		t.Fatal("resume from before forgotten messages of a dropped record said ok")
	}
	if _, _, ok := f.h.Replay(nil, []string{"a"}, hub.Cursor{Seq: young}, 10, 1<<30); !ok {
		t.Fatal("resume from the last forgotten one refused")
	}
}

// The whole history stays under Bytes, overfilled many times over, the
// oldest messages (any channel) going first; what remains replays.
func TestBytesBound(t *testing.T) {
	const budget = 64 << 10
	f := &feed{h: history.New(history.Config{Bytes: budget, Size: 1 << 20})}
	payload := string(make([]byte, 1000))
	var last []uint64
	for i := 0; i < 2000; i++ { // ~2 MB of frames and envelopes through a 64 KiB budget
		last = append(last, f.add(fmt.Sprint("c", i%7), payload))
		if st := f.h.Stats(); st.Bytes > budget {
			t.Fatalf("after %d messages the history holds %d bytes, over %d", i+1, st.Bytes, budget)
		}
	}
	st := f.h.Stats()
	if st.ForgotBytes == 0 || st.Messages == 0 || st.Bytes < budget/2 {
		t.Fatalf("stats %+v: want a history near its budget, the rest forgotten for bytes", st)
	}
	// What is kept is the newest: every channel replays from just before
	// its oldest kept message.
	kept := last[len(last)-st.Messages:]
	all := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6"}
	got, _, ok := f.h.Replay(nil, all, hub.Cursor{Seq: kept[0] - 1}, kept[len(kept)-1], 1<<30)
	if !ok || !slices.Equal(seqs(got), kept) {
		t.Fatalf("replay of what is kept: %d messages ok=%v, want %d", len(got), ok, len(kept))
	}
}

// A busy channel over its Size leaves entries of forgotten messages in
// the node-wide order (compacted as they pile up): what is kept, and its
// replay, stay exact through 200,000 of them.
func TestBusyChannelOverItsSize(t *testing.T) {
	f := &feed{h: history.New(history.Config{Size: 10, Bytes: 1 << 30})}
	for i := 0; i < 200000; i++ {
		f.add("hot", "x")
	}
	f.add("cold", "y")
	st := f.h.Stats()
	if st.Messages != 11 {
		t.Fatalf("kept %d, want 11", st.Messages)
	}
	got, _, ok := f.h.Replay(nil, []string{"hot", "cold"}, hub.Cursor{Seq: f.next - 11}, f.next, 1<<30)
	if !ok || len(got) != 11 {
		t.Fatalf("replay %d %v", len(got), ok)
	}
}

// hub.Message.Size bounds what a kept message holds once every encoding
// of it is built, whatever clients want them: the history's budget holds.
func TestMessageSize(t *testing.T) {
	for _, payload := range []string{"", "plain", "quote \" backslash \\ newline \n tab \t ctrl \x01", string(make([]byte, 300)),
		string(bytes.Repeat([]byte(`{"k":"compressible"}`), 100))} {
		for _, kind := range []hub.Kind{hub.KindText, hub.KindBinary} {
			m := hub.NewMessage("ch", kind, []byte(payload))
			m.Seq = 123456
			built := 0
			for _, e := range []hub.Encoding{hub.EncodingFrame, hub.EncodingJSON, hub.EncodingSSE, hub.EncodingFrameDeflate, hub.EncodingJSONDeflate} {
				built += len(m.Bytes(e))
			}
			if got := m.Size(); got < built {
				t.Errorf("kind %d payload %q: Size %d, under the %d bytes its encodings hold", kind, payload, got, built)
			}
		}
	}
}

// A replay over maxBytes comes in parts, in seq order, each ending where
// the next begins: complete only with the last.
func TestReplayInParts(t *testing.T) {
	f := &feed{h: history.New(history.Config{})}
	var want []uint64
	for i := 0; i < 300; i++ {
		seq := f.add([]string{"a", "b"}[i%2], "0123456789")
		want = append(want, seq)
	}
	var got []uint64
	after, parts := uint64(0), 0
	for {
		msgs, complete, ok := f.h.Replay(nil, []string{"a", "b"}, hub.Cursor{Seq: after}, f.next, 10_000)
		if !ok || len(msgs) == 0 {
			t.Fatalf("part %d: %d messages ok=%v", parts, len(msgs), ok)
		}
		parts++
		got = append(got, seqs(msgs)...)
		after = msgs[len(msgs)-1].Seq
		if complete {
			break
		}
	}
	if !slices.Equal(got, want) || parts < 5 {
		t.Fatalf("%d parts gave %d messages, want all %d in order, in several parts", parts, len(got), len(want))
	}
}
