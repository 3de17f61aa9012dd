package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
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

func (f fakePublisher) Publish(ws.OpCode, []byte) (int, error) { return 7, f.err }

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
