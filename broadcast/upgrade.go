package broadcast

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/pusher"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// maxHandshakeBytes bounds the HTTP upgrade request a client may send;
// beyond it the handshake fails with 431 (headers are a few hundred bytes).
const maxHandshakeBytes = 16 << 10

var (
	errHandshakeTooBig  = errors.New("broadcast: handshake request too large")
	errRegister         = errors.New("broadcast: register")
	errHandshakeAborted = errors.New("broadcast: handshake aborted: shutdown deadline passed")
)

// handshake runs the HTTP upgrade on its own short-lived goroutine, under
// a deadline, so a stalled client holds nothing but this goroutine and
// its slot. Its phases: upgrade (admission included), detach the socket
// from the net package, attach it to the hub as a connection. The slot is
// given back before attach sends the 101: a client that has its answer
// holds no slot, so a client that waits for its 101 before dialling again
// is never shed by MaxHandshakesPerIP for its own earlier handshakes.
// viaProxy: peer is a trusted load balancer's, which sends the client's
// address first (proxyHeader); slot is not yet counted under a source.
func (s *Server) handshake(nc net.Conn, peer netip.AddrPort, slot admit.Slot, viaProxy bool) {
	defer s.hsWG.Done()
	u := upgrade{srv: s, slot: slot, viaProxy: viaProxy, peer: peer, remote: peer}
	u.req.IP = peer.Addr()
	hc := &handshakeConn{Conn: nc, left: maxHandshakeBytes, abort: &s.abortHS}
	if !s.trackHandshake(nc) {
		_ = nc.Close() // shutting down past its deadline
		s.rejected[RejectShutdown].Add(1)
		s.admit.EndHandshake(u.slot)
		return
	}
	defer s.untrackHandshake(nc)
	fd, err := u.run(hc)
	if err != nil {
		// The one release of a ticket that never became a connection;
		// from attach on, the connection's teardown releases it.
		s.admit.Release(u.ticket)
		if u.pusherHeld {
			s.pusher.Release(u.pusher) // its app's quota, likewise
		}
		_, _ = nc.Write(hc.resp) // the refusal gobwas wrote, if any
		s.refuse(nc, &u, hc, err)
		s.admit.EndHandshake(u.slot)
		return
	}
	s.admit.EndHandshake(u.slot)
	if u.sse {
		s.attachSSE(fd, &u, hc.resp)
		return
	}
	s.attach(fd, &u, hc.resp, hc.early)
}

// upgrade is one handshake in progress: what the upgrader's callbacks
// gathered, and the admission it got.
type upgrade struct {
	srv        *Server
	slot       admit.Slot     // the handshake's, given back by handshake
	viaProxy   bool           // from a trusted load balancer: a PROXY header comes first
	peer       netip.AddrPort // the socket's peer
	remote     netip.AddrPort // the client: the PROXY header's source, else peer
	proxy      netip.Addr     // the balancer's address, once its header is read; zero: none
	sawRequest bool           // the request line parsed
	req        admit.Request  // for admission
	ticket     admit.Ticket   // granted in onBeforeUpgrade
	refusal    RejectKind     // set with refused, when the server itself said no
	refused    bool
	sub        subscription  // what the URL asks for
	format     wsconn.Format // decided in onBeforeUpgrade
	sse        bool          // an SSE request (runSSE), not an upgrade
	flate      wsflate.Extension
	pusher     *pusher.App     // a Pusher client's app (at /app/{key}), admitted by the front door
	pusherNo   *pusher.Refusal // a Pusher client turned away after its upgrade
	isPusher   bool            // the request is at /app/
	pusherHeld bool            // it holds its app's quota (Front.Hold)
}

// run upgrades hc's connection under the handshake deadline and detaches
// its fd. The response is left in hc.resp, not sent.
func (u *upgrade) run(hc *handshakeConn) (fd int, err error) {
	nc := hc.Conn
	now := time.Now()
	hc.deadline = now.Add(u.srv.cfg.HandshakeTimeout)
	if fb := u.srv.cfg.HandshakeFirstByteTimeout; fb > 0 && fb < u.srv.cfg.HandshakeTimeout {
		_ = nc.SetDeadline(now.Add(fb)) // until the first byte; then hc.deadline
		hc.waitFirst, hc.firstByte = true, fb
	} else {
		_ = nc.SetDeadline(hc.deadline)
	}
	br := sseBufs.Get().(*bufio.Reader)
	br.Reset(hc)
	defer func() {
		br.Reset(nil)
		sseBufs.Put(br)
	}()
	if err := u.proxyHeader(br, hc); err != nil {
		return -1, err
	}
	if !u.srv.cfg.NoSSE && isSSE(br, u.srv.cfg.SSEPath) {
		return u.runSSE(br, hc)
	}
	if u.srv.demo != nil && isDemo(br) {
		return -1, u.runDemo(br, hc)
	}
	up := ws.Upgrader{
		OnRequest:       u.onRequest,
		OnHeader:        u.onHeader,
		OnBeforeUpgrade: u.onBeforeUpgrade,
	}
	if len(u.srv.cfg.Subprotocols) > 0 {
		// gobwas calls it for each offered protocol in the client's order
		// and echoes the first it accepts.
		up.Protocol = u.protocol
	}
	if !u.srv.cfg.NoCompression {
		// Always without context takeover, both ways, whatever the
		// client offers: one compressed frame serves every connection,
		// and none keeps a compressor or a decompressor. An offer that
		// asks for a smaller server window than deflate's is declined
		// (wsflate.Extension.Negotiate): the connection is plain.
		u.flate.Parameters = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
		up.Negotiate = u.negotiate
	}
	if _, err := up.Upgrade(struct {
		io.Reader
		io.Writer
	}{br, hc}); err != nil {
		if errors.Is(err, ws.ErrHandshakeBadMethod) {
			hc.resp = hc.resp[:0] // refuse answers it, with the hint
		}
		return -1, err
	}
	if u.pusherNo != nil {
		// The 101, the pusher:error and the close, under the handshake's
		// deadline; then the connection is closed (refuse) and never
		// costs more than this goroutine.
		ef, cf := u.pusherNo.Frames()
		_, _ = nc.Write(slices.Concat(hc.resp, ef, cf))
		hc.resp = hc.resp[:0]
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		// Its close frame, so the close is not a reset; a second at most.
		_ = nc.SetReadDeadline(time.Now().Add(min(time.Second, u.srv.cfg.HandshakeTimeout)))
		_, _ = io.CopyN(io.Discard, nc, 4<<10)
		return -1, errPusherRefused
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return -1, fmt.Errorf("%w: %w", errRegister, err)
	}
	return detach(nc)
}

// errPusherRefused: a Pusher client was told no after its upgrade.
var errPusherRefused = errors.New("broadcast: Pusher client refused")

// negotiate answers an extension offer. An offer of permessage-deflate
// with parameters that are not valid is declined, not refused (RFC 7692
// 7.1.1): the connection goes on without compression.
func (u *upgrade) negotiate(opt httphead.Option) (httphead.Option, error) {
	if u.isPusher {
		return httphead.Option{}, nil // one Pusher encoding serves all: never compressed
	}
	accept, err := u.flate.Negotiate(opt)
	if err != nil {
		u.flate.Reset()
		return httphead.Option{}, nil
	}
	return accept, nil
}

// protocol accepts an offered subprotocol that Config.Subprotocols lists.
func (u *upgrade) protocol(p []byte) bool {
	for _, sp := range u.srv.cfg.Subprotocols {
		if string(p) == sp {
			return true
		}
	}
	return false
}

func (u *upgrade) refuse(kind RejectKind) error {
	u.refused, u.refusal = true, kind
	return rejections[kind]
}

// refuseWith refuses with status and a reason that is the answer's body.
func (u *upgrade) refuseWith(kind RejectKind, status int, why error) error {
	u.refused, u.refusal = true, kind
	return rejection(status, why.Error())
}

func (u *upgrade) onRequest(uri []byte) error {
	u.sawRequest = true
	path, query, _ := bytes.Cut(uri, []byte{'?'})
	if key, ok := bytes.CutPrefix(path, []byte("/app/")); ok && u.srv.pusher != nil {
		return u.onPusherRequest(string(key), query)
	}
	switch {
	case string(path) != u.srv.cfg.Path:
		return u.refuseWith(RejectNotFound, http.StatusNotFound, errors.New(wrongPathHint(&u.srv.cfg)))
	case u.srv.closing.Load():
		return u.refuse(RejectShutdown)
	}
	if len(query) == 0 {
		return nil
	}
	q, err := url.ParseQuery(string(query))
	if err != nil {
		return u.refuseWith(RejectParams, http.StatusBadRequest, errors.New("malformed query string"))
	}
	if u.srv.admit.Authenticates() {
		u.req.Token = q.Get("token")
	}
	if u.sub, err = parseSubscription(q, u.srv.cfg.MaxChannelsPerConn); err != nil {
		return u.refuseWith(RejectParams, http.StatusBadRequest, err)
	}
	return nil
}

func (u *upgrade) onHeader(key, value []byte) error {
	switch {
	case bytes.EqualFold(key, []byte("Origin")):
		u.req.Origin = string(value)
	case bytes.EqualFold(key, []byte("Authorization")) && u.srv.admit.Authenticates() && u.req.Token == "":
		u.req.Token = admit.Bearer(string(value))
	}
	return nil
}

// onPusherRequest reads a Pusher client's request line:
// /app/{key}?protocol=7&client=js&version=... The front door decides on
// the app and the protocol; a refusal is said in the Pusher protocol
// once upgraded (pusher:error, then the close code that tells the
// client whether to come back), as Pusher clients expect.
func (u *upgrade) onPusherRequest(key string, query []byte) error {
	if u.srv.closing.Load() {
		return u.refuse(RejectShutdown)
	}
	q, err := url.ParseQuery(string(query))
	if err != nil {
		return u.refuseWith(RejectParams, http.StatusBadRequest, errors.New("malformed query string"))
	}
	u.isPusher, u.format = true, wsconn.FormatPusher
	u.sub.channels = []string{hub.Nowhere} // it subscribes later, by message
	u.pusher, u.pusherNo = u.srv.pusher.Open(key, q.Get("protocol"))
	if u.pusherNo != nil {
		u.refused, u.refusal = true, RejectPusher
	}
	return nil
}

// onBeforeUpgrade is admission: the request is read, the 101 not sent.
func (u *upgrade) onBeforeUpgrade() (ws.HandshakeHeader, error) {
	if u.isPusher {
		return u.onBeforePusherUpgrade()
	}
	u.req.Channels = u.sub.channels
	t, authErr, refusal := u.srv.admit.Admit(&u.req)
	switch {
	case errors.Is(refusal, admit.ErrChannelDenied):
		return nil, u.refuseWith(RejectChannelDenied, http.StatusForbidden, authErr)
	case refusal != nil:
		if authErr != nil {
			u.srv.logRefused.Warn(u.srv.log, "upgrade: unauthorized", "remote", u.req.IP.String(), "err", authErr)
		}
		return nil, u.refuse(admitRefusals[refusal])
	}
	u.ticket = t // released by the handshake if what follows refuses
	f, err := u.sub.resolve(u.req.Channels, u.srv.cfg.MaxChannelsPerConn)
	if err != nil {
		return nil, u.refuseWith(RejectParams, http.StatusBadRequest, err)
	}
	if err := u.srv.signedOnly(u.sub.channels); err != nil {
		return nil, u.refuseWith(RejectChannelDenied, http.StatusForbidden, err)
	}
	u.format = f
	return nil, nil
}

// onBeforePusherUpgrade admits a Pusher client: no token (its
// subscriptions are signed), the same Origin check and limits. A client
// over a limit is upgraded and told 4100 (over capacity: pusher-js comes
// back in a second), not answered with an HTTP status it would retry at
// once.
func (u *upgrade) onBeforePusherUpgrade() (ws.HandshakeHeader, error) {
	if u.pusherNo != nil {
		return nil, nil // upgraded, then refused (run)
	}
	u.req.OwnAuth = true
	t, _, refusal := u.srv.admit.Admit(&u.req)
	switch {
	case errors.Is(refusal, admit.ErrOrigin):
		return nil, u.refuse(admitRefusals[refusal])
	case refusal != nil:
		u.refused, u.refusal = true, admitRefusals[refusal] // counted as the limit it hit
		u.pusherNo = u.srv.pusher.OverCapacity(refusal.Error())
		return nil, nil
	}
	if r := u.srv.pusher.Hold(u.pusher); r != nil {
		u.srv.admit.Release(t)
		u.refused, u.refusal, u.pusherNo = true, RejectPusher, r
		return nil, nil
	}
	u.ticket, u.pusherHeld = t, true
	return nil, nil
}

// refuse answers and counts a handshake that did not become a connection.
func (s *Server) refuse(nc net.Conn, u *upgrade, hc *handshakeConn, err error) {
	kind := u.classify(err)
	if kind == RejectTimeout && hc.read == 0 {
		kind = RejectSilent // not a slow request: no request at all
	}
	switch {
	case errors.Is(err, errHandshakeTooBig):
		rejectUnread(nc, "431 Request Header Fields Too Large")
	case errors.Is(err, ws.ErrMalformedRequest) && !u.sawRequest:
		// gobwas answers nothing to an unparsable request line.
		rejectUnread(nc, "400 Bad Request")
	case errors.Is(err, ws.ErrHandshakeBadMethod):
		// A POST here is usually a publish sent to the wrong listener:
		// the body says where things are. Its headers are unread.
		rejectUnread(nc, "405 Method Not Allowed", "Allow: GET", wrongMethodHint(&s.cfg))
	case errors.Is(err, errDemoMethod):
		rejectUnread(nc, "405 Method Not Allowed", "Allow: GET, HEAD", wrongMethodHint(&s.cfg))
	case errors.Is(err, errProxyMissing):
		rejectUnread(nc, "400 Bad Request", proxyMissingHint)
	case errors.Is(err, errRegister):
		s.log.Error("register", "err", err)
	case errors.Is(err, errDemoAnswered):
		// Written already (handshake); what the client still sends (a
		// body, pipelined requests) must not turn the close into a reset
		// that drops the page's tail.
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.CopyN(io.Discard, nc, 4*maxHandshakeBytes)
	}
	s.rejected[kind].Add(1)
	_ = nc.Close()
}

// classify names the reject kind of a failed handshake.
func (u *upgrade) classify(err error) RejectKind {
	var rej *ws.ConnectionRejectedError
	var ne net.Error
	switch {
	case u.refused:
		return u.refusal
	case errors.Is(err, errHandshakeAborted), u.srv.abortHS.Load() && errors.As(err, &ne) && ne.Timeout():
		return RejectShutdown // cut short by Shutdown's deadline
	case errors.Is(err, errRegister):
		return RejectIO
	case errors.Is(err, errHandshakeTooBig):
		return RejectBadRequest
	case errors.As(err, &rej):
		if rej.StatusCode() == http.StatusUpgradeRequired {
			return RejectVersion
		}
		return RejectBadRequest
	case errors.As(err, &ne) && ne.Timeout():
		return RejectTimeout
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return RejectBadRequest // incomplete, or over maxHandshakeBytes
	}
	return RejectIO
}

// handshakeConn is what the upgrader reads from and writes to: the
// socket, but no more than maxHandshakeBytes of it, and a buffer for the
// response. A 101 is not sent by the upgrader: it becomes the first bytes
// of the connection's outbound queue, sent once the connection is in the
// hub (wsconn.Conn.Start). A refusal is written after the upgrader returns.
//
// Until the first byte arrives the socket's deadline is the first-byte
// one (waitFirst); the first read that returns data moves it to deadline.
//
// It also follows the request's lines to its end (an empty line), to tell
// whether the client sent more after it without waiting for the 101: the
// upgrader reads ahead into its own buffer, and those bytes would be lost
// without a word.
type handshakeConn struct {
	net.Conn
	left      int
	read      int           // bytes of the request read so far (a PROXY header not counted)
	waitFirst bool          // the first-byte deadline is set
	firstByte time.Duration // the first-byte timeout; 0: none
	deadline  time.Time     // the handshake's own deadline
	resp      []byte
	abort     *atomic.Bool // the server gave up on handshakes in progress (Shutdown's deadline)
	scanOff   bool         // a PROXY header is being read: its bytes are not the request's
	line      int          // bytes of the current request line so far, CR not counted
	ended     bool         // the empty line that ends the request was read
	early     bool         // bytes came after it
}

func (h *handshakeConn) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, errHandshakeTooBig
	}
	if h.abort.Load() {
		return 0, errHandshakeAborted
	}
	n, err := h.Conn.Read(p[:min(len(p), h.left)])
	h.left -= n
	h.read += n
	if !h.scanOff {
		h.scan(p[:n])
	}
	if n > 0 && h.waitFirst {
		h.waitFirst = false
		if derr := h.Conn.SetDeadline(h.deadline); derr != nil && err == nil {
			err = derr
		}
	}
	return n, err
}

// scan follows the request's lines through b as gobwas reads them (LF
// ends a line; a CR before it is dropped).
func (h *handshakeConn) scan(b []byte) {
	for i, c := range b {
		if h.ended {
			h.early = i < len(b)
			return
		}
		switch c {
		case '\n':
			h.ended = h.line == 0
			h.line = 0
		case '\r':
		default:
			h.line++
		}
	}
}

func (h *handshakeConn) Write(p []byte) (int, error) {
	h.resp = append(h.resp, p...)
	return len(p), nil
}

// rejectUnread answers a request the upgrader did not finish reading. The
// client may still be sending: half-close and drain a little (under the
// handshake deadline) so the answer is not lost to a TCP reset.
// With a body, it is sent as text/plain, after the headers given.
func rejectUnread(nc net.Conn, status string, headersAndBody ...string) {
	head, body := "", ""
	if n := len(headersAndBody); n > 0 {
		body = headersAndBody[n-1] + "\n"
		for _, h := range headersAndBody[:n-1] {
			head += h + "\r\n"
		}
		head += "Content-Type: text/plain; charset=utf-8\r\n"
	}
	_, _ = io.WriteString(nc, "HTTP/1.1 "+status+"\r\n"+head+"Content-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.CopyN(io.Discard, nc, 4*maxHandshakeBytes)
}

// detach takes an upgraded socket out of the net package: a duplicate of
// its fd (close on exec, still non-blocking: that is a property of the
// socket) is all the connection keeps, and nc is closed, so it is one fd
// per connection again. Not conn.File(): that would also switch the
// socket to blocking mode.
func detach(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%w: connection %T has no raw fd", errRegister, nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("%w: %w", errRegister, err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(f uintptr) {
		// A raw syscall: fcntl never blocks, and telling the scheduler
		// about it costs an OS thread in a connect storm.
		r, _, e := unix.RawSyscall(unix.SYS_FCNTL, f, unix.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			dupErr = e
			return
		}
		fd = int(r)
	}); err != nil || dupErr != nil {
		return -1, fmt.Errorf("%w: %w", errRegister, errors.Join(err, dupErr))
	}
	_ = nc.Close()
	return fd, nil
}

// logAccepted logs, at debug level, a connection about to start: its
// id and its client's address (and the balancer's, through a PROXY
// header).
func (u *upgrade) logAccepted(id uint64) {
	log := u.srv.log
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return // no arguments built
	}
	if u.proxy.IsValid() {
		log.Debug("connection accepted", "conn", id, "remote", u.remote.String(), "proxy", u.proxy.String(), "sse", u.sse)
		return
	}
	log.Debug("connection accepted", "conn", id, "remote", u.remote.String(), "sse", u.sse)
}

// attach makes a detached socket a connection: an id, a place in the hub
// on the channels u asked for, a one-shot epoll watch on its fd, and resp
// (the 101) as its first bytes. From here on no goroutine belongs to it
// while it is idle, and its teardown releases u's ticket.
func (s *Server) attach(fd int, u *upgrade, resp []byte, early bool) {
	_, deflate := u.flate.Accepted()
	o := wsconn.Options{Format: u.format, Channels: u.sub.channels, Deflate: deflate}
	if u.isPusher {
		o.Deflate, o.ProtoState = false, s.pusher.State(u.pusher)
	}
	c := wsconn.New(s.ws, s.nextID.Add(1), fd, o)
	c.Ticket = u.ticket
	if u.remote != u.peer {
		c.SetRemote(u.remote)
	}
	s.accepted.Add(1)
	u.logAccepted(c.ID())
	if err := c.Start(resp, u.sub.hubSubscription()); err != nil {
		return // torn down and counted (a Pusher one by its Closed too)
	}
	if early {
		c.RefuseEarlyData()
		return
	}
	if s.closing.Load() {
		// Upgraded just as shutdown began: say goodbye properly.
		c.Drain()
	}
}
