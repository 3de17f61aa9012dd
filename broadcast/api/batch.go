package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/hub"
)

// BatchConfig bounds POST /publish/batch. The zero value works.
type BatchConfig struct {
	// MaxItems caps the messages of one batch; more gets 413. Zero means
	// 1000.
	MaxItems int
	// MaxBytes caps a batch's body; more gets 413. Zero means 4 MiB.
	MaxBytes int
}

func (c BatchConfig) withDefaults() BatchConfig {
	if c.MaxItems <= 0 {
		c.MaxItems = 1000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 4 << 20
	}
	return c
}

// BatchHandler serves POST /publish/batch: the body is a JSON array of
// messages, each {"channel": NAME, "data": VALUE} (or "data_base64":
// "..." for binary; "idempotency_key" as the header of POST /publish),
// published in this order, one Publish each. A JSON string as data is
// published as text (raw-format clients get the text), any other value as
// JSON. An item that is invalid fails alone; one p refuses for now (503:
// backlog, shutdown, bus) stops the batch there, the items after it "not
// tried" (503 too), so that a retry from it keeps the order. The answer,
// 200 {"results": [...], "published": k, "failed": f}, has one result per
// item, its receipt ({"channel","seq","epoch","recipients"}, plus
// "repeat": true for an idempotent repeat) or {"channel", "error",
// "status"} with the reason and the HTTP status it would have had alone.
// A body that is not such an array is refused whole (400), as one over
// cfg's bounds (413, found while reading: no more than MaxItems items are
// ever decoded). Keys as PublishHandler.
func BatchHandler(p Publisher, keys []string, cfg BatchConfig) http.Handler {
	return &batchHandler{p: p, keys: append([]string(nil), keys...), cfg: cfg.withDefaults()}
}

type batchHandler struct {
	p    Publisher
	keys []string
	cfg  BatchConfig
}

type batchItem struct {
	Channel        string          `json:"channel"`
	Data           json.RawMessage `json:"data"`
	DataBase64     *string         `json:"data_base64"`
	IdempotencyKey string          `json:"idempotency_key"`
}

type batchResult struct {
	Channel    string `json:"channel"`
	Seq        uint64 `json:"seq,omitempty"`
	Epoch      string `json:"epoch,omitempty"`
	Recipients *int   `json:"recipients,omitempty"`
	Repeat     bool   `json:"repeat,omitempty"`
	Error      string `json:"error,omitempty"`
	Status     int    `json:"status,omitempty"`
}

func (h *batchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !postAuthorized(w, r, h.keys) {
		return
	}
	items, status, err := h.decode(w, r)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	out := struct {
		Results   []batchResult `json:"results"`
		Published int           `json:"published"`
		Failed    int           `json:"failed"`
	}{Results: make([]batchResult, len(items))}
	var refused error // a refusal that may pass later: the items after it are not tried
	for i, it := range items {
		res := &out.Results[i]
		res.Channel = it.Channel
		if refused != nil {
			res.Error, res.Status = "not tried: an earlier item was refused ("+refused.Error()+"); send again from it", http.StatusServiceUnavailable
			out.Failed++
			continue
		}
		m, err := it.message()
		var rc broadcast.Receipt
		if err == nil {
			rc, err = h.p.Publish(m)
		}
		if err != nil {
			res.Error, res.Status = err.Error(), refusalStatus(err)
			if res.Status == http.StatusServiceUnavailable {
				refused = err // what follows would overtake it
			}
			out.Failed++
			continue
		}
		out.Published++
		res.Seq, res.Epoch, res.Recipients, res.Repeat = rc.Seq, rc.Epoch, &rc.Recipients, rc.Repeat
	}
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(out)
}

// decode reads the body's array item by item, and stops at MaxItems + 1:
// a huge batch of tiny items is refused before it is all in memory.
func (h *batchHandler) decode(w http.ResponseWriter, r *http.Request) ([]batchItem, int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxBytes)))
	bad := func(err error) ([]batchItem, int, error) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("batch over %d bytes", h.cfg.MaxBytes)
		}
		return nil, http.StatusBadRequest, fmt.Errorf(`batch: want a JSON array of {"channel":..,"data":..}: %w`, err)
	}
	if tok, err := dec.Token(); err != nil {
		return bad(err)
	} else if d, ok := tok.(json.Delim); !ok || d != '[' {
		return bad(fmt.Errorf("the body starts with %v", tok))
	}
	var items []batchItem
	for dec.More() {
		if len(items) == h.cfg.MaxItems {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("batch of more than %d messages", h.cfg.MaxItems)
		}
		var it batchItem
		if err := dec.Decode(&it); err != nil {
			return bad(err)
		}
		items = append(items, it)
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return bad(err)
	}
	if len(items) == 0 {
		return nil, http.StatusBadRequest, errors.New("empty batch")
	}
	return items, 0, nil
}

// errItem: neither data nor data_base64, or both.
var errItem = errors.New(`item needs "data" or "data_base64", not both`)

// message is the item as a broadcast.Message, or what is wrong with it.
func (it *batchItem) message() (broadcast.Message, error) {
	m := broadcast.Message{Channel: it.Channel, IdempotencyKey: it.IdempotencyKey}
	switch {
	case (it.Data == nil) == (it.DataBase64 == nil):
		return m, errItem
	case it.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*it.DataBase64)
		if err != nil {
			return m, fmt.Errorf("data_base64: %w", err)
		}
		m.Kind, m.Payload = broadcast.KindBinary, b
		return m, nil
	}
	kind, b, err := hub.FromJSON(it.Data)
	if err != nil {
		return m, fmt.Errorf("%w: %w", broadcast.ErrInvalidJSON, err)
	}
	m.Kind, m.Payload = kind, b
	return m, nil
}

// ChannelLister is what GET /channels needs: *broadcast.Server is one.
type ChannelLister interface {
	Channels() []broadcast.ChannelInfo
	Epoch() string
}

// ChannelsHandler serves GET /channels[?prefix=P][&limit=N]: {"epoch": E,
// "channels": [{"name", "subscribers", "seq"}...], "truncated": bool},
// the channels with subscribers or history on this node whose name starts
// with P, by name ("" is the default channel), at most N of them (default
// 1000, at most 10000; "truncated" says more matched). Channel names can
// be personal (one per user): it takes a publish key, as POST /publish
// does.
func ChannelsHandler(l ChannelLister, keys []string) http.Handler {
	keys = append([]string(nil), keys...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !authorized(w, r, keys) {
			return
		}
		q := r.URL.Query()
		limit := 1000
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 10000 {
				writeError(w, http.StatusBadRequest, "limit: want 1 to 10000")
				return
			}
			limit = n
		}
		prefix := q.Get("prefix")
		all := l.Channels()
		out := all[:0:0]
		for _, c := range all {
			if strings.HasPrefix(c.Name, prefix) {
				out = append(out, c)
			}
		}
		truncated := len(out) > limit
		if truncated {
			out = out[:limit]
		}
		w.Header()["Content-Type"] = jsonType
		_ = json.NewEncoder(w).Encode(struct {
			Epoch     string                  `json:"epoch"`
			Channels  []broadcast.ChannelInfo `json:"channels"`
			Truncated bool                    `json:"truncated"`
		}{l.Epoch(), out, truncated})
	})
}
