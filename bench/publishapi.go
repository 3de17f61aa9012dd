package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// apiClient posts publishers' messages to a publish API (Config.PublishURL:
// fanout's POST /publish, each publisher on its channel and its server,
// see publishURLFor; or, with the Pusher protocol, the Pusher HTTP API's
// POST /apps/ID/events, each request signed). One is shared by a run's publishers; its Transport
// keeps an idle keep-alive connection for each of them (at most
// apiConnsPerHost to one server), and each publisher's requests are
// sequential (one in flight), so its messages are published in order.
type apiClient struct {
	auth   []string // the Authorization header's value (nil: none)
	ctype  []string // the Content-Type of a request that carries one message
	run    string   // this run's prefix of idempotency keys (Config.IdempotencyKeys)
	hc     *http.Client
	name   string        // what the API is, in errors
	ok     int           // the status of a request the API took: 202, Pusher's 200
	pusher *pusherSigner // signs every request (the Pusher HTTP API), or nil

	requests atomic.Uint64 // requests answered
	refused  atomic.Uint64 // of which 503: retried after Retry-After
	latency  Histogram     // request sent to answer read, per answered request
}

// Content types of the kinds of request: one binary message, one JSON
// message (Config.Payload json: published as JSON, the envelope's data is
// the value itself), one text message, a batch.
var (
	ctypeOne   = []string{"application/octet-stream"}
	ctypeJSON  = []string{"application/json"}
	ctypeText  = []string{"text/plain; charset=utf-8"}
	ctypeBatch = []string{"application/x-ndjson"}
)

// apiConnsPerHost bounds the connections to one publish API server: with
// a publisher on each of many channels, one connection each would pass
// fanout's -admin-max-conns (64), which closes the one idle longest for a
// new one. Publishers beyond it wait for a connection.
const apiConnsPerHost = 32

func newAPIClient(cfg Config) *apiClient {
	conns := min(cfg.allPublishers()+1, apiConnsPerHost)
	tr := &http.Transport{
		Proxy:               nil, // a loopback bench never goes through $HTTP_PROXY
		DialContext:         (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns, // the default (2) would close and redial most requests' connections
		MaxConnsPerHost:     apiConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		TLSClientConfig:     cfg.tls,
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	a := &apiClient{
		run:   "bench-" + hex.EncodeToString(id[:]),
		auth:  []string{"Bearer " + cfg.PublishKey},
		ctype: ctypeOne,
		hc:    &http.Client{Transport: tr, Timeout: 10 * time.Second},
		name:  "publish API",
		ok:    http.StatusAccepted,
	}
	if cfg.Protocol == ProtocolPusher {
		a.auth, a.ctype, a.name, a.ok = nil, ctypeJSON, "Pusher HTTP API", http.StatusOK
		a.pusher = &pusherSigner{key: cfg.PusherKey, secret: cfg.PusherSecret, path: pusherEventsPath(cfg.PusherAppID)}
		return a
	}
	switch cfg.Payload {
	case PayloadJSON:
		a.ctype = ctypeJSON
	case PayloadText:
		a.ctype = ctypeText
	}
	return a
}

// answer is what the publish API says in its JSON body.
type answer struct {
	Recipients *int   `json:"recipients"`
	Published  *int   `json:"published"` // batches only
	Error      string `json:"error"`
}

// post sends one request to url whose body carries n messages (an NDJSON
// batch when batch is set, else exactly one message), with key as its
// Idempotency-Key if set, and returns how many the server published: n
// on 202; on 503 (it cannot take them now) the batch's published count,
// or 0, and how long to wait before sending the rest again (Retry-After,
// 1 s when absent); any other answer is an error, with what the server
// published before it.
func (a *apiClient) post(ctx context.Context, url string, body []byte, n int, batch bool, key []byte) (published int, retry time.Duration, err error) {
	if a.pusher != nil {
		url += "?" + a.pusher.query(body, time.Now().Unix())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	if a.auth != nil {
		req.Header["Authorization"] = a.auth
	}
	req.Header["Content-Type"] = a.ctype
	if batch {
		req.Header["Content-Type"] = ctypeBatch
	}
	if key != nil {
		// Also what makes the request replayable to net/http: sent again
		// by itself on a fresh connection when a kept-alive one turns
		// out closed.
		req.Header["Idempotency-Key"] = []string{string(key)}
	}
	start := time.Now()
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %s: %w", a.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10)) // all of it: the connection is reused
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %s: reading the answer: %w", a.name, err)
	}
	a.latency.Record(time.Since(start))
	a.requests.Add(1)
	var ans answer
	_ = json.Unmarshal(b, &ans) // absent fields say what is wrong below
	if batch && ans.Published != nil {
		published = min(max(*ans.Published, 0), n)
	}
	switch resp.StatusCode {
	case a.ok:
		if batch && (ans.Published == nil || *ans.Published != n) {
			// A server that takes no batches would have published the
			// whole body as one message.
			return published, 0, fmt.Errorf("bench: publish API took a batch of %d as %s: does it take %s?", n, strings.TrimSpace(string(b)), ctypeBatch[0])
		}
		return n, 0, nil
	case http.StatusServiceUnavailable:
		a.refused.Add(1)
		retry = time.Second
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			retry = time.Duration(s) * time.Second
		}
		return published, retry, nil
	}
	msg := ans.Error
	if msg == "" {
		msg = strings.TrimSpace(string(b))
	}
	return published, 0, fmt.Errorf("bench: %s answered %d: %s", a.name, resp.StatusCode, msg)
}

func (a *apiClient) close() { a.hc.CloseIdleConnections() }
