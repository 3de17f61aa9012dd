package broadcast_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

// envelope is any frame of the json format: a welcome or a message.
type envelope struct {
	Type       string          `json:"type"`
	Epoch      string          `json:"epoch"`
	Seq        uint64          `json:"seq"`
	Channels   []string        `json:"channels"`
	Recovered  *bool           `json:"recovered"`
	Channel    string          `json:"channel"`
	Data       json.RawMessage `json:"data"`
	DataBase64 string          `json:"data_base64"`
}

// readEnvelope reads one json-format frame (a text frame) within 10 s.
func readEnvelope(t testing.TB, c *websocket.Conn) envelope {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("json format sent a frame of type %d: %q", typ, trunc(b))
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("frame is not a JSON object: %q: %v", trunc(b), err)
	}
	return e
}

// dialJSON connects to the server's URL with query q and returns the
// connection and its welcome.
func dialJSON(t testing.TB, s *testServer, q string) (*websocket.Conn, envelope) {
	t.Helper()
	c := dialGorilla(t, s.url+"?"+q)
	w := readEnvelope(t, c)
	if w.Type != "welcome" {
		t.Fatalf("first frame is %q, want the welcome", w.Type)
	}
	return c, w
}

// publish publishes text to channel and returns its receipt.
func publish(t testing.TB, s *testServer, channel, text string) broadcast.Receipt {
	t.Helper()
	r, err := s.Publish(broadcast.Message{Channel: channel, Payload: []byte(text)})
	if err != nil {
		t.Fatalf("publish %q to %q: %v", text, channel, err)
	}
	return r
}

// expectOnly reads len(want) messages from c and checks they are want,
// in order (raw frames, or json envelopes' data). Tests publish a last
// message each client must get: that nothing else came before it proves
// absence without waiting a guessed time.
func expectOnly(t testing.TB, c *websocket.Conn, raw bool, want ...string) {
	t.Helper()
	for _, w := range want {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v (waiting for %q)", err, w)
		}
		if raw && string(b) != w {
			t.Fatalf("got %q, want %q", trunc(b), w)
		}
		if !raw {
			var e envelope
			_ = json.Unmarshal(b, &e)
			var got string
			_ = json.Unmarshal(e.Data, &got)
			if got != w {
				t.Fatalf("got %q, want the message %q", trunc(b), w)
			}
		}
	}
}

// Channels are isolated: a message reaches its channel's subscribers and
// nobody else; the default channel is the seed's, unchanged (raw frames,
// every message published without a channel, and no others).
func TestChannelsAreIsolated(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	a := dialGorilla(t, s.url+"?channel=a")
	b := dialGorilla(t, s.url+"?channel=b")
	def := dialGorilla(t, s.url)
	s.waitConns(t, 3)
	publish(t, s, "a", "for a")
	publish(t, s, "b", "for b")
	publish(t, s, "", "for everyone on the default channel")
	publish(t, s, "nobody", "for no one")
	publish(t, s, "a", "a again")
	publish(t, s, "b", "b again")
	publish(t, s, "", "default again")
	expectOnly(t, a, true, "for a", "a again")
	expectOnly(t, b, true, "for b", "b again")
	expectOnly(t, def, true, "for everyone on the default channel", "default again")
	if got := s.Stats().Published; got != 7 {
		t.Fatalf("published %d, want 7", got)
	}
}

// A raw client on a channel is in that channel's chat room: what it sends
// goes to every subscriber of the room, itself included, as it was sent
// (opcode kept), and to no other room.
func TestRawClientPublishesToItsChannel(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	one := dialGorilla(t, s.url+"?channel=room1")
	two := dialGorilla(t, s.url+"?channel=room1")
	other := dialGorilla(t, s.url+"?channel=room2")
	s.waitConns(t, 3)
	if err := one.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, one, websocket.BinaryMessage, []byte{1, 2, 3})
	expectMessage(t, two, websocket.BinaryMessage, []byte{1, 2, 3})
	if err := other.WriteMessage(websocket.TextMessage, []byte("room2 only")); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, other, websocket.TextMessage, []byte("room2 only"))
	publish(t, s, "room1", "marker")
	expectMessage(t, two, websocket.TextMessage, []byte("marker")) // room2's message never came before it
}

// The json format: a welcome with the epoch, the latest seq and the
// channels, then every message in its envelope: JSON data as itself,
// text as a string, binary as base64; seqs increase across channels.
func TestJSONFormat(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	before := publish(t, s, "a", "before")
	c, w := dialJSON(t, s, "channel=a&channel=b")
	if w.Epoch != s.Epoch() || w.Seq > before.Seq || !slices.Equal(w.Channels, []string{"a", "b"}) || w.Recovered != nil {
		t.Fatalf("welcome %+v, want epoch %q seq <= %d channels [a b] and no recovered", w, s.Epoch(), before.Seq)
	}
	if w.Seq < before.Seq {
		// Its shard took it in before it took "before": it gets it live.
		if e := readEnvelope(t, c); e.Seq != before.Seq {
			t.Fatalf("welcome at %d, then %+v: want seq %d", w.Seq, e, before.Seq)
		}
	}
	r1, err := s.Publish(broadcast.Message{Channel: "a", Kind: broadcast.KindJSON, Payload: []byte(` {"x": [1, 2]} `)})
	if err != nil {
		t.Fatal(err)
	}
	r2 := publish(t, s, "b", "say \"hi\"\n")
	r3, err := s.Publish(broadcast.Message{Channel: "a", Kind: broadcast.KindBinary, Payload: []byte{0, 255}})
	if err != nil {
		t.Fatal(err)
	}
	if !(before.Seq < r1.Seq && r1.Seq < r2.Seq && r2.Seq < r3.Seq) || r1.Epoch != s.Epoch() {
		t.Fatalf("receipts %+v %+v %+v after %+v: seqs not increasing", r1, r2, r3, before)
	}
	for _, want := range []struct {
		channel, data, b64 string
		seq                uint64
	}{
		{"a", `{"x":[1,2]}`, "", r1.Seq},
		{"b", `"say \"hi\"\n"`, "", r2.Seq},
		{"a", "", "AP8=", r3.Seq},
	} {
		e := readEnvelope(t, c)
		if e.Type != "message" || e.Channel != want.channel || e.Seq != want.seq || string(e.Data) != want.data || e.DataBase64 != want.b64 {
			t.Fatalf("got %+v (data %s), want %+v", e, e.Data, want)
		}
	}
}

// A json client on the default channel (no channel named) gets the
// default channel's messages in envelopes; "channels" is empty.
func TestJSONFormatOnTheDefaultChannel(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	c, w := dialJSON(t, s, "format=json")
	if len(w.Channels) != 0 || w.Channels == nil {
		t.Fatalf("welcome channels %v, want []", w.Channels)
	}
	r := publish(t, s, "", "hello")
	if e := readEnvelope(t, c); e.Channel != "" || e.Seq != r.Seq || string(e.Data) != `"hello"` {
		t.Fatalf("got %+v", e)
	}
}

// Resume: with since= the client gets, after a welcome that says so,
// exactly the messages on its channels it missed, in seq order, then the
// live ones; a cursor of another epoch, or one the history no longer
// covers, gets recovered:false and no replay at all.
func TestResume(t *testing.T) {
	s := startServer(t, broadcast.Config{HistorySize: 3})
	c, w := dialJSON(t, s, "channel=a&channel=b")
	seen := publish(t, s, "a", "seen")
	if e := readEnvelope(t, c); e.Seq != seen.Seq {
		t.Fatalf("got %+v, want seq %d", e, seen.Seq)
	}
	c.Close()
	m1 := publish(t, s, "b", "missed 1")
	publish(t, s, "c", "not mine")
	m2 := publish(t, s, "a", "missed 2")
	since := fmt.Sprintf("%s:%d", w.Epoch, seen.Seq)

	c2, w2 := dialJSON(t, s, "channel=a&channel=b&since="+since)
	// The welcome's seq is where its shard is: the latest, or (a shard
	// behind the others) earlier, the rest then coming live. Either way,
	// exactly the missed ones, in order.
	if w2.Recovered == nil || !*w2.Recovered || w2.Seq > m2.Seq || w2.Seq < seen.Seq {
		t.Fatalf("welcome %+v, want recovered:true at a seq in [%d, %d]", w2, seen.Seq, m2.Seq)
	}
	for _, want := range []broadcast.Receipt{m1, m2} {
		if e := readEnvelope(t, c2); e.Seq != want.Seq || e.Channel != want.Channel {
			t.Fatalf("after the welcome %+v, want seq %d on %q", e, want.Seq, want.Channel)
		}
	}
	live := publish(t, s, "b", "live")
	if e := readEnvelope(t, c2); e.Seq != live.Seq {
		t.Fatalf("after the replay got %+v, want the live seq %d", e, live.Seq)
	}

	// Another epoch (a restart): recovered:false, nothing replayed.
	c3, w3 := dialJSON(t, s, "channel=a&since="+url.QueryEscape("x"+w.Epoch+":1"))
	if w3.Recovered == nil || *w3.Recovered {
		t.Fatalf("another epoch: welcome %+v, want recovered:false", w3)
	}
	marker := publish(t, s, "a", "marker")
	liveUntil(t, c3, w3.Seq, marker.Seq)

	// History gone: a keeps 3 messages, so after 4 more the one after
	// "seen" is forgotten.
	for i := 0; i < 4; i++ {
		publish(t, s, "a", fmt.Sprint("filler ", i))
	}
	c4, w4 := dialJSON(t, s, "channel=a&since="+since)
	if w4.Recovered == nil || *w4.Recovered {
		t.Fatalf("history gone: welcome %+v, want recovered:false", w4)
	}
	marker = publish(t, s, "a", "marker")
	liveUntil(t, c4, w4.Seq, marker.Seq)

	// Nothing missed: recovered, nothing replayed.
	c5, w5 := dialJSON(t, s, fmt.Sprintf("channel=b&since=%s:%d", s.Epoch(), marker.Seq))
	if w5.Recovered == nil || !*w5.Recovered {
		t.Fatalf("nothing missed: welcome %+v, want recovered:true", w5)
	}
	last := publish(t, s, "b", "last")
	if e := readEnvelope(t, c5); e.Seq != last.Seq {
		t.Fatalf("nothing missed: got %+v, want %d", e, last.Seq)
	}
}

// liveUntil reads c up to the message seq last and fails on any message
// at or below the welcome's seq: after recovered:false nothing is
// replayed (what follows the welcome, up to the marker, is live).
func liveUntil(t *testing.T, c *websocket.Conn, welcome, last uint64) {
	t.Helper()
	for {
		e := readEnvelope(t, c)
		if e.Seq <= welcome {
			t.Fatalf("seq %d after a welcome at %d with recovered:false: a replay", e.Seq, welcome)
		}
		if e.Seq == last {
			return
		}
	}
}

// History expires: a message older than HistoryTTL is forgotten, and a
// resume from before it says recovered:false.
func TestResumeAfterTTL(t *testing.T) {
	s := startServer(t, broadcast.Config{HistoryTTL: 50 * time.Millisecond})
	r0 := publish(t, s, "a", "first")
	publish(t, s, "a", "expires")
	waitFor(t, "the history's TTL to pass", func() bool {
		for _, ch := range s.Channels() {
			if ch.Name == "a" && ch.Seq != 0 {
				return false
			}
		}
		return true
	})
	c, w := dialJSON(t, s, fmt.Sprintf("channel=a&since=%s:%d", s.Epoch(), r0.Seq))
	if w.Recovered == nil || *w.Recovered {
		t.Fatalf("welcome %+v, want recovered:false once the history expired", w)
	}
	marker := publish(t, s, "a", "marker")
	liveUntil(t, c, w.Seq, marker.Seq)
}

// The switch from replay to live loses nothing and repeats nothing, with
// a publisher going full speed: every client that resumes from a cursor
// sees every seq after it exactly once, in order, up to the last one.
func TestResumeUnderConcurrentPublishing(t *testing.T) {
	s := startServer(t, broadcast.Config{HistorySize: 100000, Backlog: 1 << 16})
	const total = 20000
	var mu sync.Mutex
	var seqs []uint64 // every seq published on "a", in order
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < total; i++ {
			r, err := s.Publish(broadcast.Message{Channel: "a", Payload: []byte("m")})
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
				return
			}
			mu.Lock()
			seqs = append(seqs, r.Seq)
			mu.Unlock()
			if i%2 == 0 {
				publish(t, s, "other", "noise") // seqs on a are not contiguous
			}
		}
	}()
	type result struct {
		from uint64
		got  []uint64
	}
	var results []result
	for k := 0; k < 8; k++ {
		// A cursor somewhere in what was published so far.
		mu.Lock()
		from := uint64(0)
		if n := len(seqs); n > 0 {
			from = seqs[n/2]
		}
		mu.Unlock()
		c, w := dialJSON(t, s, fmt.Sprintf("channel=a&since=%s:%d", s.Epoch(), from))
		if w.Recovered == nil || !*w.Recovered {
			t.Fatalf("resume from %d: welcome %+v, want recovered", from, w)
		}
		res := result{from: from}
		for {
			e, closed := readOrResume(t, s, c, "channel=a", res.got, from)
			if closed != nil {
				c = closed // a replay in parts: resumed from its last seq
				continue
			}
			res.got = append(res.got, e.Seq)
			mu.Lock()
			finished := len(seqs) == total && e.Seq == seqs[total-1]
			mu.Unlock()
			if finished {
				break
			}
			if len(res.got) > total {
				t.Fatalf("more messages than were published")
			}
			if k < 7 && len(res.got) > 500 {
				break // enough of the switch for this one; the last one reads to the end
			}
		}
		c.Close()
		results = append(results, res)
	}
	<-done
	for _, r := range results {
		i, _ := slices.BinarySearch(seqs, r.from+1)
		want := seqs[i : i+len(r.got)]
		if !slices.Equal(r.got, want) {
			for j := range r.got {
				if r.got[j] != want[j] {
					t.Fatalf("resumed from %d: message %d has seq %d, want %d (a gap or a duplicate)", r.from, j, r.got[j], want[j])
				}
			}
		}
	}
	if last := results[len(results)-1]; last.got[len(last.got)-1] != seqs[total-1] {
		t.Fatalf("the last client did not read to the end")
	}
}

// readOrResume reads c's next envelope; when the server closed it with
// 4001 (its replay came in parts), it reconnects with since= the last seq
// got (or from) and returns the new connection instead.
func readOrResume(t *testing.T, s *testServer, c *websocket.Conn, q string, got []uint64, from uint64) (envelope, *websocket.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if websocket.IsCloseError(err, 4001) {
		c.Close()
		last := from
		if len(got) > 0 {
			last = got[len(got)-1]
		}
		nc, w := dialJSON(t, s, fmt.Sprintf("%s&since=%s:%d", q, s.Epoch(), last))
		if w.Recovered == nil || !*w.Recovered {
			t.Fatalf("resume from %d after a 4001: %+v", last, w)
		}
		return envelope{}, nc
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("frame is not a JSON object: %q: %v", trunc(b), err)
	}
	return e, nil
}

// A json client publishes {"channel","data"} to one of its channels;
// anything else closes it with 1008 and a reason.
func TestJSONClientPublish(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	c, _ := dialJSON(t, s, "channel=a&channel=b")
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"channel":"b","data":{"x":1}}`)); err != nil {
		t.Fatal(err)
	}
	if e := readEnvelope(t, c); e.Channel != "b" || string(e.Data) != `{"x":1}` {
		t.Fatalf("got %+v (data %s), want its own message on b", e, e.Data)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"channel":"a","data":"text"}`)); err != nil {
		t.Fatal(err)
	}
	if e := readEnvelope(t, c); e.Channel != "a" || string(e.Data) != `"text"` {
		t.Fatalf("got %+v (data %s)", e, e.Data)
	}
	raw := dialGorilla(t, s.url+"?channel=a")
	s.waitConns(t, 2)
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"channel":"a","data":"to raw"}`)); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, raw, websocket.TextMessage, []byte("to raw")) // a string is published as its text

	for name, msg := range map[string]string{
		"not json":       `hello`,
		"not subscribed": `{"channel":"c","data":1}`,
		"no data":        `{"channel":"a"}`,
		"both":           `{"channel":"a","data":1,"data_base64":"AA=="}`,
		"bad base64":     `{"channel":"a","data_base64":"%%"}`,
	} {
		c, _ := dialJSON(t, s, "channel=a&channel=b")
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, _, err := c.ReadMessage()
			if err == nil {
				continue
			}
			if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
				t.Fatalf("%s: %v, want close 1008", name, err)
			}
			t.Logf("%s: %v", name, err)
			break
		}
	}
}

// A JWT's channels claim limits the channels a connection may name (403
// otherwise), and gives them to one that names none.
func TestJWTChannels(t *testing.T) {
	s := startServer(t, broadcast.Config{Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"))})
	exp := time.Now().Add(time.Hour).Unix()
	tok := signed(t, "s3cret", jwt.MapClaims{"exp": exp, "channels": []string{"a", "b"}})
	none := signed(t, "s3cret", jwt.MapClaims{"exp": exp, "channels": []string{}})
	any := signed(t, "s3cret", jwt.MapClaims{"exp": exp})
	for _, tc := range []struct {
		name, query string
		status      int
	}{
		{"granted", "channel=a&token=" + tok, http.StatusSwitchingProtocols},
		{"not granted", "channel=a&channel=c&token=" + tok, http.StatusForbidden},
		{"empty grant", "channel=a&token=" + none, http.StatusForbidden},
		{"no claim: any channel", "channel=zz&token=" + any, http.StatusSwitchingProtocols},
	} {
		status, body := upgradeStatus(t, s.url+"?"+tc.query)
		if status != tc.status {
			t.Errorf("%s: %d %q, want %d", tc.name, status, body, tc.status)
		}
	}
	_, w := dialJSON(t, s, "token="+tok)
	if !slices.Equal(w.Channels, []string{"a", "b"}) {
		t.Fatalf("no channel named: welcome %+v, want the token's channels", w)
	}
	// Counted once the refusal is written: wait for it.
	waitFor(t, "2 channel_denied rejects", func() bool { return s.Stats().Rejects(broadcast.RejectChannelDenied) == 2 })
}

// upgradeStatus tries an upgrade and returns the status and the body of
// a refusal.
func upgradeStatus(t testing.TB, u string) (int, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil {
		c.Close()
		return resp.StatusCode, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// What a URL may ask for, and the 400 that says what is wrong otherwise.
func TestSubscriptionParams(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxChannelsPerConn: 3})
	for _, tc := range []struct {
		query  string
		status int
		reason string // in the 400's body
	}{
		{"channel=a", 101, ""},
		{"channel=a.b:c@d/e=f-g_h", 101, ""},
		{"channel=" + strings.Repeat("x", 256), 101, ""},
		{"channel=presence-a%3Bb,c", 101, ""}, // every Pusher channel name is one
		{"channel=a&channel=a", 101, ""},      // the same name twice is one channel
		{"channel=a&channel=b&channel=c", 101, ""},
		{"format=raw", 101, ""},
		{"format=json", 101, ""},
		{"channel=", 400, "empty"},
		{"channel=" + strings.Repeat("x", 257), 400, "257 bytes"},
		{"channel=a%20b", 400, "byte ' '"},
		{"channel=%C3%A9", 400, "byte"},
		{"channel=a&channel=b&channel=c&channel=d", 400, "more than 3 channels"},
		{"channel=a&channel=b&format=raw", 400, "format=raw takes one channel"},
		{"format=xml", 400, "want raw or json"},
		{"channel=a&since=e:1", 101, ""}, // since means json
		{"channel=a&format=raw&since=e:1", 400, "since needs format=json"},
		{"channel=a&format=json&since=nocolon", 400, "EPOCH:SEQ"},
		{"channel=a&format=json&since=e:-1", 400, "EPOCH:SEQ"},
		{"channel=a&format=json&since=:5", 400, "EPOCH:SEQ"},
		{"channel=a&since=" + strings.Repeat("e", 65) + ":1", 400, "EPOCH:SEQ"},
		{"channel=%zz", 400, "malformed query"},
	} {
		status, body := upgradeStatus(t, s.url+"?"+tc.query)
		if status != tc.status || !strings.Contains(body, tc.reason) {
			t.Errorf("?%s: %d %q, want %d with %q", tc.query, status, body, tc.status, tc.reason)
		}
	}
	waitFor(t, "13 bad_params rejects", func() bool { return s.Stats().Rejects(broadcast.RejectParams) == 13 })
}

// A json client is never dropped for: under SlowDrop a raw client loses
// frames, a json one is closed with 4000 and resumes from its last seq.
func TestSlowJSONClientIsClosedNotDropped(t *testing.T) {
	s := startServer(t, broadcast.Config{QueueBytes: 4096, SlowPolicy: broadcast.SlowDrop, CloseTimeout: time.Minute,
		Backlog: 1 << 15}) // every publish below fits in the ring
	rc := dialRawPath(t, s.addr, "/ws?channel=a&format=json")
	raw := dialRawPath(t, s.addr, "/ws?channel=a")
	s.waitConns(t, 2)
	// Neither reads: 16 MB is more than loopback's socket buffers and the
	// queue hold, so both overflow.
	payload := strings.Repeat("x", 1000)
	for i := 0; i < 16000; i++ {
		publish(t, s, "a", payload)
	}
	rc.expectClose(t, 4000)
	waitFor(t, "the slow json client to be counted", func() bool { return s.Stats().Closed(broadcast.ReasonSlowConsumer) == 1 })
	// Counted as it is torn down, a moment before it leaves the hub's
	// count (3 failures in 50 runs of the suite read Conns 2 here).
	s.waitConns(t, 1)
	if st := s.Stats(); st.Dropped == 0 || st.Conns != 1 {
		t.Fatalf("stats %+v: want drops for the raw client, which stays", st)
	}
	raw.Close()
}

// dialRawPath is dialRaw on path.
func dialRawPath(t testing.TB, addr, path string) *rawClient {
	t.Helper()
	rc := dialRawWith(t, addr, handshakeRequest(addr, path))
	return rc
}

// Idempotency: a repeat of a key returns the first receipt and delivers
// nothing again; another key publishes.
func TestIdempotentPublish(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	c := dialGorilla(t, s.url+"?channel=a")
	s.waitConns(t, 1)
	m := broadcast.Message{Channel: "a", Payload: []byte("once"), IdempotencyKey: "k1"}
	r1, err := s.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Publish(m)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Repeat || r1.Repeat || r2.Seq != r1.Seq || r2.Epoch != r1.Epoch {
		t.Fatalf("receipts %+v then %+v: want the same seq, the second a repeat", r1, r2)
	}
	m.IdempotencyKey, m.Payload = "k2", []byte("twice")
	if r3, err := s.Publish(m); err != nil || r3.Repeat || r3.Seq == r1.Seq {
		t.Fatalf("another key: %+v %v", r3, err)
	}
	expectMessage(t, c, websocket.TextMessage, []byte("once"))
	expectMessage(t, c, websocket.TextMessage, []byte("twice")) // not "once" again
	if _, err := s.Publish(broadcast.Message{Payload: []byte("x"), IdempotencyKey: strings.Repeat("k", 257)}); err != broadcast.ErrIdempotencyKey {
		t.Fatalf("a 257-byte key: %v", err)
	}
}

// A token's claim that repeats a channel joins it once (every message
// once); a claim of no channel grants none, the default one included; a
// JSON message whose strings are not UTF-8 is refused (it would go out as
// a text frame browsers must fail on).
func TestChannelEdgeCases(t *testing.T) {
	s := startServer(t, broadcast.Config{Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"))})
	exp := time.Now().Add(time.Hour).Unix()
	dup := signed(t, "s3cret", jwt.MapClaims{"exp": exp, "channels": []string{"a", "a"}})
	c, w := dialJSON(t, s, "format=json&token="+dup)
	if !slices.Equal(w.Channels, []string{"a"}) {
		t.Fatalf("welcome channels %v, want [a]", w.Channels)
	}
	r1 := publish(t, s, "a", "one")
	r2 := publish(t, s, "a", "two")
	for _, want := range []uint64{r1.Seq, r2.Seq} {
		if e := readEnvelope(t, c); e.Seq != want {
			t.Fatalf("got seq %d, want %d: a repeated claim delivered twice", e.Seq, want)
		}
	}
	none := signed(t, "s3cret", jwt.MapClaims{"exp": exp, "channels": []string{}})
	if status, body := upgradeStatus(t, s.url+"?token="+none); status != http.StatusForbidden {
		t.Fatalf("a claim of no channel, no channel named: %d %q, want 403", status, body)
	}
	if _, err := s.Publish(broadcast.Message{Channel: "a", Kind: broadcast.KindJSON, Payload: []byte("{\"x\":\"\xff\"}")}); !errors.Is(err, broadcast.ErrInvalidUTF8) {
		t.Fatalf("JSON with invalid UTF-8: %v, want ErrInvalidUTF8", err)
	}
}

// A replay over ReplayBytes comes in parts: after each the server closes
// with 4001, and the client resumes from its last seq, until it has every
// message it missed, once, in order; the parts are counted.
func TestResumeInParts(t *testing.T) {
	// One shard, and a subscriber on it that has seen the last message:
	// the shard has taken them all, so the resume below replays all of
	// them (a shard behind would deliver some live, in fewer parts).
	s := startServer(t, broadcast.Config{ReplayBytes: 16 << 10, Shards: 1})
	raw := dialGorilla(t, s.url+"?channel=a")
	s.waitConns(t, 1)
	var want []uint64
	for i := 0; i < 200; i++ {
		want = append(want, publish(t, s, "a", fmt.Sprint("message ", i)).Seq)
	}
	for i := 0; i < 200; i++ {
		expectMessage(t, raw, websocket.TextMessage, []byte(fmt.Sprint("message ", i)))
	}
	c, w := dialJSON(t, s, fmt.Sprintf("channel=a&since=%s:0", s.Epoch()))
	if w.Recovered == nil || !*w.Recovered {
		t.Fatalf("welcome %+v", w)
	}
	var got []uint64
	parts := 0
	for len(got) < len(want) {
		e, resumed := readOrResume(t, s, c, "channel=a", got, 0)
		if resumed != nil {
			c = resumed
			parts++
			continue
		}
		got = append(got, e.Seq)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d messages %v..., want %d in order", len(got), got[:min(5, len(got))], len(want))
	}
	if parts < 3 {
		t.Fatalf("%d parts for a replay of 200 messages over 16 KiB, want several", parts)
	}
	waitFor(t, "the parts counted", func() bool { return s.Stats().Closed(broadcast.ReasonReplayPart) == uint64(parts) })
}
