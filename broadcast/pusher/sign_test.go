package pusher

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The worked examples of Pusher's documentation: the signatures its own
// libraries produce, recomputed here.
var docApp = &App{ID: "3", Key: "278d425bdf160c739803", Secret: "7ad3773142a6692b25b8"}

func TestChannelAuthDocExample(t *testing.T) {
	const want = "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
	if got := channelAuth(docApp, "1234.1234", "private-foobar", ""); got != want {
		t.Fatalf("channelAuth = %s, want %s", got, want)
	}
	if !checkChannelAuth(docApp, "1234.1234", "private-foobar", "", want) {
		t.Error("the documented auth is refused")
	}
	for _, bad := range []string{want[:len(want)-1] + "5", "278d425bdf160c739803:" + strings.Repeat("0", 64), ""} {
		if checkChannelAuth(docApp, "1234.1234", "private-foobar", "", bad) {
			t.Errorf("auth %q accepted", bad)
		}
	}
	if checkChannelAuth(docApp, "1234.1235", "private-foobar", "", want) {
		t.Error("an auth for another socket accepted")
	}
	// Presence signs channel_data too, as sent.
	data := `{"user_id":10,"user_info":{"name":"Mr. Channels"}}`
	if a := channelAuth(docApp, "1234.1234", "presence-foobar", data); checkChannelAuth(docApp, "1234.1234", "presence-foobar", `{"user_id":11}`, a) {
		t.Error("an auth for other channel_data accepted")
	}
}

func TestVerifyRequestDocExample(t *testing.T) {
	body := []byte(`{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}`)
	const sig = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
	query := "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=" + sig
	at := time.Unix(1353088179, 0)
	if _, err := verifyRequest(docApp, "POST", "/apps/3/events", query, body, at); err != nil {
		t.Fatalf("the documented request is refused: %v", err)
	}
	for _, tc := range []struct {
		name, query string
		body        []byte
		now         time.Time
		why         string
	}{
		{"tampered body", query, append([]byte(nil), append(body[:len(body)-1], ' ', '}')...), at, "body_md5"},
		{"stale", query, body, at.Add(601 * time.Second), "from the server's clock"},
		{"early", query, body, at.Add(-601 * time.Second), "from the server's clock"},
		{"other key", strings.Replace(query, "auth_key=278d", "auth_key=378d", 1), body, at, "not app 3's key"},
		{"bad signature", strings.Replace(query, sig, strings.Repeat("a", 64), 1), body, at, "invalid signature"},
		{"unsigned", "", body, at, "auth_key missing"},
		{"extra parameter", query + "&info=user_count", body, at, "invalid signature"},
	} {
		_, err := verifyRequest(docApp, "POST", "/apps/3/events", tc.query, tc.body, tc.now)
		var re *requestError
		if !errors.As(err, &re) || re.status != http.StatusUnauthorized || !strings.Contains(re.why, tc.why) {
			t.Errorf("%s: %v, want 401 saying %q", tc.name, err, tc.why)
		}
	}
	// Within the 600 s allowed, and another path signed: refused.
	if _, err := verifyRequest(docApp, "POST", "/apps/3/events", query, body, at.Add(599*time.Second)); err != nil {
		t.Errorf("599 s late: %v", err)
	}
	if _, err := verifyRequest(docApp, "POST", "/apps/3/batch_events", query, body, at); err == nil {
		t.Error("a signature for another path accepted")
	}
}

// The SDKs send query values unencoded, and a channel name may hold ';'
// (which net/url refuses): the signature is over the values as sent.
func TestVerifyRequestSemicolon(t *testing.T) {
	app := &App{ID: "1", Key: "k", Secret: "s"}
	q := "auth_key=k&auth_timestamp=100&auth_version=1.0&filter_by_prefix=presence-a;b&info=user_count"
	sig := sign("s", "GET\n/apps/1/channels\n"+q)
	got, err := verifyRequest(app, "GET", "/apps/1/channels", q+"&auth_signature="+sig, nil, time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Get("filter_by_prefix"); p != "presence-a;b" {
		t.Errorf("filter_by_prefix = %q", p)
	}
}

func TestValidChannel(t *testing.T) {
	for _, ok := range []string{"a", "private-a", "presence-a_b-c=d@e,f.g;h", strings.Repeat("x", MaxChannelName)} {
		if err := validChannel(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a:b", "a/b", "#server-to-user-1", "é", strings.Repeat("x", MaxChannelName+1)} {
		if validChannel(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNewApps(t *testing.T) {
	good := []App{{ID: "1", Key: "k1", Secret: "s"}, {ID: "2", Key: "k2", Secret: "s", Prefix: "two:"}}
	as, err := NewApps(good)
	if err != nil {
		t.Fatal(err)
	}
	if as.ByKey("k2").ID != "2" || as.ByID("1").Key != "k1" || as.ByKey("nope") != nil {
		t.Error("lookups")
	}
	if n := as.PusherName("two:private-x"); n != "private-x" {
		t.Errorf("PusherName = %q", n)
	}
	if _, mine := as.ByID("1").owns("two:private-x"); mine {
		t.Error("app 1 owns app 2's channel")
	}
	for _, tc := range []struct {
		apps []App
		why  string
	}{
		{[]App{{ID: "1", Key: "k"}}, "required"},
		{[]App{{ID: "1", Key: "k", Secret: "s"}, {ID: "2", Key: "k", Secret: "s", Prefix: "b:"}}, "another app's"},
		{[]App{{ID: "1", Key: "k", Secret: "s"}, {ID: "2", Key: "k2", Secret: "s"}}, "more than one app without"},
		{[]App{{ID: "1", Key: "k", Secret: "s", Prefix: "nocolon"}}, "channel_prefix"},
		{[]App{{ID: "1", Key: "k", Secret: "s", Prefix: "a:"}, {ID: "2", Key: "k2", Secret: "s", Prefix: "a:"}}, "same channel_prefix"},
		{nil, "no apps"},
	} {
		if _, err := NewApps(tc.apps); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%v: %v, want %q", tc.apps, err, tc.why)
		}
	}
}
