package broadcast_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanout/fanout/broadcast"
)

// The demo page is one answer from memory: GET (with or without a query)
// and HEAD get it with a strict Content-Security-Policy, other methods
// 405, other paths are what they were. Each answer is counted and holds
// no connection: with one handshake slot per source, each request finds
// it free again once the one before it was answered, and so does a
// WebSocket after them.
func TestDemoPage(t *testing.T) {
	s := startServer(t, broadcast.Config{Demo: true, MaxHandshakesPerIP: 1})
	slotFree := func() {
		t.Helper()
		waitFor(t, "no handshake in progress", func() bool { return s.Stats().Handshaking == 0 })
	}
	var length string
	for _, target := range []string{"/", "/?channel=room", "/?"} {
		slotFree()
		resp, err := http.Get("http://" + s.addr + target)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		h := resp.Header
		if resp.StatusCode != http.StatusOK || h.Get("Content-Type") != "text/html; charset=utf-8" ||
			h.Get("Cache-Control") != "no-cache" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: %d %v", target, resp.StatusCode, h)
		}
		if !strings.Contains(string(body), `<body data-ws-path="/ws">`) {
			t.Fatalf("GET %s: the page does not name the WebSocket path: %.200s", target, body)
		}
		checkCSP(t, h.Get("Content-Security-Policy"), string(body))
		length = h.Get("Content-Length")
	}

	// HEAD: the same head, no body.
	slotFree()
	head := rawExchange(t, s.addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(head, "\r\n\r\n") ||
		!strings.Contains(head, "\r\nContent-Length: "+length+"\r\n") {
		t.Fatalf("HEAD /: %q (GET's Content-Length is %s)", head, length)
	}

	// Other methods: 405 naming both, even with a body still coming.
	slotFree()
	post := rawExchange(t, s.addr, "POST /?channel=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if !strings.HasPrefix(post, "HTTP/1.1 405 Method Not Allowed\r\n") || !strings.Contains(post, "\r\nAllow: GET, HEAD\r\n") ||
		!strings.HasSuffix(post, "a demo page at / (GET); publishing is on the admin listener (POST /publish)\n") {
		t.Fatalf("POST /: %q", post)
	}
	slotFree()
	if resp, err := http.Get("http://" + s.addr + "/index.html"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /index.html: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	waitFor(t, "4 pages, a 405 and a 404 counted", func() bool {
		st := s.Stats()
		return st.Rejects(broadcast.RejectDemoPage) == 4 && st.Rejects(broadcast.RejectBadRequest) == 1 &&
			st.Rejects(broadcast.RejectNotFound) == 1 && st.Handshaking == 0
	})
	if st := s.Stats(); st.Accepted != 0 || st.Conns != 0 {
		t.Fatalf("the page made connections: accepted %d, conns %d", st.Accepted, st.Conns)
	}
	c := dialGorilla(t, s.url) // the one handshake slot is free
	c.Close()
}

// checkCSP checks that csp allows the page's one script and one style by
// their hashes, connections to its own origin, and nothing else.
func checkCSP(t *testing.T, csp, page string) {
	t.Helper()
	for _, tag := range []string{"script", "style"} {
		_, rest, _ := strings.Cut(page, "<"+tag+">")
		content, _, ok := strings.Cut(rest, "</"+tag+">")
		sum := sha256.Sum256([]byte(content))
		if !ok || !strings.Contains(csp, tag+"-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"';") {
			t.Fatalf("CSP %q does not allow the page's <%s> by its hash", csp, tag)
		}
	}
	for _, want := range []string{"default-src 'none';", "connect-src 'self';", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Fatalf("CSP %q lacks %q", csp, want)
		}
	}
	for _, loose := range []string{"unsafe", "*", "http:", "https:", "ws:", "wss:"} {
		if strings.Contains(csp, loose) {
			t.Fatalf("CSP %q allows %q", csp, loose)
		}
	}
}

// rawExchange sends req on a new connection and reads until the server
// closes it.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%q: %v after %q", req, err, b)
	}
	return string(b)
}

// The page names the WebSocket path it connects to, escaped; a server
// whose WebSocket or SSE path is / cannot have it.
func TestDemoPageConfig(t *testing.T) {
	s := startServer(t, broadcast.Config{Demo: true, Path: `/w"s<`, NoSSE: true})
	resp, err := http.Get("http://" + s.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `<body data-ws-path="/w&#34;s&lt;">`) {
		t.Fatalf("the path is not escaped in the page: %.300s", body)
	}
	for _, cfg := range []broadcast.Config{{Demo: true, Path: "/"}, {Demo: true, SSEPath: "/"}} {
		if srv, err := broadcast.New(cfg); err == nil || !strings.Contains(err.Error(), "Demo") {
			if srv != nil {
				srv.Close()
			}
			t.Errorf("New(%+v): %v, want an error naming Demo", cfg, err)
		}
	}
	srv, err := broadcast.New(broadcast.Config{Demo: true, SSEPath: "/", NoSSE: true, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("SSE off, its path / is free: %v", err)
	}
	srv.Close()
}

// A request for / that sends a body still gets the whole page: the server
// closes only once it read what the client sent (or its handshake time
// ran out), so the close is not a reset that drops the page's tail from
// the kernel's queue.
func TestDemoPageWithABody(t *testing.T) {
	s := startServer(t, broadcast.Config{Demo: true, HandshakeTimeout: time.Second})
	// A small receive window, set before the connect: most of the page
	// waits in the server's send queue.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
	}}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 50000)); err != nil {
		t.Fatal(err)
	}
	// Read only once the server is done with the connection: its answer
	// counted, just before its close.
	waitFor(t, "the page answered", func() bool { return s.Stats().Rejects(broadcast.RejectDemoPage) == 1 })
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || int64(len(got)) != resp.ContentLength {
		t.Fatalf("status %d, %d of %d bytes, %v", resp.StatusCode, len(got), resp.ContentLength, err)
	}
}
