package pusher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/fanout/fanout/broadcast/internal/lograte"
)

// WebhookConfig configures the webhook senders (one per app that has a
// webhook URL).
type WebhookConfig struct {
	// Queue bounds the events waiting to be sent, per app; what does
	// not fit is dropped, counted and logged. Zero means 10,000.
	Queue int
	// Batch is how long events gather before a POST (Pusher's batched
	// webhooks). Zero means 50ms.
	Batch time.Duration
	// MaxBatch bounds the events of one POST. Zero means 100.
	MaxBatch int
	// RetryFor is how long a failing POST is retried, with exponential
	// backoff, before its events are dropped (counted and logged). Zero
	// means 5 minutes, as Pusher does.
	RetryFor time.Duration
	// Timeout bounds one POST. Zero means 10s.
	Timeout time.Duration
	// Client sends them; nil: a client of its own.
	Client *http.Client
}

// webhookEvent is one event of a webhook's body.
type webhookEvent struct {
	Name     string `json:"name"`
	Channel  string `json:"channel"`
	Event    string `json:"event,omitempty"`
	Data     string `json:"data,omitempty"`
	SocketID string `json:"socket_id,omitempty"`
	UserID   string `json:"user_id,omitempty"`
}

// webhooks sends one app's webhooks, in the order they happened, from one
// goroutine: batched, signed (X-Pusher-Key, X-Pusher-Signature),
// retried with backoff.
type webhooks struct {
	app    *App
	url    string
	cfg    WebhookConfig
	client *http.Client
	log    *slog.Logger
	m      *metrics
	logs   *lograte.Limiter

	mu     sync.Mutex
	queue  []webhookEvent // guarded by mu
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed bool      // guarded by mu
	until  time.Time // the close's deadline; read once stop is closed
	// ctx ends at the close's deadline: a POST in flight then gives up.
	ctx    context.Context
	cancel context.CancelFunc
}

func newWebhooks(app *App, cfg WebhookConfig, log *slog.Logger, m *metrics) (*webhooks, error) {
	u, err := url.Parse(app.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("pusher: app %q: webhook URL %.100q: want http://HOST/... or https://HOST/...", app.ID, app.WebhookURL)
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 10000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 50 * time.Millisecond
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 5 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: cfg.Timeout}
	}
	w := &webhooks{app: app, url: app.WebhookURL, cfg: cfg, client: client, log: log, m: m, logs: lograte.New(1, 5),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w, nil
}

// add queues ev; never blocks.
func (w *webhooks) add(ev webhookEvent) {
	w.mu.Lock()
	if w.closed || len(w.queue) >= w.cfg.Queue {
		closed := w.closed
		w.mu.Unlock()
		reason := "queue_full"
		if closed {
			reason = "shutdown"
		}
		w.m.webhookDropped.WithLabelValues(reason).Inc()
		w.logs.Warn(w.log, "pusher: webhook event dropped", "app", w.app.ID, "event", ev.Name, "channel", ev.Channel, "reason", reason, "queue", w.cfg.Queue)
		return
	}
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	w.m.webhookQueued.Inc()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *webhooks) run() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			w.flush(true)
			return
		}
		// Let the batch gather.
		select {
		case <-time.After(w.cfg.Batch):
		case <-w.stop:
			w.flush(true)
			return
		}
		w.flush(false)
	}
}

// flush sends what is queued, a batch at a time. final: shutting down,
// until the close's deadline.
func (w *webhooks) flush(final bool) {
	for {
		w.mu.Lock()
		n := min(len(w.queue), w.cfg.MaxBatch)
		batch := append([]webhookEvent(nil), w.queue[:n]...)
		w.mu.Unlock()
		if n == 0 {
			return
		}
		sent := w.send(batch, final)
		w.mu.Lock()
		w.queue = w.queue[n:]
		w.mu.Unlock()
		w.m.webhookQueued.Sub(float64(n))
		if !sent {
			reason := "gave_up"
			if w.isClosed() {
				reason = "shutdown"
			}
			w.m.webhookDropped.WithLabelValues(reason).Add(float64(n))
			w.log.Warn("pusher: webhook events dropped: the endpoint did not take them", "app", w.app.ID, "events", n, "reason", reason, "retried_for", w.cfg.RetryFor)
		}
	}
}

// send POSTs one batch, retrying with backoff for RetryFor; once the
// front door closes, only until the close's deadline.
func (w *webhooks) send(batch []webhookEvent, final bool) bool {
	body, _ := json.Marshal(struct {
		TimeMs int64          `json:"time_ms"`
		Events []webhookEvent `json:"events"`
	}{time.Now().UnixMilli(), batch})
	sig := sign(w.app.Secret, string(body))
	giveUp := time.Now().Add(w.cfg.RetryFor)
	backoff := 100 * time.Millisecond
	for {
		stop := w.stop
		if final {
			giveUp, stop = w.until, nil // stop is closed: wait out the backoff
			if time.Now().After(giveUp) {
				return false
			}
		}
		err := w.post(body, sig)
		if err == nil {
			w.m.webhookPosts.WithLabelValues("ok").Inc()
			w.m.webhookEvents.Add(float64(len(batch)))
			return true
		}
		w.m.webhookPosts.WithLabelValues("failed").Inc()
		w.logs.Warn(w.log, "pusher: webhook POST failed; retrying", "app", w.app.ID, "err", err, "backoff", backoff)
		if time.Now().Add(backoff).After(giveUp) {
			return false
		}
		select {
		case <-time.After(backoff):
		case <-stop:
			final = true
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (w *webhooks) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

func (w *webhooks) post(body []byte, sig string) error {
	ctx, cancel := context.WithTimeout(w.ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	// Exactly application/json: the Pusher SDKs' webhook check compares
	// the whole header.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pusher-Key", w.app.Key)
	req.Header.Set("X-Pusher-Signature", sig)
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// close sends what is queued until deadline, then stops.
func (w *webhooks) close(deadline time.Time) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed, w.until = true, deadline
	w.mu.Unlock()
	t := time.AfterFunc(time.Until(deadline), w.cancel)
	close(w.stop)
	<-w.done
	t.Stop()
	w.cancel()
}
