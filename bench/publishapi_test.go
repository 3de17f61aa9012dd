package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

// startFanoutAPI starts a real node and its admin API (publish key "k"),
// with h wrapping the admin handler when set, and returns the WebSocket
// URL, the publish URL and the server.
func startFanoutAPI(t *testing.T, wrap func(http.Handler) http.Handler) (wsURL, publishURL string, srv *broadcast.Server) {
	t.Helper()
	wsURL, srv = startFanout(t)
	a, err := api.New(api.Config{Server: srv, PublishKeys: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return wsURL, hs.URL + "/publish", srv
}

// HTTP publishers, alone or in batches, at a fixed rate or in a closed
// loop: every message reaches every receiver exactly once, in order, and
// the server published exactly what the bench says it sent.
func TestHTTPPublishersDeliverExactlyOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  float64
		batch int
	}{
		{"one per request, fixed rate", 1000, 1},
		{"one per request, closed loop", 0, 1},
		{"batches, fixed rate", 24000, 8}, // 8 due per publisher per millisecond
		{"batches, closed loop", 0, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wsURL, pubURL, srv := startFanoutAPI(t, nil)
			res, err := Run(context.Background(), Config{
				Scenario: ScenarioFanout, URL: wsURL, Conns: 20, Publishers: 3,
				Messages: 60, Rate: tc.rate, Window: 8, Duration: time.Minute, Drain: 5 * time.Second,
				PublishURL: pubURL, PublishKey: "k", PublishBatch: tc.batch,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			if f.Sent != 180 || f.Expected != 3600 || f.Received != 3600 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || f.Foreign != 0 {
				t.Fatalf("sent %d expected %d received %d lost %d dups %d reordered %d foreign %d; want 180, 3600, 3600 and no faults",
					f.Sent, f.Expected, f.Received, f.Lost, f.Duplicates, f.Reordered, f.Foreign)
			}
			if f.Latency.Count != 3600 || len(res.PublisherErrors) != 0 || f.WindowTimeouts != 0 {
				t.Fatalf("latency samples %d, publisher errors %v, window timeouts %d", f.Latency.Count, res.PublisherErrors, f.WindowTimeouts)
			}
			if st, want := srv.Stats(), 180+res.WarmupSent; st.Published != want || st.MessagesIn != 0 {
				t.Fatalf("server published %d (%d from clients), want %d (180 and the warm-ups), none from clients", st.Published, st.MessagesIn, want)
			}
			requests := f.PublishRequests - res.WarmupSent
			switch {
			case tc.batch == 1 && requests != 180:
				t.Fatalf("%d requests for 180 messages, one each", requests)
			case tc.batch > 1 && (requests > 90 || requests < 180/uint64(tc.batch)):
				t.Fatalf("%d requests for 180 messages in batches of up to %d: want 2 or more a request", requests, tc.batch)
			}
		})
	}
}

// refusingAPI answers every third request 503 (Retry-After 0). For a
// batch it first publishes the first half of the lines, and says so, as
// the server does when its backlog fills partway.
func refusingAPI(next http.Handler) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/publish" || n.Add(1)%3 != 0 {
			next.ServeHTTP(w, r)
			return
		}
		published := 0
		if r.Header.Get("Content-Type") == "application/x-ndjson" {
			body, _ := io.ReadAll(r.Body)
			lines := bytes.SplitAfter(body, []byte("\n"))
			half := bytes.Join(lines[:len(lines)/2], nil)
			if len(half) > 0 {
				rec := httptest.NewRecorder()
				r2 := r.Clone(r.Context())
				r2.Body, r2.ContentLength = io.NopCloser(bytes.NewReader(half)), int64(len(half))
				next.ServeHTTP(rec, r2)
				var ans struct{ Published int }
				if rec.Code != http.StatusAccepted || json.Unmarshal(rec.Body.Bytes(), &ans) != nil {
					http.Error(w, fmt.Sprintf("half a batch: %d %s", rec.Code, rec.Body), http.StatusInternalServerError)
					return
				}
				published = ans.Published
			}
		}
		w.Header().Set("Retry-After", strconv.Itoa(0))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, `{"error":"broadcast: publish backlog full","published":%d}`+"\n", published)
	})
}

// Refused requests (whole, or a batch partway) are sent again from the
// first message not published: still exactly once each, in order.
func TestHTTPPublishersRetryRefusals(t *testing.T) {
	for _, batch := range []int{1, 8} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			wsURL, pubURL, srv := startFanoutAPI(t, refusingAPI)
			res, err := Run(context.Background(), Config{
				Scenario: ScenarioFanout, URL: wsURL, Conns: 10, Publishers: 2,
				Messages: 60, Rate: 0, Window: 8, Duration: time.Minute, Drain: 5 * time.Second,
				PublishURL: pubURL, PublishKey: "k", PublishBatch: batch,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			if f.Sent != 120 || f.Received != 1200 || f.Lost != 0 || f.Duplicates != 0 || f.Reordered != 0 || len(res.PublisherErrors) != 0 {
				t.Fatalf("sent %d received %d lost %d dups %d reordered %d errors %v; want 120, 1200, no faults",
					f.Sent, f.Received, f.Lost, f.Duplicates, f.Reordered, res.PublisherErrors)
			}
			if f.PublishRefused == 0 {
				t.Fatal("no refusal counted")
			}
			// Warm-ups may be refused too; every message is published once.
			if st := srv.Stats(); st.Published < 120 || st.Published > 120+res.WarmupSent {
				t.Fatalf("server published %d, want 120 and at most %d warm-ups", st.Published, res.WarmupSent)
			}
		})
	}
}

// A wrong key, or a server that does not take batches, stops the run
// with the server's answer instead of measuring nothing.
func TestHTTPPublishersReportTheServersAnswer(t *testing.T) {
	wsURL, pubURL, _ := startFanoutAPI(t, nil)
	_, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: wsURL, Conns: 2, Messages: 5, Rate: 100, Drain: time.Second,
		PublishURL: pubURL, PublishKey: "wrong",
	}, nil)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("403: unknown publish key")) {
		t.Fatalf("wrong key: %v, want the 403 and its reason", err)
	}

	// A server from before batches publishes one as a single text
	// message, and answers 202 without a count.
	old := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Content-Type") == "application/x-ndjson" {
				r.Header.Set("Content-Type", "text/plain")
			}
			next.ServeHTTP(w, r)
		})
	}
	wsURL, pubURL, _ = startFanoutAPI(t, old)
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: wsURL, Conns: 2, Messages: 5, Rate: 100, Drain: time.Second,
		PublishURL: pubURL, PublishKey: "k", PublishBatch: 4,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.PublisherErrors) != 1 || !bytes.Contains([]byte(res.PublisherErrors[0]), []byte("application/x-ndjson")) {
		t.Fatalf("publisher errors %q, want one saying batches are not taken", res.PublisherErrors)
	}
}

func TestTextPayloadRoundTrip(t *testing.T) {
	cfg, err := Config{URL: "ws://x/ws", PublishURL: "http://x/publish", PublishBatch: 2, Size: textPayloadHeader}.WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	p := newPayload(cfg)
	putTextPayload(p, 0xbeef, 1<<60+7, 1234567890123456789)
	if !json.Valid(p) {
		t.Fatalf("%q is not a JSON string", p)
	}
	pub, seq, sent, err := parsePayload(p)
	if err != nil || pub != 0xbeef || seq != 1<<60+7 || sent != 1234567890123456789 {
		t.Fatalf("parsed %x %d %d %v", pub, seq, sent, err)
	}
	p[10] = 'g'
	if _, _, _, err := parsePayload(p); err == nil {
		t.Fatal("a bad hex digit parsed")
	}
	if _, err := (Config{URL: "ws://x/ws", PublishURL: "http://x/publish", PublishBatch: 2, Size: textPayloadHeader - 1}).WithDefaults(); err == nil {
		t.Fatal("a text payload under its header size was accepted")
	}
	if _, err := (Config{URL: "ws://x/ws", PublishBatch: 2}).WithDefaults(); err == nil {
		t.Fatal("a publish batch without a publish url was accepted")
	}
	if _, err := (Config{URL: "ws://x/ws", PublishURL: "ws://x/publish"}).WithDefaults(); err == nil {
		t.Fatal("a ws:// publish url was accepted")
	}
}

// storingRefuser publishes every third request, then answers it 503, as
// a node does whose log stored a message but whose acknowledgement was
// lost (its NATS server went away): the publisher, told no, sends it
// again.
func storingRefuser(next http.Handler) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/publish" || n.Add(1)%3 != 0 {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(httptest.NewRecorder(), r)
		w.Header().Set("Retry-After", "0")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"error":"broadcast: the tier did not take the message: bus: JetStream did not acknowledge the message"}`)
	})
}

// Without idempotency keys a refused message that was stored anyway is
// stored twice, and the receivers count the duplicates; with them, the
// server answers the retry from the first publish: every message once.
func TestHTTPPublishersIdempotencyKeys(t *testing.T) {
	for _, keys := range []bool{false, true} {
		t.Run(fmt.Sprintf("keys %v", keys), func(t *testing.T) {
			wsURL, pubURL, _ := startFanoutAPI(t, storingRefuser)
			res, err := Run(context.Background(), Config{
				Scenario: ScenarioFanout, URL: wsURL, Conns: 10, Publishers: 2,
				Messages: 30, Rate: 1000, Duration: time.Minute, Drain: 5 * time.Second,
				PublishURL: pubURL, PublishKey: "k", IdempotencyKeys: keys,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f := res.Fanout
			if f.Sent != 60 || f.Received != 600 || f.Lost != 0 || f.Reordered != 0 || f.PublishRefused == 0 {
				t.Fatalf("sent %d received %d lost %d reordered %d refused %d; want 60, 600, 0, 0 and some refused", f.Sent, f.Received, f.Lost, f.Reordered, f.PublishRefused)
			}
			if keys != (f.Duplicates == 0) {
				t.Fatalf("idempotency keys %v: %d duplicates", keys, f.Duplicates)
			}
		})
	}
}

// A message refused (503) yet stored, that its publisher never gets
// acknowledged before the run ends, reaches the receivers: each of them
// counts it as an extra delivery, not as a received message that could
// hide another's loss, and the idempotency key keeps it stored once.
func TestHTTPPublishersCountExtraDeliveries(t *testing.T) {
	storesAndRefusesFrom10 := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if pub, seq, _, err := parsePayload(body); r.URL.Path != "/publish" || err != nil || pub == warmPub || seq < 10 {
				next.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(httptest.NewRecorder(), r)
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		})
	}
	wsURL, pubURL, _ := startFanoutAPI(t, storesAndRefusesFrom10)
	res, err := Run(context.Background(), Config{
		Scenario: ScenarioFanout, URL: wsURL, Conns: 10, Publishers: 1,
		Rate: 100, Duration: 500 * time.Millisecond, Drain: 5 * time.Second,
		PublishURL: pubURL, PublishKey: "k", IdempotencyKeys: true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := res.Fanout
	if f.Sent != 10 || f.Expected != 100 || f.Received != 110 || f.Extra != 10 || f.Lost != 0 || f.Duplicates != 0 {
		t.Fatalf("sent %d expected %d received %d extra %d lost %d dups %d; want 10, 100, 110, 10 (message 10 everywhere), 0, 0",
			f.Sent, f.Expected, f.Received, f.Extra, f.Lost, f.Duplicates)
	}
}
