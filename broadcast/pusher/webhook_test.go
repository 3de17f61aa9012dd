package pusher

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Webhooks go out batched, in order, signed over the exact body with the
// app's secret, as application/json; a failing endpoint is retried.
func TestWebhooksBatchedSignedRetried(t *testing.T) {
	var mu sync.Mutex
	var got []webhookEvent
	fails := 2
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Pusher-Key") != "k" ||
			r.Header.Get("X-Pusher-Signature") != sign("s", string(body)) {
			t.Errorf("headers %v", r.Header)
		}
		var b struct {
			TimeMs int64          `json:"time_ms"`
			Events []webhookEvent `json:"events"`
		}
		if err := json.Unmarshal(body, &b); err != nil || b.TimeMs == 0 {
			t.Errorf("body %s", body)
		}
		got = append(got, b.Events...)
	}))
	defer srv.Close()
	var m metrics
	m.init()
	w, err := newWebhooks(&App{ID: "1", Key: "k", Secret: "s", WebhookURL: srv.URL}, WebhookConfig{MaxBatch: 3}, quiet(), &m)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"channel_occupied", "member_added", "member_removed", "channel_vacated", "channel_occupied"} {
		w.add(webhookEvent{Name: name, Channel: "presence-x"})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the endpoint's record
	}
	w.close(time.Now().Add(time.Second))
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
	}
	if len(names) != 5 || names[0] != "channel_occupied" || names[3] != "channel_vacated" || names[4] != "channel_occupied" {
		t.Fatalf("events %v, want the five in order", names)
	}
	if f := testutil.ToFloat64(m.webhookPosts.WithLabelValues("failed")); f != 2 {
		t.Errorf("%v failed posts, want 2", f)
	}
}

// A shutdown does not wait on an endpoint that never answers: close
// returns once its deadline passes, and what was not sent is counted as
// dropped at shutdown.
func TestWebhooksCloseBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var cmu sync.Mutex
	go func() { // accepts, reads nothing, answers nothing
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
		}
	}()
	defer func() {
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
	}()
	var m metrics
	m.init()
	w, err := newWebhooks(&App{ID: "1", Key: "k", Secret: "s", WebhookURL: "http://" + ln.Addr().String()},
		WebhookConfig{MaxBatch: 2, Timeout: time.Hour}, quiet(), &m)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		w.add(webhookEvent{Name: "channel_occupied", Channel: "c"})
	}
	done := make(chan struct{})
	go func() {
		w.close(time.Now().Add(200 * time.Millisecond))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("close still waiting on the endpoint 30 s after its 200 ms deadline")
	}
	if d := testutil.ToFloat64(m.webhookDropped.WithLabelValues("shutdown")); d != 10 {
		t.Errorf("%v events dropped at shutdown, want 10", d)
	}
	w.add(webhookEvent{Name: "late"})
	if d := testutil.ToFloat64(m.webhookDropped.WithLabelValues("shutdown")); d != 11 {
		t.Errorf("an event after close: %v dropped at shutdown, want 11", d)
	}
}
