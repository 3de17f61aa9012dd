package broadcast_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/fanout/fanout/broadcast"
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
