package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

// The helpers below are copies of broadcast/helpers_test.go's: a test
// package cannot import another's test files.

// testServer is a real server on a random loopback port.
type testServer struct {
	*broadcast.Server
	url string // ws://host:port/ws
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startServer(t testing.TB, cfg broadcast.Config) *testServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	srv, err := broadcast.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != broadcast.ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	path := cfg.Path
	if path == "" {
		path = "/ws"
	}
	return &testServer{Server: srv, url: "ws://" + ln.Addr().String() + path}
}

// waitFor polls cond until it holds or 10s pass. Polling, not sleeping a
// guessed time: the assertion is on the state, never on the speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitConns waits until the server's table holds n connections.
func (s *testServer) waitConns(t testing.TB, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d connections", n), func() bool { return s.Conns() == n })
}

func dialGorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectMessage reads one message with gorilla within 10s.
func expectMessage(t testing.TB, c *websocket.Conn, wantType int, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != wantType || !bytes.Equal(got, want) {
		t.Fatalf("got type %d %q, want type %d %q", typ, got, wantType, want)
	}
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
