package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// How receivers receive. Over WebSocket (TransportWS), in the raw format
// (a frame holds the payload as published) or the json one (a text frame
// holds fanout's JSON envelope, {"type":"message",...,"data":...}), with
// permessage-deflate when Config.Compression offers it and the server
// takes it. Over Server-Sent Events (TransportSSE), a GET of SSEPath
// answered 200 text/event-stream, each event's data the same envelope.
// Either way a receiver is a socket watched by netpoll whose bytes are
// parsed where they land (frame.Parser, sseParser), and every message's
// payload is recovered exactly as its publisher sent it: the raw frame's
// payload, or the envelope's "data" string (text), "data" itself (JSON)
// or "data_base64" decoded (binary), see decodeEnvelope. Publishers are
// raw-format WebSocket clients (or POST) whatever the receivers are.

// Transports (Config.Transport).
const (
	TransportWS  = "ws"
	TransportSSE = "sse"
)

// WebSocket formats (Config.Format).
const (
	FormatRaw  = "raw"
	FormatJSON = "json"
)

// Payloads (Config.Payload).
const (
	PayloadBinary = "binary"
	PayloadJSON   = "json"
	PayloadText   = "text"
)

// defaultSSEPath is Config.SSEPath's default, fanout's -sse-path.
const defaultSSEPath = "/sse"

// fillTransport checks and defaults how receivers receive and what a
// message holds.
func (c *Config) fillTransport() error {
	if c.Transport == "" {
		c.Transport = TransportWS
	}
	if c.Payload == "" {
		c.Payload = PayloadBinary
	}
	if c.Payload != PayloadBinary && c.Payload != PayloadJSON && c.Payload != PayloadText {
		return fmt.Errorf("payload %q: want %s, %s or %s", c.Payload, PayloadBinary, PayloadJSON, PayloadText)
	}
	if c.Format != "" && c.Format != FormatRaw && c.Format != FormatJSON {
		return fmt.Errorf("format %q: want %s or %s", c.Format, FormatRaw, FormatJSON)
	}
	for _, one := range c.urls {
		if u, err := url.Parse(one); err == nil && u.Query().Has("format") {
			return fmt.Errorf("url %q names a format: say it with format (-format)", one)
		}
	}
	switch c.Transport {
	case TransportWS:
		if c.Format == "" {
			c.Format = FormatRaw
		}
		if c.SSEPath != "" {
			return fmt.Errorf("sse path: only with the %s transport", TransportSSE)
		}
	case TransportSSE:
		switch {
		case c.Format == FormatRaw:
			return fmt.Errorf("format %s: SSE streams carry the json format", FormatRaw)
		case c.Compression:
			return fmt.Errorf("compression: WebSocket only (permessage-deflate); SSE streams go as they are")
		}
		c.Format = FormatJSON
		if c.SSEPath == "" {
			c.SSEPath = defaultSSEPath
		}
		if !strings.HasPrefix(c.SSEPath, "/") || strings.ContainsAny(c.SSEPath, "?# \r\n") {
			return fmt.Errorf("sse path %q: want a path, /sse", c.SSEPath)
		}
		for _, one := range c.urls {
			if strings.HasPrefix(one, "wss:") {
				return fmt.Errorf("url %q: the %s transport speaks plain HTTP (receivers read their sockets' descriptors): ws:// only", one, TransportSSE)
			}
		}
	default:
		return fmt.Errorf("transport %q: want %s or %s", c.Transport, TransportWS, TransportSSE)
	}
	if c.Scenario == ScenarioRooms && (c.Transport != TransportWS || c.Format != FormatRaw || c.Payload != PayloadBinary) {
		return fmt.Errorf("%s: each client publishes on its own connection: the %s transport, %s format and %s payload only",
			ScenarioRooms, TransportWS, FormatRaw, PayloadBinary)
	}
	return nil
}

// envelopes reports whether receivers get each message in its JSON
// envelope (json format, SSE) rather than as published.
func (c Config) envelopes() bool { return c.Format == FormatJSON }

// receiverURL is the URL the idx-th receiver asks for, on channel ("":
// the default one): its server's, with the channel and, in the json
// format, format=json; for SSE, with SSEPath as its path; for Pusher,
// /app/KEY.
func (c Config) receiverURL(idx int, channel string) string {
	if c.Protocol == ProtocolPusher {
		return c.pusherURL(idx) // the channel is subscribed to (dialPusher)
	}
	u := c.urlFor(idx, channel)
	switch {
	case c.Transport == TransportSSE:
		p, err := url.Parse(u) // checked by checkTargets
		if err != nil {
			return u
		}
		p.Scheme, p.Path, p.RawPath = "http", c.SSEPath, ""
		return p.String()
	case c.Format == FormatJSON:
		return withParam(u, "format", FormatJSON)
	}
	return u
}

// dialReceiver opens the idx-th receiver's connection: its socket, bytes
// the server sent right after its answer (to be parsed first), and
// whether it negotiated permessage-deflate.
func dialReceiver(ctx context.Context, cfg Config, idx int) (nc net.Conn, extra []byte, deflate bool, err error) {
	u := cfg.receiverURL(idx, cfg.channelFor(idx))
	if cfg.Transport == TransportSSE {
		nc, extra, err = dialSSE(ctx, cfg, idx, u)
		return nc, extra, false, err
	}
	return dial(ctx, cfg, idx, u, cfg.Compression)
}

// netDial is a dial function bound to the idx-th source address.
func netDial(cfg Config, idx int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer // LocalAddr unset, not a nil *TCPAddr: errors would read "dial tcp <nil>->..."
	if n := len(cfg.SourceIPs); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: cfg.SourceIPs[idx%n]}
	}
	return nd.DialContext
}

// dial opens and upgrades one WebSocket connection to u, bound to the
// idx-th source address, offering permessage-deflate if offerDeflate. It
// returns bytes the server sent right after the handshake, if any, and
// whether deflate was negotiated. The offer is without context takeover
// both ways, and an answer that keeps the server's context is refused:
// the bench inflates every message on its own.
func dial(ctx context.Context, cfg Config, idx int, u string, offerDeflate bool) (nc net.Conn, extra []byte, deflate bool, err error) {
	var refusal string // the status line of an answer that is not a 101
	d := ws.Dialer{Timeout: cfg.ConnectTimeout, NetDial: netDial(cfg, idx), TLSConfig: cfg.tls,
		OnStatusError: func(status int, reason []byte, _ io.Reader) { refusal = fmt.Sprintf("%d %s", status, reason) }}
	if offerDeflate {
		d.Extensions = []httphead.Option{wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}.Option()}
	}
	nc, br, hs, err := d.Dial(ctx, u)
	if err != nil {
		if br != nil {
			ws.PutReader(br)
		}
		if refusal != "" {
			return nil, nil, false, fmt.Errorf("bench: %s: the server answered %s, not 101 Switching Protocols", u, refusal)
		}
		return nil, nil, false, fmt.Errorf("bench: %s: %w", u, err)
	}
	for _, opt := range hs.Extensions {
		if !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
			continue
		}
		var p wsflate.Parameters
		if err := p.Parse(opt); err != nil || !p.ServerNoContextTakeover {
			nc.Close()
			if br != nil {
				ws.PutReader(br)
			}
			return nil, nil, false, fmt.Errorf("bench: server accepted permessage-deflate as %q: want server_no_context_takeover", opt.String())
		}
		deflate = true
	}
	if br != nil {
		extra = make([]byte, br.Buffered())
		_, _ = io.ReadFull(br, extra)
		ws.PutReader(br)
	}
	return nc, extra, deflate, nil
}

// maxRefusal bounds what is read of an SSE answer that is not a stream.
const maxRefusal = 4 << 10

// dialSSE opens one SSE stream: GET u (http://, SSEPath, the receiver's
// query), bound to the idx-th source address. The answer must be 200
// text/event-stream, of no announced length (fanout turns a client away
// for a while, at a limit or shutting down, with a 200 that has a
// Content-Length, a retry: and the reason as a comment: that is an error
// here, with the reason) and not chunked (fanout's stream is the body
// as it is, to the end of the connection). It returns the bytes of the
// body that came with the answer.
func dialSSE(ctx context.Context, cfg Config, idx int, u string) (net.Conn, []byte, error) {
	target, err := url.Parse(u)
	if err != nil {
		return nil, nil, err
	}
	host := target.Host
	if target.Port() == "" {
		host = net.JoinHostPort(target.Hostname(), "80")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	nc, err := netDial(cfg, idx)(ctx, "tcp", host)
	if err != nil {
		return nil, nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) }) // a cancelled run stops waiting
	defer stop()
	fail := func(err error) (net.Conn, []byte, error) {
		nc.Close()
		return nil, nil, err
	}
	req := "GET " + target.RequestURI() + " HTTP/1.1\r\nHost: " + target.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(nc, 4<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(fmt.Errorf("bench: sse %s: %w", u, err))
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode != http.StatusOK || mt != "text/event-stream":
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusal))
		return fail(fmt.Errorf("bench: sse %s: %s (%s): %s", u, resp.Status, resp.Header.Get("Content-Type"), bytes.TrimSpace(body)))
	case resp.ContentLength >= 0:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusal))
		return fail(fmt.Errorf("bench: sse %s: turned away (a stream of %d bytes): %q", u, resp.ContentLength, body))
	case len(resp.TransferEncoding) > 0:
		return fail(fmt.Errorf("bench: sse %s: a %s body: want the stream as it is, to the end of the connection", u, strings.Join(resp.TransferEncoding, ", ")))
	}
	extra, _ := br.Peek(br.Buffered())
	extra = bytes.Clone(extra)
	if !stop() {
		return fail(ctx.Err())
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return nc, extra, nil
}
