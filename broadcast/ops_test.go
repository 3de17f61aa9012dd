package broadcast_test

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
)

func token(t *testing.T, secret string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u1", "exp": exp.Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestClientAuthJWT(t *testing.T) {
	s := startServer(t, broadcast.Config{Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"))})
	good := token(t, "s3cret", time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name   string
		query  string
		header string
		status int
	}{
		{"no token", "", "", http.StatusUnauthorized},
		{"expired", "?token=" + token(t, "s3cret", time.Now().Add(-time.Hour)), "", http.StatusUnauthorized},
		{"wrong secret", "?token=" + token(t, "other", time.Now().Add(time.Hour)), "", http.StatusUnauthorized},
		{"garbage", "?token=abc.def.ghi", "", http.StatusUnauthorized},
		{"query token", "?token=" + good, "", http.StatusSwitchingProtocols},
		{"bearer header", "", "Bearer " + good, http.StatusSwitchingProtocols},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Authorization", tc.header)
		}
		c, resp, err := gorilla.DefaultDialer.Dial(s.url+tc.query, h)
		if resp == nil {
			t.Fatalf("%s: no response: %v", tc.name, err)
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.status)
		}
		if c != nil {
			c.Close()
		}
	}
	waitFor(t, "rejections counted", func() bool { return s.Stats().Rejects(broadcast.RejectUnauthorized) == 4 })
}

func TestOrigins(t *testing.T) {
	dial := func(url, origin string) int {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := gorilla.DefaultDialer.Dial(url, h)
		if resp == nil {
			t.Fatalf("no response: %v", err)
		}
		if c != nil {
			c.Close()
		}
		return resp.StatusCode
	}
	def := startServer(t, broadcast.Config{})
	for origin, want := range map[string]int{
		"":                            http.StatusSwitchingProtocols, // not a browser
		"http://" + def.addr:          http.StatusSwitchingProtocols, // loopback (and the same host)
		"https://evil.example.com":    http.StatusForbidden,
		"http://127.0.0.1:1":          http.StatusSwitchingProtocols, // loopback, any port
		"null":                        http.StatusForbidden,
		"http://" + def.addr + "/xyz": http.StatusSwitchingProtocols,
	} {
		if got := dial(def.url, origin); got != want {
			t.Errorf("default policy, Origin %q: %d, want %d", origin, got, want)
		}
	}
	// DNS rebinding: a page on evil.example whose name now resolves to
	// this server sends Host and Origin that agree. Agreeing is no proof.
	rebound := handshakeRequest("evil.example", "/ws", "Origin: http://evil.example")
	if resp := rawRequest(t, def.addr, rebound); resp.StatusCode != http.StatusForbidden {
		t.Errorf("default policy, Host and Origin evil.example: %d, want 403", resp.StatusCode)
	}
	list := startServer(t, broadcast.Config{Origins: []string{"https://app.example.com", "*.example.org", "partner.net"}})
	for origin, want := range map[string]int{
		"https://app.example.com":  http.StatusSwitchingProtocols,
		"http://app.example.com":   http.StatusForbidden, // scheme is part of an origin
		"https://a.b.example.org":  http.StatusSwitchingProtocols,
		"https://example.org":      http.StatusForbidden, // the wildcard is for subdomains
		"http://partner.net:8443":  http.StatusSwitchingProtocols,
		"https://notpartner.net":   http.StatusForbidden,
		"http://" + list.addr:      http.StatusForbidden, // an explicit list replaces same-host
		"https://evil.example.com": http.StatusForbidden,
	} {
		if got := dial(list.url, origin); got != want {
			t.Errorf("allow-list, Origin %q: %d, want %d", origin, got, want)
		}
	}
	waitFor(t, "origin rejections counted", func() bool { return list.Stats().Rejects(broadcast.RejectOrigin) == 5 })
}

func TestMaxConnsPerIP(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxConnsPerIP: 2})
	dialFrom := func(ip string) (*gorilla.Conn, int) {
		d := gorilla.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			return nd.Dial(network, addr)
		}}
		c, resp, err := d.Dial(s.url, nil)
		if resp == nil {
			t.Fatalf("no response: %v", err)
		}
		return c, resp.StatusCode
	}
	a, _ := dialFrom("127.0.0.1")
	b, _ := dialFrom("127.0.0.1")
	if _, code := dialFrom("127.0.0.1"); code != http.StatusTooManyRequests {
		t.Fatalf("third connection from one address: %d, want 429", code)
	}
	c, code := dialFrom("127.0.0.2")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("another address: %d", code)
	}
	defer c.Close()
	defer b.Close()
	s.waitConns(t, 3)
	a.Close()
	s.waitConns(t, 2)
	d, code := dialFrom("127.0.0.1")
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("after one left: %d", code)
	}
	d.Close()
	waitFor(t, "per-IP rejection counted", func() bool { return s.Stats().Rejects(broadcast.RejectPerIP) == 1 })
}

func TestClientRateLimit(t *testing.T) {
	s := startServer(t, broadcast.Config{ClientRate: 5, ClientBurst: 5})
	healthy := dialGorilla(t, s.url)
	flood := dialRaw(t, s.addr)
	s.waitConns(t, 2)
	for i := 0; i < 20; i++ {
		flood.send(t, masked(0x81, []byte("spam")))
	}
	flood.expectClose(t, ws.StatusPolicyViolation)
	waitFor(t, "rate-limit close counted", func() bool { return s.Stats().Closed(broadcast.ReasonRateLimit) == 1 })
	// The burst went out, the rest did not; the healthy client is fine.
	if st := s.Stats(); st.Published < 5 || st.Published > 6 {
		t.Fatalf("published %d of the flood, want the burst of 5", st.Published)
	}
	for i := uint64(0); i < s.Stats().Published; i++ {
		expectMessage(t, healthy, gorilla.TextMessage, []byte("spam"))
	}
	if _, err := s.Publish(broadcast.Message{Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, healthy, gorilla.TextMessage, []byte("after"))
}
