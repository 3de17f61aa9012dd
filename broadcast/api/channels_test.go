package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/api"
)

// request sends method url with the bearer key k and the body of type
// ctype, and decodes the JSON answer into out.
func request(t testing.TB, method, url, ctype string, hdr map[string]string, body []byte, out any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer k")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header
}

type receipt struct {
	Channel    string `json:"channel"`
	Seq        uint64 `json:"seq"`
	Epoch      string `json:"epoch"`
	Recipients int    `json:"recipients"`
	Error      string `json:"error"`
	Status     int    `json:"status"`
	Repeat     bool   `json:"repeat"`
}

// POST /publish?channel= reaches that channel's subscribers (a JSON body
// as JSON), says its seq and epoch, and an Idempotency-Key repeat answers
// the same receipt without publishing again.
func TestPublishToChannel(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k"}})
	c := dialGorilla(t, s.url+"?channel=scores&format=json")
	other := dialGorilla(t, s.url+"?channel=news")
	s.waitConns(t, 2)
	var welcome map[string]any
	_ = c.SetReadDeadline(timeout())
	if err := c.ReadJSON(&welcome); err != nil || welcome["type"] != "welcome" {
		t.Fatalf("welcome %v %v", welcome, err)
	}

	var r1, r2 receipt
	hdr := map[string]string{"Idempotency-Key": "goal-17"}
	code, h1 := request(t, "POST", admin+"/publish?channel=scores", "application/json", hdr, []byte(`{"home": 1}`), &r1)
	if code != http.StatusAccepted || r1.Channel != "scores" || r1.Seq == 0 || r1.Epoch != s.Epoch() || r1.Recipients != 1 || h1.Get("Idempotency-Replayed") != "" {
		t.Fatalf("publish: %d %+v", code, r1)
	}
	code, h2 := request(t, "POST", admin+"/publish?channel=scores", "application/json", hdr, []byte(`{"home": 1}`), &r2)
	if code != http.StatusAccepted || r2 != r1 || h2.Get("Idempotency-Replayed") != "true" {
		t.Fatalf("repeat: %d %+v (header %q), want the first receipt %+v", code, r2, h2.Get("Idempotency-Replayed"), r1)
	}
	var r3 receipt
	if code, _ := request(t, "POST", admin+"/publish?channel=news", "text/plain", nil, []byte("headline"), &r3); code != http.StatusAccepted || r3.Seq != r1.Seq+1 {
		t.Fatalf("news: %d %+v", code, r3)
	}
	var env map[string]any
	_ = c.SetReadDeadline(timeout())
	if err := c.ReadJSON(&env); err != nil || env["seq"] != float64(r1.Seq) || env["data"].(map[string]any)["home"] != float64(1) {
		t.Fatalf("scores subscriber got %v %v", env, err)
	}
	expectMessage(t, other, websocket.TextMessage, []byte("headline"))

	for _, tc := range []struct {
		query, ctype, body, want string
	}{
		{"?channel=bad%20name", "text/plain", "x", "invalid channel name"},
		{"?channel=scores", "application/json", "{nope", "not valid JSON"},
	} {
		var out receipt
		code, _ := request(t, "POST", admin+"/publish"+tc.query, tc.ctype, nil, []byte(tc.body), &out)
		if code != http.StatusBadRequest || !strings.Contains(out.Error, tc.want) {
			t.Errorf("%s %q: %d %+v, want 400 with %q", tc.query, tc.body, code, out, tc.want)
		}
	}
}

// POST /publish/batch publishes its items in order, each to its channel;
// an invalid item fails alone with its reason; idempotency keys per item.
func TestPublishBatchJSON(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k"}, Batch: api.BatchConfig{MaxItems: 5}})
	a := dialGorilla(t, s.url+"?channel=a")
	b := dialGorilla(t, s.url+"?channel=b")
	s.waitConns(t, 2)
	body := `[
		{"channel":"a","data":"one"},
		{"channel":"b","data":{"n":2}},
		{"channel":"bad name","data":1},
		{"channel":"a","data_base64":"AQID","idempotency_key":"x"},
		{"channel":"a","data_base64":"AQID","idempotency_key":"x"}
	]`
	var out struct {
		Results   []receipt `json:"results"`
		Published int       `json:"published"`
		Failed    int       `json:"failed"`
	}
	code, _ := request(t, "POST", admin+"/publish/batch", "application/json", nil, []byte(body), &out)
	if code != http.StatusOK || len(out.Results) != 5 || out.Published != 4 || out.Failed != 1 {
		t.Fatalf("batch: %d %+v", code, out)
	}
	r := out.Results
	if r[2].Error == "" || r[2].Status != http.StatusBadRequest || r[2].Seq != 0 {
		t.Errorf("invalid item: %+v, want its own 400 error", r[2])
	}
	if !(r[0].Seq < r[1].Seq && r[1].Seq < r[3].Seq) || r[4].Seq != r[3].Seq || !r[4].Repeat || r[3].Repeat {
		t.Errorf("results %+v: want seqs in order and item 5 a repeat of item 4", r)
	}
	expectMessage(t, a, websocket.TextMessage, []byte("one"))
	expectMessage(t, a, websocket.BinaryMessage, []byte{1, 2, 3})
	expectMessage(t, b, websocket.TextMessage, []byte(`{"n":2}`))
	if st := s.Stats(); st.Published != 3 {
		t.Errorf("published %d, want 3", st.Published)
	}

	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"channel":"a"}`, http.StatusBadRequest},
		{`[]`, http.StatusBadRequest},
		{`[` + strings.Repeat(`{"channel":"a","data":1},`, 5) + `{"channel":"a","data":1}]`, http.StatusRequestEntityTooLarge},
	} {
		var e map[string]any
		if code, _ := request(t, "POST", admin+"/publish/batch", "application/json", nil, []byte(tc.body), &e); code != tc.status || e["error"] == nil {
			t.Errorf("%s: %d %v, want %d", tc.body, code, e, tc.status)
		}
	}
}

// GET /channels lists channels with their subscribers and latest seq, and
// takes a publish key.
func TestListChannels(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k"}})
	dialGorilla(t, s.url+"?channel=a")
	dialGorilla(t, s.url+"?channel=a&channel=b")
	dialGorilla(t, s.url)
	s.waitConns(t, 3)
	r, err := s.Publish(broadcast.Message{Channel: "quiet", Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Epoch    string                  `json:"epoch"`
		Channels []broadcast.ChannelInfo `json:"channels"`
	}
	if code, _ := request(t, "GET", admin+"/channels", "", nil, nil, &out); code != http.StatusOK {
		t.Fatalf("GET /channels: %d", code)
	}
	want := []broadcast.ChannelInfo{{Name: "", Subscribers: 1}, {Name: "a", Subscribers: 2}, {Name: "b", Subscribers: 1}, {Name: "quiet", Seq: r.Seq}}
	if out.Epoch != s.Epoch() || len(out.Channels) != len(want) {
		t.Fatalf("got %+v, want %+v", out, want)
	}
	for i := range want {
		if out.Channels[i] != want[i] {
			t.Errorf("channel %d: %+v, want %+v", i, out.Channels[i], want[i])
		}
	}
	var some struct {
		Channels  []broadcast.ChannelInfo `json:"channels"`
		Truncated bool                    `json:"truncated"`
	}
	if code, _ := request(t, "GET", admin+"/channels?prefix=a&limit=1", "", nil, nil, &some); code != http.StatusOK ||
		len(some.Channels) != 1 || some.Channels[0].Name != "a" || some.Truncated {
		t.Fatalf("prefix a, limit 1: %d %+v", code, some)
	}
	if code, _ := request(t, "GET", admin+"/channels?limit=2", "", nil, nil, &some); code != http.StatusOK || len(some.Channels) != 2 || !some.Truncated {
		t.Fatalf("limit 2 of 4: %d %+v", code, some)
	}
	resp, err := http.Get(admin + "/channels")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a key: %d, want 401", resp.StatusCode)
	}
}

func timeout() time.Time { return time.Now().Add(10 * time.Second) }

// An NDJSON batch takes no Idempotency-Key (it names one message); a
// batch item refused for now stops the batch there (a retry from it keeps
// the order); a batch over MaxItems is refused while it is read.
func TestPublishBatchRules(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	_, admin := startAdmin(t, api.Config{Server: s, PublishKeys: []string{"k"}, Batch: api.BatchConfig{MaxItems: 3}})
	var e map[string]any
	if code, _ := request(t, "POST", admin+"/publish", "application/x-ndjson", map[string]string{"Idempotency-Key": "x"}, []byte("a\nb\n"), &e); code != http.StatusBadRequest {
		t.Fatalf("NDJSON with Idempotency-Key: %d %v, want 400", code, e)
	}
	many := "[" + strings.Repeat(`{},`, 1000) + "{}]"
	if code, _ := request(t, "POST", admin+"/publish/batch", "application/json", nil, []byte(many), &e); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("1001 items over MaxItems 3: %d %v, want 413", code, e)
	}

	cp := &countingPublisher{ok: 1, err: broadcast.ErrBacklog}
	h := httptest.NewServer(api.BatchHandler(cp, []string{"k"}, api.BatchConfig{}))
	defer h.Close()
	var out struct {
		Results   []receipt `json:"results"`
		Published int       `json:"published"`
		Failed    int       `json:"failed"`
	}
	body := `[{"channel":"a","data":1},{"channel":"a","data":2},{"channel":"a","data":3}]`
	if code, _ := request(t, "POST", h.URL, "application/json", nil, []byte(body), &out); code != http.StatusOK {
		t.Fatalf("batch: %d", code)
	}
	if out.Published != 1 || out.Failed != 2 || out.Results[1].Status != 503 || out.Results[2].Status != 503 ||
		!strings.HasPrefix(out.Results[2].Error, "not tried") || len(cp.got) != 1 {
		t.Fatalf("after a 503: %+v (publisher saw %d): want the rest not tried", out, len(cp.got))
	}
}
