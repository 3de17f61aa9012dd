package pusher

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fanout/fanout/broadcast/hub"
)

// maxAPIBody bounds a request body: a batch of MaxBatch events of
// MaxPayload each, and their envelopes.
func (f *Front) maxAPIBody() int64 {
	return int64(f.cfg.MaxBatch*(f.cfg.MaxPayload+2*MaxChannelName+MaxEventName+256)) + int64(f.cfg.MaxTriggerChannels*(MaxChannelName+3)) + 4096
}

// ServeHTTP is the Pusher HTTP API, under /apps/{id}/: events,
// batch_events, channels, channels/{name}, channels/{name}/users. Every
// request is signed with the app's secret (verifyRequest).
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/apps/")
	id, sub, _ := strings.Cut(rest, "/")
	endpoint := endpointOf(r.Method, sub)
	code, body := f.serve(r, ok, id, sub, endpoint)
	f.m.apiRequests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	if code != http.StatusOK {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, string(body)+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func endpointOf(method, sub string) string {
	switch {
	case method == http.MethodPost && sub == "events":
		return "events"
	case method == http.MethodPost && sub == "batch_events":
		return "batch_events"
	case method == http.MethodGet && sub == "channels":
		return "channels"
	case method == http.MethodGet && strings.HasPrefix(sub, "channels/") && strings.HasSuffix(sub, "/users"):
		return "users"
	case method == http.MethodGet && strings.HasPrefix(sub, "channels/"):
		return "channel"
	}
	return "other"
}

func (f *Front) serve(r *http.Request, ok bool, id, sub, endpoint string) (int, []byte) {
	app := f.apps.ByID(id)
	switch {
	case !ok || id == "":
		return http.StatusNotFound, []byte("not found: the Pusher API is at /apps/{app_id}/...")
	case app == nil:
		return http.StatusNotFound, []byte(fmt.Sprintf("unknown app id %.40q", id))
	case endpoint == "other":
		return http.StatusNotFound, []byte(fmt.Sprintf("%s /apps/%s/%s: not supported (events, batch_events, channels, channels/NAME, channels/NAME/users)", r.Method, id, sub))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, f.maxAPIBody()+1))
	if err != nil {
		return http.StatusBadRequest, []byte("reading the body: " + err.Error())
	}
	if int64(len(body)) > f.maxAPIBody() {
		return http.StatusRequestEntityTooLarge, []byte(fmt.Sprintf("body over %d bytes", f.maxAPIBody()))
	}
	q, err := verifyRequest(app, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body, time.Now())
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			return re.status, []byte(re.why)
		}
		return http.StatusUnauthorized, []byte(err.Error())
	}
	switch endpoint {
	case "events":
		var e apiEvent
		if err := json.Unmarshal(body, &e); err != nil {
			return http.StatusBadRequest, []byte("body: want JSON {\"name\",\"data\",\"channels\" or \"channel\"}: " + err.Error())
		}
		if e.Channel != "" {
			e.Channels = append(e.Channels, e.Channel)
		}
		if code, why := f.checkEvent(&e); code != 0 {
			return code, []byte(why)
		}
		if code, why := f.trigger(app, &e); code != 0 {
			return code, []byte(why)
		}
		if e.Info == "" {
			return http.StatusOK, []byte("{}")
		}
		out := map[string]map[string]int{}
		for _, ch := range e.Channels {
			out[ch] = f.info(app, ch, e.Info)
		}
		b, _ := json.Marshal(map[string]any{"channels": out})
		return http.StatusOK, b
	case "batch_events":
		var b struct {
			Batch []apiEvent `json:"batch"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return http.StatusBadRequest, []byte("body: want JSON {\"batch\":[{\"channel\",\"name\",\"data\"}...]}: " + err.Error())
		}
		if len(b.Batch) == 0 || len(b.Batch) > f.cfg.MaxBatch {
			return http.StatusBadRequest, []byte(fmt.Sprintf("batch of %d events: want 1 to %d", len(b.Batch), f.cfg.MaxBatch))
		}
		for i := range b.Batch {
			e := &b.Batch[i]
			if e.Channel != "" {
				e.Channels = []string{e.Channel}
			}
			if len(e.Channels) != 1 {
				return http.StatusBadRequest, []byte(fmt.Sprintf("batch event %d: want one \"channel\"", i+1))
			}
			if code, why := f.checkEvent(e); code != 0 {
				return code, []byte(fmt.Sprintf("batch event %d: %s", i+1, why))
			}
		}
		infos := make([]map[string]int, 0, len(b.Batch))
		anyInfo := false
		for i := range b.Batch {
			if code, why := f.trigger(app, &b.Batch[i]); code != 0 {
				return code, []byte(fmt.Sprintf("batch event %d (the ones before were published): %s", i+1, why))
			}
		}
		for i := range b.Batch {
			e := &b.Batch[i]
			if e.Info != "" {
				anyInfo = true
			}
			infos = append(infos, f.info(app, e.Channels[0], e.Info))
		}
		if !anyInfo {
			return http.StatusOK, []byte("{}")
		}
		out, _ := json.Marshal(map[string]any{"batch": infos})
		return http.StatusOK, out
	case "channels":
		return f.listChannels(app, q.Get("filter_by_prefix"), q.Get("info"))
	case "users":
		name := strings.TrimSuffix(strings.TrimPrefix(sub, "channels/"), "/users")
		if err := validChannel(name); err != nil {
			return http.StatusBadRequest, []byte(err.Error())
		}
		if !isPresence(name) {
			return http.StatusBadRequest, []byte("users are only for presence channels")
		}
		users := f.presenceUsers(app.Prefix + name)
		sort.Strings(users)
		list := make([]map[string]string, 0, len(users))
		for _, u := range users {
			list = append(list, map[string]string{"id": u})
		}
		b, _ := json.Marshal(map[string]any{"users": list})
		return http.StatusOK, b
	default: // channel
		name := strings.TrimPrefix(sub, "channels/")
		if err := validChannel(name); err != nil {
			return http.StatusBadRequest, []byte(err.Error())
		}
		info := q.Get("info")
		if strings.Contains(info, "user_count") && !isPresence(name) {
			return http.StatusBadRequest, []byte("info=user_count is only for presence channels")
		}
		n := f.node.Hub().Members(app.Prefix + name)
		out := map[string]any{"occupied": n > 0}
		for k, v := range f.info(app, name, info) {
			out[k] = v
		}
		b, _ := json.Marshal(out)
		return http.StatusOK, b
	}
}

// apiEvent is one event of POST events or batch_events.
type apiEvent struct {
	Name     string          `json:"name"`
	Data     json.RawMessage `json:"data"`
	Channels []string        `json:"channels"`
	Channel  string          `json:"channel"`
	SocketID string          `json:"socket_id"`
	Info     string          `json:"info"`

	data string // Data's string
}

// checkEvent validates an event before anything is published.
func (f *Front) checkEvent(e *apiEvent) (int, string) {
	if err := validName("name", e.Name, MaxEventName); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	switch {
	case len(e.Channels) == 0:
		return http.StatusBadRequest, "channels: missing"
	case len(e.Channels) > f.cfg.MaxTriggerChannels:
		return http.StatusBadRequest, fmt.Sprintf("channels: %d, over %d", len(e.Channels), f.cfg.MaxTriggerChannels)
	case e.SocketID != "" && validSocketID(e.SocketID) != nil:
		return http.StatusBadRequest, fmt.Sprintf("socket_id %.40q: want digits.digits", e.SocketID)
	}
	// data is a string (the SDKs JSON-encode anything else into one);
	// another JSON value is taken as its text.
	switch {
	case len(e.Data) == 0:
		e.data = ""
	case e.Data[0] == '"':
		if err := json.Unmarshal(e.Data, &e.data); err != nil {
			return http.StatusBadRequest, "data: " + err.Error()
		}
	default:
		e.data = string(e.Data)
	}
	if len(e.data) > f.cfg.MaxPayload {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("data: %d bytes, over the %d allowed (-pusher-max-payload)", len(e.data), f.cfg.MaxPayload)
	}
	for _, ch := range e.Channels {
		if err := validChannel(ch); err != nil {
			return http.StatusBadRequest, err.Error()
		}
		if isEncrypted(ch) && len(e.Channels) > 1 {
			return http.StatusBadRequest, "an event to an encrypted channel goes to that channel alone"
		}
	}
	return 0, ""
}

// trigger publishes e on each of its channels.
func (f *Front) trigger(app *App, e *apiEvent) (int, string) {
	meta := hub.Meta{Event: e.Name, Socket: e.SocketID}
	if e.SocketID != "" {
		meta.Exclude = f.Exclude(e.SocketID)
	}
	for i, ch := range e.Channels {
		if err := f.node.PublishEvent(app.Prefix+ch, hub.KindText, []byte(e.data), meta); err != nil {
			status := http.StatusServiceUnavailable
			if errors.Is(err, errTooBig) {
				status = http.StatusRequestEntityTooLarge
			}
			return status, fmt.Sprintf("channel %s (%d of %d; those before were published): %v", ch, i+1, len(e.Channels), err)
		}
		f.m.apiEvents.Inc()
	}
	return 0, ""
}

// errTooBig is what a Node's PublishEvent error wraps for a message over
// the server's own limits.
var errTooBig = errors.New("too big")

// ErrTooBig is errTooBig, for a Node to wrap.
var ErrTooBig = errTooBig

// info is what info= asks of a channel: subscription_count, user_count.
func (f *Front) info(app *App, name, info string) map[string]int {
	out := map[string]int{}
	for _, k := range strings.Split(info, ",") {
		switch k {
		case "subscription_count":
			out[k] = f.node.Hub().Members(app.Prefix + name)
		case "user_count":
			if isPresence(name) {
				out[k] = len(f.presenceUsers(app.Prefix + name))
			}
		}
	}
	return out
}

// listChannels is GET channels: the app's occupied channels here.
func (f *Front) listChannels(app *App, prefix, info string) (int, []byte) {
	if strings.Contains(info, "user_count") && !strings.HasPrefix(prefix, "presence-") {
		return http.StatusBadRequest, []byte("info=user_count needs filter_by_prefix=presence-")
	}
	out := map[string]map[string]int{}
	for channel := range f.node.Hub().Channels() {
		name, mine := app.owns(channel)
		if !mine || validChannel(name) != nil || !strings.HasPrefix(name, prefix) {
			continue
		}
		out[name] = f.info(app, name, info)
	}
	b, _ := json.Marshal(map[string]any{"channels": out})
	return http.StatusOK, b
}
