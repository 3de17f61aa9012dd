package broadcast_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fanout/fanout/broadcast"
)

// sseEvent is one event of a stream: its id and its data, parsed.
type sseEvent struct {
	id   string
	data envelope
	raw  string
}

// sseClient is a stream read the way EventSource reads it.
type sseClient struct {
	resp *http.Response
	br   *bufio.Reader
	nc   net.Conn
}

// dialSSE sends GET path with extra header lines and returns the answer;
// the stream, if it is one, is read with next.
func dialSSE(t testing.TB, addr, path string, extra ...string) *sseClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n"
	for _, e := range extra {
		req += e + "\r\n"
	}
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return &sseClient{resp: resp, br: bufio.NewReader(resp.Body), nc: nc}
}

// next reads the next event (comments skipped) within 10 s.
func (c *sseClient) next(t testing.TB) sseEvent {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var ev sseEvent
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (so far %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.raw != "":
			if err := json.Unmarshal([]byte(ev.raw), &ev.data); err != nil {
				t.Fatalf("data %q is not JSON: %v", ev.raw, err)
			}
			return ev
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			ev.raw += line[6:]
		}
	}
}

// comment reads lines until a comment (": ...") and returns it.
func (c *sseClient) comment(t testing.TB) string {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if strings.HasPrefix(line, ":") {
			return strings.TrimSpace(line[1:])
		}
	}
}

// An SSE stream: 200 text/event-stream, a welcome, then its channels'
// messages only, each with its cursor as id, in the json format's
// envelope; pings as comments.
func TestSSEStream(t *testing.T) {
	s := startServer(t, broadcast.Config{PingInterval: 50 * time.Millisecond, IdleTimeout: -1})
	c := dialSSE(t, s.addr, "/sse?channel=a&channel=b")
	if c.resp.StatusCode != http.StatusOK || c.resp.Header.Get("Content-Type") != "text/event-stream" || c.resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("answer %d %v", c.resp.StatusCode, c.resp.Header)
	}
	w := c.next(t)
	if w.data.Type != "welcome" || w.data.Epoch != s.Epoch() || !slices.Equal(w.data.Channels, []string{"a", "b"}) || w.id != fmt.Sprintf("%s:%d", s.Epoch(), w.data.Seq) {
		t.Fatalf("welcome %+v", w)
	}
	publish(t, s, "c", "not mine")
	ra := publish(t, s, "a", "for a")
	rb, err := s.Publish(broadcast.Message{Channel: "b", Kind: broadcast.KindJSON, Payload: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []broadcast.Receipt{ra, rb} {
		ev := c.next(t)
		if ev.data.Seq != want.Seq || ev.data.Channel != want.Channel || ev.id != fmt.Sprintf("%s:%d", s.Epoch(), want.Seq) {
			t.Fatalf("event %+v, want seq %d on %q", ev, want.Seq, want.Channel)
		}
	}
	if got := c.comment(t); got != "ping" {
		t.Fatalf("comment %q, want ping", got)
	}
	c.nc.Close()
	s.waitConns(t, 0)
	if st := s.Stats(); st.Closed(broadcast.ReasonClientGone) != 1 {
		t.Fatalf("closes %v: want the stream counted as client_gone", st.Closes)
	}
}

// Resume by Last-Event-ID (what EventSource sends by itself) or by the
// last_event_id parameter: the same rules as since=.
func TestSSEResume(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	seen := publish(t, s, "a", "seen")
	m1 := publish(t, s, "a", "missed 1")
	publish(t, s, "b", "not mine")
	m2 := publish(t, s, "a", "missed 2")
	cursor := fmt.Sprintf("%s:%d", s.Epoch(), seen.Seq)
	for _, how := range []struct {
		path  string
		extra []string
	}{
		{"/sse?channel=a", []string{"Last-Event-ID: " + cursor}},
		{"/sse?channel=a&last_event_id=" + cursor, nil},
	} {
		c := dialSSE(t, s.addr, how.path, how.extra...)
		w := c.next(t)
		if w.data.Recovered == nil || !*w.data.Recovered || w.id != cursor {
			t.Fatalf("%s %v: welcome %+v, want recovered with id %s (where its replay starts)", how.path, how.extra, w, cursor)
		}
		for _, want := range []broadcast.Receipt{m1, m2} {
			if ev := c.next(t); ev.data.Seq != want.Seq {
				t.Fatalf("replayed %+v, want seq %d", ev, want.Seq)
			}
		}
	}
	c := dialSSE(t, s.addr, "/sse?channel=a", "Last-Event-ID: other:1")
	if w := c.next(t); w.data.Recovered == nil || *w.data.Recovered {
		t.Fatalf("another epoch: welcome %+v, want recovered:false", w)
	}
	bad := dialSSE(t, s.addr, "/sse?channel=a", "Last-Event-ID: garbage")
	if bad.resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a bad Last-Event-ID: %d, want 400", bad.resp.StatusCode)
	}
}

// Where an upgrade would get 503 or 429, an SSE request gets a 200 with
// retry: and the stream ends: EventSource would give up for good on
// anything else. Auth and Origin refusals stay 401 and 403.
func TestSSERefusals(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxConns: 1, SSERetry: 7 * time.Second,
		Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"))})
	tok := signed(t, "s3cret", jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "channels": []string{"a"}})
	first := dialSSE(t, s.addr, "/sse?channel=a", "Authorization: Bearer "+tok)
	if first.resp.StatusCode != http.StatusOK {
		t.Fatalf("first: %d", first.resp.StatusCode)
	}
	first.next(t)
	full := dialSSE(t, s.addr, "/sse?channel=a&token="+tok)
	body, _ := io.ReadAll(full.resp.Body)
	if full.resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "retry: 7000\n") || !strings.Contains(string(body), "connection limit") {
		t.Fatalf("over MaxConns: %d %q, want 200 with retry: 7000", full.resp.StatusCode, body)
	}
	for _, tc := range []struct {
		name   string
		path   string
		extra  []string
		status int
	}{
		{"no token", "/sse?channel=a", nil, http.StatusUnauthorized},
		{"channel not granted", "/sse?channel=b&token=" + tok, nil, http.StatusForbidden},
		{"foreign origin", "/sse?channel=a&token=" + tok, []string{"Origin: https://evil.example"}, http.StatusForbidden},
		{"bad channel", "/sse?channel=a%20b&token=" + tok, nil, http.StatusBadRequest},
		{"raw format", "/sse?channel=a&format=raw&token=" + tok, nil, http.StatusBadRequest},
	} {
		c := dialSSE(t, s.addr, tc.path, tc.extra...)
		if c.resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.name, c.resp.StatusCode, tc.status)
		}
	}
	waitFor(t, "the refusals counted", func() bool {
		st := s.Stats()
		return st.Rejects(broadcast.RejectFull) == 1 && st.Rejects(broadcast.RejectUnauthorized) == 1 && st.Rejects(broadcast.RejectOrigin) == 1
	})
}

// A page on another origin the policy allows reads the stream (CORS), and
// its preflight is answered.
func TestSSECORS(t *testing.T) {
	s := startServer(t, broadcast.Config{Origins: []string{"https://app.example"}})
	c := dialSSE(t, s.addr, "/sse?channel=a", "Origin: https://app.example")
	if c.resp.StatusCode != http.StatusOK || c.resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || c.resp.Header.Get("Vary") != "Origin" {
		t.Fatalf("answer %d %v", c.resp.StatusCode, c.resp.Header)
	}
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "OPTIONS /sse?channel=a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAccess-Control-Request-Headers: authorization\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight %d %v", resp.StatusCode, resp.Header)
	}
}

// A slow SSE client is closed, never dropped for, and resumes from the
// last event it read.
func TestSSESlowClientResumes(t *testing.T) {
	s := startServer(t, broadcast.Config{QueueBytes: 4096, SlowPolicy: broadcast.SlowDrop, CloseTimeout: time.Minute,
		HistorySize: 20000, HistoryBytes: 1 << 30, Backlog: 1 << 15}) // every publish below fits in the ring and the history
	c := dialSSE(t, s.addr, "/sse?channel=a")
	c.next(t)
	s.waitConns(t, 1)
	payload := strings.Repeat("x", 1000)
	var last broadcast.Receipt
	for i := 0; i < 16000; i++ {
		last = publish(t, s, "a", payload)
	}
	var lastID string
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := c.br.ReadString('\n')
		if err == io.EOF {
			c.nc.Close() // as EventSource does when the stream ends
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "id: ") {
			lastID = strings.TrimSpace(line[4:])
		}
	}
	if st := s.Stats(); st.Dropped != 0 {
		t.Fatalf("dropped %d for an SSE client", st.Dropped)
	}
	waitFor(t, "the slow stream counted", func() bool { return s.Stats().Closed(broadcast.ReasonSlowConsumer) == 1 })
	// Each reconnect replays what fits in the socket and the queue, and
	// the client goes on from its last id: every seq once, in order, to
	// the last one.
	want := seqOf(t, lastID) + 1
	for attempt := 0; want <= last.Seq; attempt++ {
		if attempt == 100 {
			t.Fatalf("still at seq %d of %d after 100 reconnects", want, last.Seq)
		}
		again := dialSSE(t, s.addr, "/sse?channel=a", "Last-Event-ID: "+lastID)
		if w := again.next(t); w.data.Recovered == nil || !*w.data.Recovered {
			t.Fatalf("resume from %s: %+v", lastID, w)
		}
		for want <= last.Seq {
			ev, ok := again.tryNext()
			if !ok {
				break // closed again, slow: reconnect from here
			}
			if ev.data.Seq != want {
				t.Fatalf("resumed: seq %d, want %d", ev.data.Seq, want)
			}
			lastID, want = ev.id, want+1
		}
		again.nc.Close()
	}
}

// seqOf is the seq of an event id EPOCH:SEQ.
func seqOf(t testing.TB, id string) uint64 {
	t.Helper()
	c, err := broadcast.ParseCursor(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Seq
}

// tryNext is next that reports the stream's end instead of failing.
func (c *sseClient) tryNext() (ev sseEvent, ok bool) {
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return ev, false
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && ev.raw != "":
			return ev, json.Unmarshal([]byte(ev.raw), &ev.data) == nil
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "data: "):
			ev.raw += line[6:]
		}
	}
}
