package pusher

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sign is hex(HMAC-SHA256(secret, s)): every Pusher signature.
func sign(secret, s string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// channelAuth is what a private or presence subscription's auth must be:
// "KEY:" + sign(secret, "SOCKET:CHANNEL[:CHANNEL_DATA]").
func channelAuth(app *App, socketID, channel, channelData string) string {
	s := socketID + ":" + channel
	if channelData != "" {
		s += ":" + channelData
	}
	return app.Key + ":" + sign(app.Secret, s)
}

// checkChannelAuth compares a subscription's auth with what it must be,
// in constant time.
func checkChannelAuth(app *App, socketID, channel, channelData, auth string) bool {
	return hmac.Equal([]byte(auth), []byte(channelAuth(app, socketID, channel, channelData)))
}

// MaxClockSkew is how far a signed request's auth_timestamp may be from
// the server's clock.
const MaxClockSkew = 600 * time.Second

// requestError is a signed request's refusal: its status and reason.
type requestError struct {
	status int
	why    string
}

func (e *requestError) Error() string { return e.why }

// verifyRequest checks a signed HTTP API request to app: auth_key is the
// app's, auth_timestamp within MaxClockSkew of now, body_md5 the body's
// (when there is one), and auth_signature the HMAC of
// "METHOD\nPATH\nSORTED_QUERY". The query is split by hand: the SDKs
// send values unencoded, and a channel name may hold ';', which
// net/url's parser refuses.
func verifyRequest(app *App, method, path, rawQuery string, body []byte, now time.Time) (url.Values, error) {
	q := url.Values{}
	var keys []string
	for _, kv := range strings.Split(rawQuery, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		k = strings.ToLower(k)
		if _, dup := q[k]; !dup {
			keys = append(keys, k)
		}
		q[k] = append(q[k], v)
	}
	unauthorized := func(format string, a ...any) error {
		return &requestError{401, fmt.Sprintf(format, a...)}
	}
	switch {
	case q.Get("auth_key") == "":
		return nil, unauthorized("auth_key missing: sign the request (auth_key, auth_timestamp, auth_version, auth_signature)")
	case q.Get("auth_key") != app.Key:
		return nil, unauthorized("auth_key %.40q is not app %s's key", q.Get("auth_key"), app.ID)
	case q.Get("auth_signature") == "":
		return nil, unauthorized("auth_signature missing")
	}
	ts, err := strconv.ParseInt(q.Get("auth_timestamp"), 10, 64)
	if err != nil {
		return nil, unauthorized("auth_timestamp %.40q: want unix seconds", q.Get("auth_timestamp"))
	}
	if skew := now.Sub(time.Unix(ts, 0)); skew > MaxClockSkew || skew < -MaxClockSkew {
		return nil, unauthorized("auth_timestamp %d is %s from the server's clock (%d), over %s: check the clock", ts, skew.Round(time.Second), now.Unix(), MaxClockSkew)
	}
	if len(body) > 0 {
		sum := md5.Sum(body)
		if q.Get("body_md5") != hex.EncodeToString(sum[:]) {
			return nil, unauthorized("body_md5 is not the MD5 of the body")
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if k == "auth_signature" {
			continue
		}
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
		}
	}
	want := sign(app.Secret, method+"\n"+path+"\n"+b.String())
	if !hmac.Equal([]byte(q.Get("auth_signature")), []byte(want)) {
		return nil, unauthorized("invalid signature: expected HMAC SHA256 hex digest of %q (with the app's secret)", method+"\n"+path+"\n"+b.String())
	}
	return q, nil
}

var errSocketID = errors.New("socket_id: want digits.digits")

// validSocketID checks the form of a socket_id.
func validSocketID(s string) error {
	a, b, ok := strings.Cut(s, ".")
	if !ok || !digits(a) || !digits(b) {
		return errSocketID
	}
	return nil
}

func digits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
