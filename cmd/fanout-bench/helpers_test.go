package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/fanout/fanout/bench/baseline"
	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

func startBaseline(t *testing.T) string {
	t.Helper()
	hub := baseline.New(baseline.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: baseline.Handler(hub, "/ws")}
	go srv.Serve(ln)
	t.Cleanup(func() { hub.Close(); srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws"
}

// startFanout starts a real fanout node and returns its WebSocket URL.
func startFanout(t *testing.T) string {
	t.Helper()
	srv, err := broadcast.New(broadcast.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "ws://" + ln.Addr().String() + "/ws"
}

// startFanoutMetrics starts a real fanout node with its admin API and
// returns its WebSocket URL and its /metrics URL.
func startFanoutMetrics(t *testing.T) (wsURL, metricsURL string) {
	t.Helper()
	srv, err := broadcast.New(broadcast.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a, err := api.New(api.Config{Server: srv})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(a.Handler())
	t.Cleanup(hs.Close)
	return "ws://" + ln.Addr().String() + "/ws", hs.URL + "/metrics"
}

func itoa(n int) string { return strconv.Itoa(n) }
