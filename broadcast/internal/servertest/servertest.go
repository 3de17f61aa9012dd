// Package servertest starts real broadcast servers for tests: on a random
// loopback port, shut down and checked when the test ends. It is what the
// broadcast and api test suites share (a test package cannot import
// another's test files).
package servertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/fanout/fanout/broadcast"
	"github.com/gorilla/websocket"
)

// Server is a real server on a random loopback port.
type Server struct {
	*broadcast.Server
	Addr string // host:port
	URL  string // ws://host:port/ws (or Config.Path)
}

// QuietLogger discards logs, or shows them all with go test -v.
func QuietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start runs a server for cfg until the test ends; then it must shut down
// within 5 s and Serve must return ErrServerClosed.
func Start(t testing.TB, cfg broadcast.Config) *Server {
	t.Helper()
	return StartWith(t, cfg, nil)
}

// StartWith is Start with before run on the server before it serves
// (SetBus, a tier joined).
func StartWith(t testing.TB, cfg broadcast.Config, before func(*broadcast.Server)) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = QuietLogger()
	}
	srv, err := broadcast.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(srv)
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
	return &Server{Server: srv, Addr: ln.Addr().String(), URL: "ws://" + ln.Addr().String() + path}
}

// WaitFor polls cond until it holds or 10 s pass. Polling, not sleeping a
// guessed time: the assertion is on the state, never on the speed.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitConns waits until srv's table holds n connections.
func WaitConns(t testing.TB, srv *broadcast.Server, n int) {
	t.Helper()
	WaitFor(t, fmt.Sprintf("%d connections", n), func() bool { return srv.Conns() == n })
}

// DialGorilla connects a gorilla/websocket client, closed when the test ends.
func DialGorilla(t testing.TB, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("gorilla dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ExpectMessage reads one message with gorilla within 10 s and checks it.
func ExpectMessage(t testing.TB, c *websocket.Conn, wantType int, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != wantType || !bytes.Equal(got, want) {
		t.Fatalf("got type %d %q, want type %d %q", typ, Trunc(got), wantType, Trunc(want))
	}
}

// Trunc shortens a payload for a failure message.
func Trunc(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return string(b)
}
