package broadcast

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/sseconn"
)

// Server-Sent Events on the WebSocket listener:
//
//	GET /sse?channel=a[&channel=b...][&token=JWT][&last_event_id=E:S]
//
// answers 200 text/event-stream and streams the json format's objects as
// events (id: EPOCH:SEQ, data: {...}), a welcome first. Last-Event-ID
// (what EventSource sends when it reconnects) resumes as since= does.
//
// EventSource gives up for good on any answer but 200: where a WebSocket
// upgrade gets 503 or 429 (limits, draining), an SSE request gets 200 with
// "retry:" and the stream ends, so the browser comes back later. What a
// retry cannot fix stays an error: 400 (bad parameters), 401 (token), 403
// (Origin, channel grant), 404, 405.

// sseBufs are the readers an SSE-or-WebSocket request line is peeked with.
var sseBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// isSSE peeks at the request line: GET (or a CORS preflight's OPTIONS)
// path, then a space or a query. It peeks no further than that line's
// start needs: a short request is not held waiting for bytes it will
// never send.
func isSSE(br *bufio.Reader, path string) bool {
	first, _ := br.Peek(1)
	if len(first) == 0 {
		return false
	}
	want := "GET " + path
	if first[0] == 'O' {
		want = "OPTIONS " + path
	}
	b, _ := br.Peek(len(want) + 1)
	return len(b) == len(want)+1 && string(b[:len(want)]) == want && (b[len(want)] == ' ' || b[len(want)] == '?')
}

// errSSERefused: an SSE request answered with something else than a
// stream (its answer is in the handshake's response).
var errSSERefused = errors.New("broadcast: sse request refused")

// runSSE reads an SSE request, admits it and writes the 200's head into
// hc.resp (or a refusal, with errSSERefused), then detaches the socket.
func (u *upgrade) runSSE(br *bufio.Reader, hc *handshakeConn) (fd int, err error) {
	u.sse = true
	req, err := http.ReadRequest(br)
	if err != nil {
		return -1, err
	}
	u.sawRequest = true
	u.req.Origin = req.Header.Get("Origin")
	q := req.URL.Query()
	if u.srv.admit.Authenticates() {
		if u.req.Token = q.Get("token"); u.req.Token == "" {
			u.req.Token = admit.Bearer(req.Header.Get("Authorization"))
		}
	}
	switch {
	case req.Method == http.MethodOptions:
		return -1, u.ssePreflight(hc)
	case req.Method != http.MethodGet:
		return -1, u.sseRefuse(hc, RejectBadRequest, http.StatusMethodNotAllowed, "use GET")
	case u.srv.closing.Load():
		return -1, u.sseRefuse(hc, RejectShutdown, http.StatusOK, "server shutting down")
	}
	if u.sub, err = parseSubscription(q, u.srv.cfg.MaxChannelsPerConn); err != nil {
		return -1, u.sseRefuse(hc, RejectParams, http.StatusBadRequest, err.Error())
	}
	if u.sub.format == "raw" {
		return -1, u.sseRefuse(hc, RejectParams, http.StatusBadRequest, "SSE streams the json format: leave out format=raw")
	}
	u.sub.format = "json"
	if id := lastEventID(req, q); id != "" {
		c, err := ParseCursor(id)
		if err != nil {
			return -1, u.sseRefuse(hc, RejectParams, http.StatusBadRequest, "Last-Event-ID: "+err.Error())
		}
		u.sub.resume, u.sub.since = true, c
	}
	u.req.Channels = u.sub.channels
	t, authErr, refusal := u.srv.admit.Admit(&u.req)
	if refusal != nil {
		if authErr != nil && errors.Is(refusal, admit.ErrUnauthorized) {
			u.srv.logRefused.Warn(u.srv.log, "sse: unauthorized", "remote", u.req.IP.String(), "err", authErr)
		}
		kind := admitRefusals[refusal]
		if errors.Is(refusal, admit.ErrChannelDenied) {
			return -1, u.sseRefuse(hc, RejectChannelDenied, http.StatusForbidden, authErr.Error())
		}
		return -1, u.sseRefuse(hc, kind, sseStatus(kind), answers[kind].reason)
	}
	u.ticket = t // released by the handshake if what follows refuses
	if _, err := u.sub.resolve(u.req.Channels, u.srv.cfg.MaxChannelsPerConn); err != nil {
		return -1, u.sseRefuse(hc, RejectParams, http.StatusBadRequest, err.Error())
	}
	if err := u.srv.signedOnly(u.sub.channels); err != nil {
		return -1, u.sseRefuse(hc, RejectChannelDenied, http.StatusForbidden, err.Error())
	}
	_, _ = io.WriteString(hc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"+
		"Connection: close\r\nX-Accel-Buffering: no\r\n"+u.cors()+"\r\n")
	return detach(hc.Conn)
}

// lastEventID is the cursor an SSE client resumes from: the Last-Event-ID
// header, else the last_event_id parameter (for clients that cannot set
// headers on their first request), else since=.
func lastEventID(req *http.Request, q map[string][]string) string {
	if id := req.Header.Get("Last-Event-ID"); id != "" {
		return id
	}
	if v := q["last_event_id"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// sseStatus is what an SSE request gets for an admission refusal: a
// stream with retry: (200) for what passes with time, the upgrade's
// answer otherwise.
func sseStatus(kind RejectKind) int {
	switch st := answers[kind].status; st {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return http.StatusOK
	default:
		return st
	}
}

// sseRefuse writes the answer of a refused SSE request into hc.resp and
// counts it as kind: 200 with a "retry:" and the reason as a comment, or
// status with the reason as a plain-text body.
func (u *upgrade) sseRefuse(hc *handshakeConn, kind RejectKind, status int, reason string) error {
	u.refused, u.refusal = true, kind
	cors := u.cors()
	if kind == RejectOrigin {
		cors = ""
	}
	if status == http.StatusOK {
		body := ": " + reason + "\nretry: " + strconv.FormatInt(u.srv.cfg.SSERetry.Milliseconds(), 10) + "\n\n"
		_, _ = fmt.Fprintf(hc, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"+
			"Content-Length: %d\r\nConnection: close\r\n%s\r\n%s", len(body), cors, body)
		return errSSERefused
	}
	_, _ = fmt.Fprintf(hc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"+
		"Connection: close\r\n%s\r\n%s", status, http.StatusText(status), len(reason), cors, reason)
	return errSSERefused
}

// ssePreflight answers a CORS preflight (a page's fetch with an
// Authorization header): the same Origin policy as the stream itself.
func (u *upgrade) ssePreflight(hc *handshakeConn) error {
	if u.req.Origin == "" || u.cors() == "" {
		return u.sseRefuse(hc, RejectOrigin, http.StatusForbidden, "origin not allowed")
	}
	u.refused, u.refusal = true, RejectPreflight
	_, _ = io.WriteString(hc, "HTTP/1.1 204 No Content\r\n"+u.cors()+
		"Access-Control-Allow-Methods: GET\r\nAccess-Control-Allow-Headers: Authorization, Last-Event-ID, Cache-Control\r\n"+
		"Access-Control-Max-Age: 600\r\nConnection: close\r\n\r\n")
	return errSSERefused
}

// cors is the CORS header lines for the request's Origin when the Origin
// policy allows it: a page on another origin may read the stream.
func (u *upgrade) cors() string {
	if u.req.Origin == "" || !u.srv.admit.OriginAllowed(u.req.Origin) {
		return ""
	}
	return "Access-Control-Allow-Origin: " + u.req.Origin + "\r\nVary: Origin\r\n"
}

// attachSSE makes a detached, answered socket an SSE connection on the
// channels u asked for; resp (the 200's head) goes out first.
func (s *Server) attachSSE(fd int, u *upgrade, resp []byte) {
	c := sseconn.New(s.sse, s.nextID.Add(1), fd)
	c.Ticket = u.ticket
	if u.remote != u.peer {
		c.SetRemote(u.remote)
	}
	s.accepted.Add(1)
	u.logAccepted(c.ID())
	if err := c.Start(resp, u.sub.hubSubscription()); err != nil {
		return // torn down and counted
	}
	if s.closing.Load() {
		c.Drain()
	}
}

// sseNode is the Server as its SSE connections see it (sseconn.Node).
type sseNode Server

// Closed implements sseconn.Node, as connNode.Closed.
func (n *sseNode) Closed(c *sseconn.Conn, reason CloseReason, err error) {
	s := (*Server)(n)
	s.closes[reason].Add(1)
	s.admit.Release(c.Ticket)
	if err != nil && reason != ReasonClientGone {
		s.log.Debug("sse connection closed", "conn", c.ID(), "reason", reason.String(), "err", err)
	}
}
