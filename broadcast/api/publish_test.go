package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

// post sends body to url with the given Authorization and Content-Type
// (each omitted when empty) and returns the status, headers and JSON body.
func post(t *testing.T, url, auth, ctype string, body []byte) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, resp.Header, out
}

// Moved from broadcast/ops_test.go with the same assertions; the handler
// is now reached through the admin mux.
func TestPublishAPI(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxMessage: 100})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k1", "k2"}, MaxMessage: 100})
	a, b := dialGorilla(t, s.url), dialGorilla(t, s.url)
	s.waitConns(t, 2)

	for _, tc := range []struct {
		name, auth, ctype string
		body              []byte
		status            int
	}{
		{"no key", "", "", []byte("x"), http.StatusUnauthorized},
		{"not bearer", "Basic azE6", "", []byte("x"), http.StatusUnauthorized},
		{"wrong key", "Bearer nope", "", []byte("x"), http.StatusForbidden},
		{"too big", "Bearer k1", "", bytes.Repeat([]byte("x"), 101), http.StatusRequestEntityTooLarge},
		{"invalid UTF-8 text", "Bearer k2", "text/plain", []byte{0xff}, http.StatusBadRequest},
	} {
		code, _, out := post(t, admin+"/publish", tc.auth, tc.ctype, tc.body)
		if code != tc.status || out["error"] == "" {
			t.Errorf("%s: %d %v, want %d with an error message", tc.name, code, out, tc.status)
		}
	}
	if st := s.Stats(); st.Published != 0 {
		t.Fatalf("refused publishes were published: %d", st.Published)
	}

	code, _, out := post(t, admin+"/publish", "Bearer k2", "application/octet-stream", []byte{0xff, 0})
	if code != http.StatusAccepted || out["recipients"] != float64(2) {
		t.Fatalf("binary publish: %d %v", code, out)
	}
	code, _, _ = post(t, admin+"/publish", "Bearer k1", "text/plain; charset=utf-8", []byte("héllo"))
	if code != http.StatusAccepted {
		t.Fatalf("text publish: %d", code)
	}
	for _, c := range []*gorilla.Conn{a, b} {
		expectMessage(t, c, gorilla.BinaryMessage, []byte{0xff, 0})
		expectMessage(t, c, gorilla.TextMessage, []byte("héllo"))
	}

	// No keys configured: the API is off.
	_, off := startAdmin(t, api.Config{Server: s})
	resp, err := http.Post(off+"/publish", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("publish without configured keys: %d", resp.StatusCode)
	}
}

// fakePublisher answers every Publish with err (and 7 recipients).
type fakePublisher struct{ err error }

func (f fakePublisher) Publish(m broadcast.Message) (broadcast.Receipt, error) {
	return broadcast.Receipt{Channel: m.Channel, Seq: 41, Epoch: "e1", Recipients: 7}, f.err
}

// What the server says maps to a status: 503 with Retry-After for what
// may pass later, 413 and 400 for what never will.
func TestPublishRefusals(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		retryAfter string
	}{
		{nil, http.StatusAccepted, ""},
		{broadcast.ErrBacklog, http.StatusServiceUnavailable, "1"},
		{broadcast.ErrServerClosed, http.StatusServiceUnavailable, "1"},
		{fmt.Errorf("%w: %w", broadcast.ErrBus, errors.New("bus: buffer full")), http.StatusServiceUnavailable, "1"},
		{broadcast.ErrTooBig, http.StatusRequestEntityTooLarge, ""},
		{errors.New("something else"), http.StatusBadRequest, ""},
	} {
		h := httptest.NewServer(api.PublishHandler(fakePublisher{tc.err}, []string{"k"}, 0))
		code, hdr, out := post(t, h.URL, "Bearer k", "", []byte("x"))
		h.Close()
		if code != tc.status || hdr.Get("Retry-After") != tc.retryAfter {
			t.Errorf("%v: %d Retry-After %q, want %d %q", tc.err, code, hdr.Get("Retry-After"), tc.status, tc.retryAfter)
		}
		if tc.err == nil && out["recipients"] != float64(7) {
			t.Errorf("accepted: body %v, want recipients 7", out)
		}
		if tc.err != nil && out["error"] != tc.err.Error() {
			t.Errorf("%v: error %q, want the server's reason", tc.err, out["error"])
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%v: Content-Type %q", tc.err, ct)
		}
	}
}

func TestPublishHeaders(t *testing.T) {
	h := httptest.NewServer(api.PublishHandler(fakePublisher{}, []string{"k"}, 10))
	defer h.Close()
	resp, err := http.Get(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d Allow %q, want 405 Allow POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
	code, hdr, _ := post(t, h.URL, "", "", []byte("x"))
	if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("no key: %d WWW-Authenticate %q", code, hdr.Get("WWW-Authenticate"))
	}
	code, _, out := post(t, h.URL, "Bearer k", "", bytes.Repeat([]byte("x"), 11))
	if code != http.StatusRequestEntityTooLarge || out["error"] != "message over 10 bytes" {
		t.Errorf("11 bytes over a limit of 10: %d %v", code, out)
	}
}

// A real server that is shutting down refuses with 503 and Retry-After.
func TestPublishWhileShuttingDown(t *testing.T) {
	srv, err := broadcast.New(broadcast.Config{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	_, admin := startAdmin(t, api.Config{Server: srv, PublishKeys: []string{"k"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	code, hdr, out := post(t, admin+"/publish", "Bearer k", "", []byte("late"))
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "1" || out["error"] == nil {
		t.Fatalf("publish after shutdown: %d Retry-After %q %v", code, hdr.Get("Retry-After"), out)
	}
}

// A batch is one text message per line, in order; CR before LF and blank
// lines are dropped; the answer counts what was published.
func TestPublishBatch(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxMessage: 100})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k"}, MaxMessage: 100})
	a, b := dialGorilla(t, s.url), dialGorilla(t, s.url)
	s.waitConns(t, 2)

	body := "{\"n\":1}\n\n{\"n\":2}\r\nhéllo\n   \nlast without LF"
	code, hdr, out := post(t, admin+"/publish", "Bearer k", "application/x-ndjson; charset=utf-8", []byte(body))
	if code != http.StatusAccepted || out["recipients"] != float64(2) || out["published"] != float64(5) {
		t.Fatalf("batch: %d %v, want 202 with recipients 2, published 5", code, out)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, c := range []*gorilla.Conn{a, b} {
		for _, want := range []string{`{"n":1}`, `{"n":2}`, "héllo", "   ", "last without LF"} {
			expectMessage(t, c, gorilla.TextMessage, []byte(want))
		}
	}
	if st := s.Stats(); st.Published != 5 {
		t.Fatalf("published %d, want 5", st.Published)
	}

	// Refused whole: nothing of these is published.
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
	}{
		{"invalid UTF-8 on a line", []byte("ok\n\xff\n"), http.StatusBadRequest},
		{"no message", []byte("\n\r\n\n"), http.StatusBadRequest},
		{"empty body", nil, http.StatusBadRequest},
		{"over the limit as a whole", bytes.Repeat([]byte("0123456789\n"), 10), http.StatusRequestEntityTooLarge},
	} {
		code, _, out := post(t, admin+"/publish", "Bearer k", "application/x-ndjson", tc.body)
		if code != tc.status || out["error"] == "" || out["published"] != nil {
			t.Errorf("%s: %d %v, want %d with an error and no count", tc.name, code, out, tc.status)
		}
	}
	if st := s.Stats(); st.Published != 5 {
		t.Fatalf("refused batches were published: %d, want still 5", st.Published)
	}
}

// countingPublisher publishes the first ok messages, then refuses with err.
type countingPublisher struct {
	ok  int
	err error
	got [][]byte
}

func (c *countingPublisher) Publish(m broadcast.Message) (broadcast.Receipt, error) {
	if len(c.got) >= c.ok {
		return broadcast.Receipt{}, c.err
	}
	c.got = append(c.got, append([]byte(nil), m.Payload...))
	return broadcast.Receipt{Recipients: 3}, nil
}

// A batch refused partway says how much of it went in, with the status
// and Retry-After of the reason.
func TestPublishBatchRefusedPartway(t *testing.T) {
	type result struct {
		status     int
		published  any
		retryAfter string
	}
	for _, tc := range []struct {
		err  error
		want result
	}{
		{broadcast.ErrBacklog, result{http.StatusServiceUnavailable, float64(2), "1"}},
		{broadcast.ErrServerClosed, result{http.StatusServiceUnavailable, float64(2), "1"}},
		{fmt.Errorf("%w: %w", broadcast.ErrBus, errors.New("bus: buffer full")), result{http.StatusServiceUnavailable, float64(2), "1"}},
		{broadcast.ErrTooBig, result{http.StatusRequestEntityTooLarge, float64(2), ""}},
	} {
		cp := &countingPublisher{ok: 2, err: tc.err}
		h := httptest.NewServer(api.PublishHandler(cp, []string{"k"}, 0))
		code, hdr, out := post(t, h.URL, "Bearer k", "application/x-ndjson", []byte("a\nb\nc\nd\n"))
		h.Close()
		got := result{code, out["published"], hdr.Get("Retry-After")}
		if got != tc.want || out["error"] != tc.err.Error() {
			t.Errorf("%v: %+v %v, want %+v with the server's reason", tc.err, got, out, tc.want)
		}
		if len(cp.got) != 2 || string(cp.got[0]) != "a" || string(cp.got[1]) != "b" {
			t.Errorf("%v: published %q, want a, b", tc.err, cp.got)
		}
	}
}

// The 202 goes out with a Content-Length, not chunked, on a connection
// that stays open for the next request.
func TestPublishAnswerFraming(t *testing.T) {
	h := httptest.NewServer(api.PublishHandler(fakePublisher{}, []string{"k"}, 0))
	defer h.Close()
	for _, ctype := range []string{"application/octet-stream", "application/x-ndjson"} {
		req, _ := http.NewRequest(http.MethodPost, h.URL, strings.NewReader("x\ny\n"))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := `{"channel":"","seq":41,"epoch":"e1","recipients":7}` + "\n"
		if ctype == "application/x-ndjson" {
			want = `{"channel":"","seq":41,"epoch":"e1","recipients":7,"published":2}` + "\n"
		}
		if resp.StatusCode != http.StatusAccepted || string(body) != want {
			t.Errorf("%s: %d %q, want 202 %q", ctype, resp.StatusCode, body, want)
		}
		if resp.ContentLength != int64(len(want)) || len(resp.TransferEncoding) != 0 || resp.Close {
			t.Errorf("%s: Content-Length %d, Transfer-Encoding %v, Close %v: want %d, none, keep-alive",
				ctype, resp.ContentLength, resp.TransferEncoding, resp.Close, len(want))
		}
	}
}

// discardWriter is the least an http.ResponseWriter can be: the handler's
// own cost is what the benchmarks measure.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }

// benchmarkPublish serves the same request b.N times, as net/http would
// hand it over (a fresh body and response headers each time).
func benchmarkPublish(b *testing.B, ctype string, body []byte) {
	h := api.PublishHandler(fakePublisher{}, []string{"k"}, 0)
	req := httptest.NewRequest(http.MethodPost, "/publish", nil)
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", ctype)
	req.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	body0 := io.NopCloser(rd)
	w := &discardWriter{}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset(body)
		req.Body = body0
		w.h, w.code = http.Header{}, 0
		h.ServeHTTP(w, req)
		if w.code != http.StatusAccepted {
			b.Fatalf("status %d", w.code)
		}
	}
}

func BenchmarkPublishHandler(b *testing.B) {
	b.Run("binary-64B", func(b *testing.B) {
		benchmarkPublish(b, "application/octet-stream", bytes.Repeat([]byte("x"), 64))
	})
	b.Run("text-64B", func(b *testing.B) { benchmarkPublish(b, "text/plain", bytes.Repeat([]byte("x"), 64)) })
	b.Run("batch-16x64B", func(b *testing.B) {
		benchmarkPublish(b, "application/x-ndjson", bytes.Repeat(append(bytes.Repeat([]byte("x"), 64), '\n'), 16))
	})
}
