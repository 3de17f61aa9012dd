package servertest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast/pusher"
)

// A Pusher protocol client written against the protocol, for the front
// door's tests (the npm clients are driven by cmd/fanout's TestNodePusher).

// PusherEvent is one event a Pusher client received.
type PusherEvent struct {
	Event   string          `json:"event"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	UserID  string          `json:"user_id"`
}

// Str is the event's data as the string Pusher sends it in.
func (e PusherEvent) Str(t testing.TB) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(e.Data, &s); err != nil {
		t.Fatalf("%s: data %s is not a string", e.Event, e.Data)
	}
	return s
}

func (e PusherEvent) String() string {
	return fmt.Sprintf("{%s channel=%q data=%s user_id=%q}", e.Event, e.Channel, e.Data, e.UserID)
}

// PusherClient is a connection at /app/{key}.
type PusherClient struct {
	C        *websocket.Conn
	SocketID string
}

// DialPusher connects to addr's /app/key and reads its
// connection_established.
func DialPusher(t testing.TB, addr, key string) *PusherClient {
	t.Helper()
	c := DialGorilla(t, "ws://"+addr+"/app/"+key+"?protocol=7&client=test&version=1")
	p := &PusherClient{C: c}
	e := p.Next(t)
	if e.Event != "pusher:connection_established" {
		t.Fatalf("first event %s", e)
	}
	var d struct {
		SocketID        string `json:"socket_id"`
		ActivityTimeout int    `json:"activity_timeout"`
	}
	if err := json.Unmarshal([]byte(e.Str(t)), &d); err != nil || d.ActivityTimeout <= 0 || !strings.Contains(d.SocketID, ".") {
		t.Fatalf("connection_established data %s", e.Data)
	}
	p.SocketID = d.SocketID
	return p
}

// Next reads one event.
func (p *PusherClient) Next(t testing.TB) PusherEvent {
	t.Helper()
	_ = p.C.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := p.C.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e PusherEvent
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an event: %s", b)
	}
	return e
}

// Send sends an event.
func (p *PusherClient) Send(t testing.TB, event, channel string, data any) {
	t.Helper()
	m := map[string]any{"event": event, "data": data}
	if channel != "" {
		m["channel"] = channel
	}
	if err := p.C.WriteJSON(m); err != nil {
		t.Fatal(err)
	}
}

// Subscribe subscribes, signed with app's secret when the channel needs
// it, and returns the answer.
func (p *PusherClient) Subscribe(t testing.TB, app pusher.App, channel, channelData string) PusherEvent {
	t.Helper()
	d := map[string]string{"channel": channel, "auth": ""}
	if strings.HasPrefix(channel, "private-") || strings.HasPrefix(channel, "presence-") {
		s := p.SocketID + ":" + channel
		if channelData != "" {
			s += ":" + channelData
			d["channel_data"] = channelData
		}
		d["auth"] = app.Key + ":" + hexHMAC(app.Secret, s)
	}
	p.Send(t, "pusher:subscribe", "", d)
	return p.Next(t)
}

func hexHMAC(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// PusherAPI calls h, a front door's HTTP API, signed with app's secret as
// the Pusher SDKs sign; path is after /apps/{id}, with its query.
func PusherAPI(t testing.TB, h http.Handler, app pusher.App, method, path string, body any) (int, string) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	params := map[string]string{"auth_key": app.Key, "auth_timestamp": strconv.FormatInt(time.Now().Unix(), 10), "auth_version": "1.0"}
	path, rawQ, _ := strings.Cut(path, "?")
	for _, kv := range strings.Split(rawQ, "&") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			params[k] = v
		}
	}
	if len(b) > 0 {
		sum := md5.Sum(b)
		params["body_md5"] = hex.EncodeToString(sum[:])
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var q []string
	for _, k := range keys {
		q = append(q, k+"="+params[k])
	}
	full := "/apps/" + app.ID + path
	qs := strings.Join(q, "&")
	qs += "&auth_signature=" + hexHMAC(app.Secret, method+"\n"+full+"\n"+qs)
	req := httptest.NewRequest(method, full+"?"+qs, strings.NewReader(string(b)))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, strings.TrimSpace(w.Body.String())
}
