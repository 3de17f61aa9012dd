package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
	"github.com/fanout/fanout/broadcast/internal/servertest"
)

// testServer is a real server on a random loopback port.
type testServer struct {
	*broadcast.Server
	url string // ws://host:port/ws
}

func quietLogger() *slog.Logger { return servertest.QuietLogger() }

func startServer(t testing.TB, cfg broadcast.Config) *testServer {
	t.Helper()
	s := servertest.Start(t, cfg)
	return &testServer{Server: s.Server, url: s.URL}
}

// waitFor polls cond until it holds or 10s pass (servertest.WaitFor).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	servertest.WaitFor(t, what, cond)
}

// waitConns waits until the server's table holds n connections.
func (s *testServer) waitConns(t testing.TB, n int) {
	t.Helper()
	servertest.WaitConns(t, s.Server, n)
}

func dialGorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	return servertest.DialGorilla(t, url)
}

// expectMessage reads one message with gorilla within 10s.
func expectMessage(t testing.TB, c *websocket.Conn, wantType int, want []byte) {
	t.Helper()
	servertest.ExpectMessage(t, c, wantType, want)
}

// startAdmin serves api.New(cfg) on a random loopback port and returns
// the Admin and its base URL.
func startAdmin(t testing.TB, cfg api.Config) (*api.Admin, string) {
	t.Helper()
	a, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(hs.Close)
	return a, hs.URL
}

// get fetches url and returns its status and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
