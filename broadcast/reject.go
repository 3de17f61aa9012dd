package broadcast

import (
	"net/http"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/admit"
)

// RejectKind says why an upgrade was refused; counted in Stats.Rejected.
type RejectKind uint8

// Reject kinds.
const (
	RejectBadRequest    RejectKind = iota // 400: not a valid upgrade request
	RejectNotFound                        // 404: wrong path
	RejectVersion                         // 426: unsupported Sec-WebSocket-Version
	RejectFull                            // 503: MaxConns reached
	RejectShutdown                        // 503: shutting down
	RejectTimeout                         // handshake not done within HandshakeTimeout
	RejectIO                              // the client hung up or the socket failed
	RejectOrigin                          // 403: Origin not allowed
	RejectUnauthorized                    // 401: missing or bad token
	RejectPerIP                           // 429: MaxConnsPerIP reached
	RejectBusy                            // closed unread: MaxHandshakes in progress
	RejectBusySource                      // closed unread: MaxHandshakesPerIP in progress from its source
	RejectSilent                          // closed: nothing sent before the deadline (HandshakeFirstByteTimeout)
	RejectParams                          // 400: channel, format or since the server cannot take (the body says why)
	RejectChannelDenied                   // 403: a channel the token does not grant
	RejectPreflight                       // 204: an SSE CORS preflight, answered (not a connection)
	RejectPusher                          // a Pusher client told pusher:error 4001/4004/4007/4008 (unknown app, quota, protocol) after its upgrade
	RejectDemoPage                        // 200: the demo page (Config.Demo), answered (not a connection)

	// The PROXY protocol's (proxy.go).
	RejectProxyUntrusted // closed unanswered: a PROXY header from an address not in Config.ProxyProtocol
	RejectProxyMissing   // 400: no PROXY header from an address in Config.ProxyProtocol
	RejectProxyMalformed // closed unanswered: a trusted address's PROXY header does not parse
	numRejects
)

var rejectNames = [numRejects]string{
	RejectBadRequest:    "bad_request",
	RejectNotFound:      "not_found",
	RejectVersion:       "version",
	RejectFull:          "full",
	RejectShutdown:      "shutdown",
	RejectTimeout:       "timeout",
	RejectIO:            "io",
	RejectOrigin:        "origin",
	RejectUnauthorized:  "unauthorized",
	RejectPerIP:         "per_ip",
	RejectBusy:          "handshakes_full",
	RejectBusySource:    "handshakes_per_source",
	RejectSilent:        "first_byte_timeout",
	RejectParams:        "bad_params",
	RejectChannelDenied: "channel_denied",
	RejectPreflight:     "sse_preflight",
	RejectPusher:        "pusher_refused",
	RejectDemoPage:      "demo_page",

	RejectProxyUntrusted: "proxy_untrusted",
	RejectProxyMissing:   "proxy_missing",
	RejectProxyMalformed: "proxy_malformed",
}

func (k RejectKind) String() string {
	if k < numRejects {
		return rejectNames[k]
	}
	return "unknown"
}

// RejectKinds lists every reject kind, for exporters.
func RejectKinds() []RejectKind {
	out := make([]RejectKind, numRejects)
	for i := range out {
		out[i] = RejectKind(i)
	}
	return out
}

// wrongPathHint is the body of a 404: where the server's endpoints are,
// for the person who typed the wrong URL. Paths only, never an address or
// a key: anyone who can connect reads it.
func wrongPathHint(c *Config) string {
	return "no such path: " + endpoints(c)
}

// wrongMethodHint is the body of a 405 (a non-GET request; usually a
// publish sent to the WebSocket listener).
func wrongMethodHint(c *Config) string {
	return "method not allowed: " + endpoints(c)
}

func endpoints(c *Config) string {
	s := "WebSocket at " + c.Path
	if !c.NoSSE {
		s += ", SSE at " + c.SSEPath
	}
	if c.Demo {
		s += ", a demo page at /"
	}
	return s + " (GET); publishing is on the admin listener (POST /publish)"
}

// answers are the HTTP answers of the refusals the server makes itself,
// to an upgrade (a wrong path's is wrongPathHint, which names the paths); an SSE request gets 200 with retry: instead of 503 and
// 429 (sseStatus).
var answers = map[RejectKind]struct {
	status int
	reason string
}{
	RejectFull:         {http.StatusServiceUnavailable, "connection limit reached"},
	RejectShutdown:     {http.StatusServiceUnavailable, "server shutting down"},
	RejectOrigin:       {http.StatusForbidden, "origin not allowed"},
	RejectUnauthorized: {http.StatusUnauthorized, "missing or invalid token"},
	RejectPerIP:        {http.StatusTooManyRequests, "too many connections from this address"},
}

// rejections are answers as the upgrader's errors.
var rejections = func() map[RejectKind]error {
	m := make(map[RejectKind]error, len(answers))
	for k, a := range answers {
		m[k] = rejection(a.status, a.reason)
	}
	return m
}()

// admitRefusals names the reject kind of each admission refusal.
var admitRefusals = map[error]RejectKind{
	admit.ErrOrigin:       RejectOrigin,
	admit.ErrUnauthorized: RejectUnauthorized,
	admit.ErrPerIP:        RejectPerIP,
	admit.ErrFull:         RejectFull,
}

func rejection(status int, reason string) error {
	return ws.RejectConnectionError(ws.RejectionStatus(status), ws.RejectionReason(reason))
}
