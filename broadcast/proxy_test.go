package broadcast_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"
	"github.com/pires/go-proxyproto"

	"github.com/fanout/fanout/broadcast"
)

// The load balancer is 127.0.0.1 in these tests; 127.0.0.2 is a client
// that reaches the listener directly.
var trustLB = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// proxyHeader is a PROXY protocol header (go-proxyproto writes it) of
// version 1 or 2 for a client at src ("192.0.2.10:5555", "[2001:db8::7]:443").
func proxyHeader(t *testing.T, version byte, src string) []byte {
	t.Helper()
	s := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src))
	dst := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	if s.IP.To4() == nil {
		dst = &net.TCPAddr{IP: net.IPv6loopback, Port: 8080}
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, dst).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// localHeader is a v2 LOCAL header: a balancer's own connection (its
// health check), which names no client.
func localHeader(t *testing.T) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// viaProxy connects from the loopback address from to addr and writes
// pre (a PROXY header, or anything), as a balancer's first bytes.
func viaProxy(t *testing.T, from, addr string, pre []byte) net.Conn {
	t.Helper()
	nc := dialFrom(t, from, addr)
	if _, err := nc.Write(pre); err != nil {
		t.Fatal(err)
	}
	return nc
}

// gorillaOver upgrades with gorilla over nc, a connection whose first
// bytes are already sent, and returns the status (and the client on 101).
func gorillaOver(t *testing.T, nc net.Conn, url string) (int, *gorilla.Conn) {
	t.Helper()
	d := gorilla.Dialer{NetDialContext: func(context.Context, string, string) (net.Conn, error) { return nc, nil }}
	c, resp, err := d.Dial(url, nil)
	if resp == nil {
		t.Fatalf("upgrade through a PROXY header: no response: %v", err)
	}
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return resp.StatusCode, c
}

// logBuffer collects a server's log lines (debug included).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A trusted balancer's header, in each version and family, makes its
// address the client's: the per-address limit counts it (a second client
// at the same address gets 429, one at another is admitted through the
// same balancer), and the log names it with the balancer beside it.
func TestProxyHeaderNamesTheClient(t *testing.T) {
	for _, tc := range []struct {
		name           string
		version        byte
		client, second string
	}{
		{"v1 IPv4", 1, "192.0.2.10:5555", "192.0.2.11:5555"},
		{"v1 IPv6", 1, "[2001:db8::7]:443", "[2001:db8:0:1::7]:443"},
		{"v2 IPv4", 2, "192.0.2.10:5555", "192.0.2.11:5555"},
		{"v2 IPv6", 2, "[2001:db8::7]:443", "[2001:db8:0:1::7]:443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			s := startServer(t, broadcast.Config{ProxyProtocol: trustLB, MaxConnsPerIP: 1, Logger: logs.logger()})
			if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, tc.version, tc.client)), s.url); code != http.StatusSwitchingProtocols {
				t.Fatalf("first client: %d, want 101", code)
			}
			s.waitConns(t, 1)
			if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, tc.version, tc.client)), s.url); code != http.StatusTooManyRequests {
				t.Fatalf("the same client again: %d, want 429 (MaxConnsPerIP counts the header's address)", code)
			}
			if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, tc.version, tc.second)), s.url); code != http.StatusSwitchingProtocols {
				t.Fatalf("another client through the same balancer: %d, want 101", code)
			}
			want := "remote=" + tc.client + " proxy=127.0.0.1"
			if !strings.Contains(logs.String(), want) {
				t.Fatalf("logs do not name the client (%q):\n%s", want, logs.String())
			}
			if n := s.Stats().Rejects(broadcast.RejectPerIP); n != 1 {
				t.Fatalf("%d per-address refusals, want 1", n)
			}
		})
	}
}

// A v2 LOCAL header (the balancer's own health check) is accepted and
// counted under the balancer's address, which no client's header shares.
func TestProxyLocalKeepsTheBalancer(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB, MaxConnsPerIP: 1})
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, localHeader(t)), s.url); code != http.StatusSwitchingProtocols {
		t.Fatalf("LOCAL: %d, want 101", code)
	}
	s.waitConns(t, 1)
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, localHeader(t)), s.url); code != http.StatusTooManyRequests {
		t.Fatalf("a second LOCAL: %d, want 429 (both are the balancer's)", code)
	}
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, 2, "192.0.2.10:5555")), s.url); code != http.StatusSwitchingProtocols {
		t.Fatalf("a client through the balancer: %d, want 101", code)
	}
}

// A header and the request in one write: the request's bytes, read into
// the same buffer as the header, are all there, and the v2 signature's
// blank lines are not taken for the request's end (which would close the
// connection for data sent before its 101). The connection then carries
// a broadcast.
func TestProxyHeaderAndRequestInOneWrite(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB})
	for _, version := range []byte{1, 2} {
		pre := append(proxyHeader(t, version, "192.0.2.10:5555"), handshakeRequest(s.addr, "/ws")...)
		nc := viaProxy(t, "127.0.0.1", s.addr, pre)
		br := bufio.NewReader(nc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("v%d: %v %v, want 101", version, resp, err)
		}
		s.waitConns(t, 1)
		if _, err := s.Publish(broadcast.Message{Payload: []byte("through the balancer")}); err != nil {
			t.Fatal(err)
		}
		f, err := ws.ReadFrame(br)
		if err != nil || string(f.Payload) != "through the balancer" {
			t.Fatalf("v%d: frame %q %v", version, f.Payload, err)
		}
		nc.Close()
		s.waitConns(t, 0)
	}
	if n := s.Stats().Closed(broadcast.ReasonProtocolError); n != 0 {
		t.Fatalf("%d protocol-error closes, want 0 (early data?)", n)
	}
}

// A header split across writes is waited for under the handshake's
// deadline, then the request after it (v1: go-proxyproto alone refuses a
// v1 line not buffered in one piece). An SSE request is read the same way.
func TestProxyHeaderSplitAcrossWrites(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB, MaxConnsPerIP: 1})
	for i, version := range []byte{1, 2} {
		h := proxyHeader(t, version, "192.0.2.10:5555")
		nc := viaProxy(t, "127.0.0.1", s.addr, h[:9])
		waitFor(t, "the handshake started", func() bool { return s.Stats().Handshaking == 1 })
		if _, err := nc.Write(h[9:]); err != nil {
			t.Fatal(err)
		}
		code, c := gorillaOver(t, nc, s.url)
		if code != http.StatusSwitchingProtocols {
			t.Fatalf("v%d split: %d, want 101", version, code)
		}
		s.waitConns(t, 1)
		c.Close()
		s.waitConns(t, 0)
		if n := s.Stats().Accepted; n != uint64(i+1) {
			t.Fatalf("%d accepted, want %d", n, i+1)
		}
	}
	// SSE, split inside the header, the request in the second write.
	h := proxyHeader(t, 1, "192.0.2.10:5555")
	nc := viaProxy(t, "127.0.0.1", s.addr, h[:20])
	waitFor(t, "the handshake started", func() bool { return s.Stats().Handshaking == 1 })
	if _, err := io.WriteString(nc, string(h[20:])+"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("SSE through a split header: %v %v", resp, err)
	}
	s.waitConns(t, 1)
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, h), s.url); code != http.StatusTooManyRequests {
		t.Fatalf("a WebSocket from the SSE client's address: %d, want 429", code)
	}
}

// What the PROXY protocol refuses: a header from an address not trusted
// to send one (closed unanswered), none from a trusted one (400, saying
// why), a trusted one's garbage (closed unanswered). Each is counted
// under its reason, and every slot and descriptor is given back.
func TestProxyRefusals(t *testing.T) {
	var logs logBuffer
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB, Logger: logs.logger()})
	// Trusted, without a header: a plain HTTP client is told. (First:
	// the log lines checked below are rate-limited, 5 at once.)
	nc := dialFrom(t, "127.0.0.1", s.addr)
	if _, err := io.WriteString(nc, handshakeRequest(s.addr, "/ws")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	nc.Close() // the server drains what a refused client still sends until it hangs up
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "PROXY protocol header") {
		t.Fatalf("trusted without a header: %d %q, want 400 naming the PROXY header", resp.StatusCode, body)
	}
	waitFor(t, "proxy_missing counted", func() bool { return s.Stats().Rejects(broadcast.RejectProxyMissing) == 1 })
	for _, tc := range []struct {
		name, from string
		pre        []byte
		want       broadcast.RejectKind
	}{
		{"untrusted v1", "127.0.0.2", proxyHeader(t, 1, "192.0.2.10:5555"), broadcast.RejectProxyUntrusted},
		{"untrusted v2", "127.0.0.2", proxyHeader(t, 2, "192.0.2.10:5555"), broadcast.RejectProxyUntrusted},
		{"v1 garbage", "127.0.0.1", []byte("PROXY TCP4 not an address\r\n"), broadcast.RejectProxyMalformed},
		{"v2 bad command", "127.0.0.1", append(append([]byte{}, proxyproto.SIGV2...), 0x2f, 0x11, 0, 12), broadcast.RejectProxyMalformed},
		{"v1 no CRLF within 107 bytes", "127.0.0.1", []byte("PROXY TCP4 " + strings.Repeat("1", 120)), broadcast.RejectProxyMalformed},
	} {
		before := s.Stats().Rejects(tc.want)
		expectClosedUnread(t, viaProxy(t, tc.from, s.addr, tc.pre))
		waitFor(t, tc.name+" counted as "+tc.want.String(), func() bool { return s.Stats().Rejects(tc.want) == before+1 })
	}
	// A client reaching the listener directly is served as ever.
	if code := gorillaFrom(t, "127.0.0.2", s.url, nil); code != http.StatusSwitchingProtocols {
		t.Fatalf("a direct client: %d, want 101", code)
	}
	waitFor(t, "every handshake ended", func() bool { return s.Stats().Handshaking == 0 })
	for _, want := range []string{`reason=\"proxy_untrusted\"`, "remote=127.0.0.2", `reason=\"proxy_missing\"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}

// Without ProxyProtocol no one is trusted: a header is refused, not
// parsed as a request.
func TestProxyHeaderWithoutTrust(t *testing.T) {
	s := startServer(t, broadcast.Config{})
	expectClosedUnread(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, 2, "192.0.2.10:5555")))
	waitFor(t, "proxy_untrusted counted", func() bool { return s.Stats().Rejects(broadcast.RejectProxyUntrusted) == 1 })
}

// MaxHandshakesPerIP counts a balancer's connections under the source
// its header names, not under the balancer: a client whose handshake is
// in progress holds its source's slot, so its next one is closed unread,
// while another client through the same balancer upgrades. The slots
// come back when the handshakes end.
func TestProxyHandshakesPerSource(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB, MaxHandshakesPerIP: 1,
		HandshakeTimeout: time.Minute, HandshakeFirstByteTimeout: -1})
	a := proxyHeader(t, 2, "192.0.2.10:5555")
	// Two handshakes from one source, neither ever finished. Which of
	// them reads its header first (and holds the source's one slot) is
	// the server's race: the other is closed unread.
	pair := []net.Conn{
		viaProxy(t, "127.0.0.1", s.addr, append(a, "GET /ws HTTP/1.1\r\n"...)),
		viaProxy(t, "127.0.0.1", s.addr, a),
	}
	waitFor(t, "per-source refusal counted", func() bool { return s.Stats().Rejects(broadcast.RejectBusySource) == 1 })
	closed := make([]bool, 2)
	var wg sync.WaitGroup
	for i, nc := range pair {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second)) // the refused one's close is there by now
			n, err := nc.Read(make([]byte, 1))
			closed[i] = n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))
		}()
	}
	wg.Wait()
	if closed[0] == closed[1] {
		t.Fatalf("closed unread: %v; want exactly one of the two", closed)
	}
	stalled := pair[0]
	if closed[0] {
		stalled = pair[1]
	}
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, 2, "192.0.2.11:5555")), s.url); code != http.StatusSwitchingProtocols {
		t.Fatalf("another client through the balancer: %d, want 101", code)
	}
	stalled.Close()
	waitFor(t, "every handshake ended", func() bool { return s.Stats().Handshaking == 0 })
	if code, _ := gorillaOver(t, viaProxy(t, "127.0.0.1", s.addr, a), s.url); code != http.StatusSwitchingProtocols {
		t.Fatalf("the first client once its handshake ended: %d, want 101", code)
	}
}

// After a header, the first-byte timeout starts again: a balancer that
// connects for a client that then says nothing is closed as silent.
func TestProxyFirstByteAfterHeader(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB,
		HandshakeFirstByteTimeout: 200 * time.Millisecond, HandshakeTimeout: time.Minute})
	expectClosedUnread(t, viaProxy(t, "127.0.0.1", s.addr, proxyHeader(t, 1, "192.0.2.10:5555")))
	waitFor(t, "silent counted", func() bool { return s.Stats().Rejects(broadcast.RejectSilent) == 1 })
	if n := s.Stats().Rejects(broadcast.RejectTimeout); n != 0 {
		t.Fatalf("%d handshake timeouts, want 0", n)
	}
}

// A balancer that hangs up in the middle of a header (a restart, a reset)
// is not a malformed header: not counted nor logged as one.
func TestProxyHangUpIsNotMalformed(t *testing.T) {
	s := startServer(t, broadcast.Config{ProxyProtocol: trustLB})
	h := proxyHeader(t, 2, "192.0.2.10:5555")
	for _, cut := range []int{13, 15, 20} {
		nc := viaProxy(t, "127.0.0.1", s.addr, h[:cut])
		_ = nc.Close()
	}
	waitFor(t, "the three handshakes ended", func() bool {
		return s.Stats().Handshaking == 0 && s.Stats().Rejects(broadcast.RejectBadRequest)+s.Stats().Rejects(broadcast.RejectIO) == 3
	})
	if n := s.Stats().Rejects(broadcast.RejectProxyMalformed); n != 0 {
		t.Errorf("%d hang-ups counted as proxy_malformed", n)
	}
}
