package broadcast_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/admit"
)

// dialFrom opens a TCP connection to addr from the loopback address ip
// (127.0.0.0/8 is all local on Linux).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// gorillaFrom upgrades with gorilla from the loopback address ip and
// returns the status it got.
func gorillaFrom(t *testing.T, ip, url string, h http.Header) int {
	t.Helper()
	d := gorilla.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return nd.Dial(network, addr)
	}}
	c, resp, err := d.Dial(url, h)
	if resp == nil {
		t.Fatalf("dial from %s: no response: %v", ip, err)
	}
	if c != nil {
		c.Close()
	}
	return resp.StatusCode
}

// expectClosedUnread checks the server closed nc without a byte: a clean
// EOF, or a reset if it closed before reading what the client sent. A
// read timeout (the 10 s safety net) means it was not closed.
func expectClosedUnread(t *testing.T, nc net.Conn) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := nc.Read(make([]byte, 1))
	if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("read %d bytes, %v; want the connection closed unread", n, err)
	}
}

// One source cannot hold every handshake slot: past MaxHandshakesPerIP
// in progress from 127.0.0.1, its next connection is closed unread and
// counted, while another address still gets a slot (MaxHandshakes is not
// reached) and upgrades. When the source's handshakes end, it may
// connect again.
func TestHandshakesPerSource(t *testing.T) {
	s := startServer(t, broadcast.Config{MaxHandshakes: 3, MaxHandshakesPerIP: 2,
		HandshakeTimeout: time.Minute, HandshakeFirstByteTimeout: -1})
	mutes := []net.Conn{dialFrom(t, "127.0.0.1", s.addr), dialFrom(t, "127.0.0.1", s.addr)}
	waitFor(t, "two handshakes in progress", func() bool { return s.Stats().Handshaking == 2 })
	expectClosedUnread(t, dialFrom(t, "127.0.0.1", s.addr))
	waitFor(t, "per-source refusal counted", func() bool { return s.Stats().Rejects(broadcast.RejectBusySource) == 1 })
	if code := gorillaFrom(t, "127.0.0.2", s.url, nil); code != http.StatusSwitchingProtocols {
		t.Fatalf("another source while 127.0.0.1 holds its share: %d, want 101", code)
	}
	for _, m := range mutes {
		m.Close()
	}
	waitFor(t, "the mute handshakes ended", func() bool { return s.Stats().Handshaking == 0 })
	if code := gorillaFrom(t, "127.0.0.1", s.url, nil); code != http.StatusSwitchingProtocols {
		t.Fatalf("127.0.0.1 after its handshakes ended: %d, want 101", code)
	}
	if n := s.Stats().Rejects(broadcast.RejectBusy); n != 0 {
		t.Fatalf("%d server-wide refusals, want none: the per-source cap came first", n)
	}
}

// A connection that says nothing is closed after the first-byte timeout
// and counted apart from slow requests; one that has started its request
// is not held to it, and upgrades.
func TestHandshakeFirstByteTimeout(t *testing.T) {
	s := startServer(t, broadcast.Config{HandshakeFirstByteTimeout: 300 * time.Millisecond, HandshakeTimeout: time.Minute})
	talker := dialFrom(t, "127.0.0.1", s.addr)
	req := handshakeRequest(s.addr, "/ws")
	if _, err := io.WriteString(talker, req[:10]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the talker's handshake started", func() bool { return s.Stats().Handshaking == 1 })
	// Accepted after the talker: when the mute one is closed, the talker's
	// first-byte deadline has passed too.
	mute := dialFrom(t, "127.0.0.1", s.addr)
	expectClosedUnread(t, mute)
	waitFor(t, "silent connection counted", func() bool { return s.Stats().Rejects(broadcast.RejectSilent) == 1 })
	if _, err := io.WriteString(talker, req[10:]); err != nil {
		t.Fatal(err)
	}
	_ = talker.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 12)
	if _, err := io.ReadFull(talker, buf); err != nil || string(buf) != "HTTP/1.1 101" {
		t.Fatalf("talker: %q %v, want a 101", buf, err)
	}
	if n := s.Stats().Rejects(broadcast.RejectTimeout); n != 0 {
		t.Fatalf("%d handshake timeouts, want 0", n)
	}
}

// The default Origin policy admits pages served from loopback, whatever
// the port, over http or https, and nothing else that a browser sends.
func TestOriginLoopbackDefault(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	for origin, want := range map[string]int{
		"http://localhost:5173":         http.StatusSwitchingProtocols,
		"https://LOCALHOST":             http.StatusSwitchingProtocols,
		"http://127.9.9.9":              http.StatusSwitchingProtocols, // all of 127.0.0.0/8
		"http://[::1]:8080":             http.StatusSwitchingProtocols,
		"http://localhost.evil.example": http.StatusForbidden,
		"http://127.0.0.1.evil.example": http.StatusForbidden,
		"ftp://127.0.0.1":               http.StatusForbidden, // not a web page's scheme
		"http://10.0.0.1":               http.StatusForbidden,
		"http://[::2]":                  http.StatusForbidden,
	} {
		if got := gorillaFrom(t, "127.0.0.1", s.url, http.Header{"Origin": {origin}}); got != want {
			t.Errorf("Origin %q: %d, want %d", origin, got, want)
		}
	}
	waitFor(t, "origin refusals counted", func() bool { return s.Stats().Rejects(broadcast.RejectOrigin) == 5 })
}

// PublicHost names the host browsers reach the server by: its pages are
// admitted on top of the loopback default, or of an -origins list. A
// full origin is matched with its scheme and port; a host name on any.
func TestOriginPublicHost(t *testing.T) {
	for _, tc := range []struct {
		cfg  broadcast.Config
		want map[string]int
	}{
		{broadcast.Config{PublicHost: "fanout.example.com"}, map[string]int{
			"https://fanout.example.com":      http.StatusSwitchingProtocols,
			"http://fanout.example.com:8080":  http.StatusSwitchingProtocols,
			"https://app.fanout.example.com":  http.StatusForbidden,
			"https://other.example.com":       http.StatusForbidden,
			"http://localhost:3000":           http.StatusSwitchingProtocols, // the default stays
			"https://fanout.example.com.evil": http.StatusForbidden,
		}},
		{broadcast.Config{PublicHost: "https://fanout.example.com"}, map[string]int{
			"https://fanout.example.com":      http.StatusSwitchingProtocols,
			"https://fanout.example.com:443":  http.StatusSwitchingProtocols, // the default port, spelt out
			"http://fanout.example.com":       http.StatusForbidden,          // scheme differs
			"https://fanout.example.com:8443": http.StatusForbidden,          // port differs
		}},
		{broadcast.Config{PublicHost: "https://fanout.example.com:8443", Origins: []string{"https://app.example.com"}}, map[string]int{
			"https://fanout.example.com:8443": http.StatusSwitchingProtocols,
			"https://fanout.example.com":      http.StatusForbidden,
			"https://app.example.com":         http.StatusSwitchingProtocols,
			"http://localhost:3000":           http.StatusForbidden, // a list replaces the loopback default
		}},
	} {
		s := startServer(t, tc.cfg)
		for origin, want := range tc.want {
			if got := gorillaFrom(t, "127.0.0.1", s.url, http.Header{"Origin": {origin}}); got != want {
				t.Errorf("PublicHost %q, Origins %q, Origin %q: %d, want %d", tc.cfg.PublicHost, tc.cfg.Origins, origin, got, want)
			}
		}
	}
}

func signed(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A token must say when it ends: one without exp would be good forever,
// long after whoever issued it has revoked the user.
func TestClientAuthNeedsExpiry(t *testing.T) {
	s := startServer(t, broadcast.Config{Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"))})
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   int
	}{
		{"no exp", jwt.MapClaims{"sub": "u1"}, http.StatusUnauthorized},
		{"exp", jwt.MapClaims{"sub": "u1", "exp": exp}, http.StatusSwitchingProtocols},
		{"any aud and iss without -auth-audience, -auth-issuer", jwt.MapClaims{"exp": exp, "aud": "x", "iss": "y"}, http.StatusSwitchingProtocols},
	} {
		if got := gorillaFrom(t, "127.0.0.1", s.url+"?token="+signed(t, "s3cret", tc.claims), nil); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	waitFor(t, "refusal counted", func() bool { return s.Stats().Rejects(broadcast.RejectUnauthorized) == 1 })
}

// With an audience and an issuer configured, a token must name both.
func TestClientAuthAudienceIssuer(t *testing.T) {
	s := startServer(t, broadcast.Config{Authenticate: broadcast.JWTAuthenticator([]byte("s3cret"),
		admit.JWTAudience("fanout"), admit.JWTIssuer("https://auth.example"))})
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		want   int
	}{
		{"valid", jwt.MapClaims{"exp": exp, "aud": "fanout", "iss": "https://auth.example"}, http.StatusSwitchingProtocols},
		{"one of its audiences", jwt.MapClaims{"exp": exp, "aud": []string{"api", "fanout"}, "iss": "https://auth.example"}, http.StatusSwitchingProtocols},
		{"wrong aud", jwt.MapClaims{"exp": exp, "aud": "api", "iss": "https://auth.example"}, http.StatusUnauthorized},
		{"no aud", jwt.MapClaims{"exp": exp, "iss": "https://auth.example"}, http.StatusUnauthorized},
		{"wrong iss", jwt.MapClaims{"exp": exp, "aud": "fanout", "iss": "https://evil.example"}, http.StatusUnauthorized},
		{"no iss", jwt.MapClaims{"exp": exp, "aud": "fanout"}, http.StatusUnauthorized},
		{"no exp", jwt.MapClaims{"aud": "fanout", "iss": "https://auth.example"}, http.StatusUnauthorized},
	} {
		if got := gorillaFrom(t, "127.0.0.1", s.url+"?token="+signed(t, "s3cret", tc.claims), nil); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	waitFor(t, "refusals counted", func() bool { return s.Stats().Rejects(broadcast.RejectUnauthorized) == 5 })
}
