package broadcast

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The demo page (Config.Demo): GET / on the WebSocket listener answers
// demo.html, a chat room on one channel over the json format that
// resumes with since=. It is read like an SSE request, on the handshake's
// goroutine, under its deadline and size bound and in its slot, and
// answered from memory; nothing is detached and no connection is made:
// the socket is closed once the answer is written, and the answer counted
// (RejectDemoPage).

//go:embed demo.html
var demoHTML string

var (
	errDemoAnswered = errors.New("broadcast: demo page answered")
	errDemoMethod   = errors.New("broadcast: demo page: method not allowed")
)

// demoPage is the page's answers, whole (status line, headers, body),
// built once by New and written as they are to every client that asks.
type demoPage struct {
	get, head []byte // clipped (cap == len): shared, never appended to in place
}

// newDemoPage builds the answers for a server whose WebSocket path is
// wsPath (the page connects to it).
func newDemoPage(wsPath string) (*demoPage, error) {
	csp, err := demoCSP()
	if err != nil {
		return nil, err
	}
	body := strings.Replace(demoHTML, "{{WS_PATH}}", html.EscapeString(wsPath), 1)
	head := "HTTP/1.1 200 OK\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		// Revalidated each time (there is no validator: fetched again),
		// so an upgraded server's page is the one a browser shows.
		"Cache-Control: no-cache\r\n" +
		"Content-Security-Policy: " + csp + "\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"Referrer-Policy: no-referrer\r\n" +
		"Connection: close\r\n\r\n"
	return &demoPage{get: slices.Clip([]byte(head + body)), head: slices.Clip([]byte(head))}, nil
}

// demoCSP is the page's Content-Security-Policy: nothing but its own
// inline script and style (by their SHA-256, so no other inline code
// runs), a data: icon (so the browser asks for no /favicon.ico, which
// would be a counted 404), and connections to its own origin, which in
// CSP 3 includes ws: and wss: to the same host and port ('self' matches
// them): the WebSocket path, nothing else anywhere.
var demoCSP = sync.OnceValues(func() (string, error) {
	script, err := inlineHash(demoHTML, "script")
	if err != nil {
		return "", err
	}
	style, err := inlineHash(demoHTML, "style")
	if err != nil {
		return "", err
	}
	return "default-src 'none'; script-src " + script + "; style-src " + style +
		"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", nil
})

// inlineHash is the CSP source of the one <tag>...</tag> of page.
func inlineHash(page, tag string) (string, error) {
	_, rest, ok := strings.Cut(page, "<"+tag+">")
	content, after, ok2 := strings.Cut(rest, "</"+tag+">")
	if !ok || !ok2 || strings.Contains(after, "<"+tag) {
		return "", fmt.Errorf("broadcast: demo page: want exactly one <%s> without attributes", tag)
	}
	sum := sha256.Sum256([]byte(content))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'", nil
}

// maxMethod is the longest request method isDemo looks for.
const maxMethod = 20

// isDemo peeks at the request line: a method, then the target / alone or
// with a query. Byte by byte, as isSSE, and no further than the start of
// any valid request line: a short request is not held waiting for bytes
// it will never send.
func isDemo(br *bufio.Reader) bool {
	for i := 1; i <= maxMethod+1; i++ {
		b, _ := br.Peek(i)
		if len(b) < i {
			return false
		}
		switch c := b[i-1]; {
		case c == ' ' && i > 1:
			t, _ := br.Peek(i + 2)
			return len(t) == i+2 && t[i] == '/' && (t[i+1] == ' ' || t[i+1] == '?')
		case c < 'A' || c > 'Z':
			return false
		}
	}
	return false
}

// runDemo reads a request for / and leaves its answer in hc.resp: the
// page to GET and HEAD; 503 once shutting down. Another method gets
// errDemoMethod, answered by refuse (its body may still be coming).
func (u *upgrade) runDemo(br *bufio.Reader, hc *handshakeConn) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	u.sawRequest = true
	u.refused = true
	switch {
	case req.Method != http.MethodGet && req.Method != http.MethodHead:
		u.refusal = RejectBadRequest
		return errDemoMethod
	case u.srv.closing.Load():
		u.refusal = RejectShutdown
		body := answers[RejectShutdown].reason
		_, _ = fmt.Fprintf(hc, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"Content-Length: %d\r\nConnection: close\r\n\r\n", len(body))
		if req.Method != http.MethodHead { // a HEAD answer has no body
			_, _ = io.WriteString(hc, body)
		}
		return errDemoAnswered
	}
	u.refusal = RejectDemoPage
	// The page itself, not a copy: handshake writes hc.resp and nothing
	// appends to it after this.
	hc.resp = u.srv.demo.get
	if req.Method == http.MethodHead {
		hc.resp = u.srv.demo.head
	}
	return errDemoAnswered
}
