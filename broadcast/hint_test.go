package broadcast_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fanout/fanout/broadcast"
)

// A request that is not an upgrade of the WebSocket path (a publish sent
// to the wrong listener, a typo in the path) gets one line saying where
// things are, and nothing about the server's addresses or keys.
func TestWrongPathAndMethodHint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    broadcast.Config
		method string
		path   string
		status int
		body   string
	}{
		{"publish to the ws port", broadcast.Config{}, http.MethodPost, "/publish", http.StatusMethodNotAllowed,
			"method not allowed: WebSocket at /ws, SSE at /sse (GET); publishing is on the admin listener (POST /publish)\n"},
		{"POST on the ws path", broadcast.Config{}, http.MethodPost, "/ws", http.StatusMethodNotAllowed,
			"method not allowed: WebSocket at /ws, SSE at /sse (GET); publishing is on the admin listener (POST /publish)\n"},
		{"wrong path", broadcast.Config{}, http.MethodGet, "/", http.StatusNotFound,
			"no such path: WebSocket at /ws, SSE at /sse (GET); publishing is on the admin listener (POST /publish)"},
		{"own paths, no SSE", broadcast.Config{Path: "/live", NoSSE: true}, http.MethodGet, "/ws", http.StatusNotFound,
			"no such path: WebSocket at /live (GET); publishing is on the admin listener (POST /publish)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.cfg)
			req, err := http.NewRequest(tc.method, "http://"+s.addr+tc.path, strings.NewReader(`{"data":"hi"}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer secret-key")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(body) != tc.body {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if tc.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET" {
				t.Errorf("405 without Allow: GET: %v", resp.Header)
			}
			_, port, _ := strings.Cut(s.addr, ":")
			if strings.Contains(string(body), port) || strings.Contains(string(body), "secret") {
				t.Errorf("the hint leaks an address or the key: %q", body)
			}
			kind := broadcast.RejectNotFound
			if tc.status == http.StatusMethodNotAllowed {
				kind = broadcast.RejectBadRequest
			}
			waitFor(t, "the refusal counted as "+kind.String(), func() bool { return s.Stats().Rejects(kind) == 1 })
		})
	}
}
