package broadcast

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// The PROXY protocol (v1 text, v2 binary): a load balancer that ends TLS
// in front of fanout starts each connection it opens with a header naming
// the client's address. Config.ProxyProtocol lists the balancers trusted
// to send one. The header is read on the handshake goroutine, under the
// handshake's deadline, through the same buffered reader the request is
// then read from: a slow balancer connection never holds the accept loop,
// and a request that came in the header's segment is not lost. From there
// on the header's source is the client's address for every per-address
// limit (handshakes, connections), for the logs and for the connection's
// "remote" in them.
//
// A trusted source must send a header (HAProxy's send-proxy always does):
// a plain request from it is answered 400 and counted as proxy_missing,
// so that a balancer left without send-proxy is noticed at once instead
// of every client sharing the balancer's per-address limits. A header
// from any other source is refused, closed unanswered and counted as
// proxy_untrusted: whoever can reach the listener directly must not name
// the address it is counted under.

// errProxy* are the refusals of the PROXY protocol; classify counts them
// through u.refusal.
var (
	errProxyUntrusted = errors.New("broadcast: PROXY protocol header from an address not trusted to send one")
	errProxyMissing   = errors.New("broadcast: no PROXY protocol header from a trusted load balancer")
	errProxyBusy      = errors.New("broadcast: too many handshakes in progress from the PROXY header's source")
)

// proxyMissingHint is the body of the 400 a trusted source gets for a
// request without a header: the peer speaks plain HTTP, so tell it.
const proxyMissingHint = "this address is a trusted load balancer: its connections must start with a PROXY protocol header"

// proxyTrusted reports whether ip may send a PROXY protocol header.
func (s *Server) proxyTrusted(ip netip.Addr) bool {
	for _, p := range s.cfg.ProxyProtocol {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// proxyHeader reads what may come before the request: a PROXY protocol
// header, required from a trusted source (u.viaProxy) and refused from
// any other. From a trusted source the header's address becomes the
// client's (u.req.IP, u.remote), and the handshake slot is counted under
// its source (the accept loop took it without one). A LOCAL header (v2)
// or UNKNOWN (v1), a balancer's own health check, keeps the balancer's
// address. Errors that are the socket's (a timeout, a hang-up) come back
// as they are, to be counted as for any request.
func (u *upgrade) proxyHeader(br *bufio.Reader, hc *handshakeConn) error {
	if !u.viaProxy {
		// Only a peek: the request's bytes are scanned as before, and
		// an error here comes back to the request's own read.
		if sig, _ := proxySignature(br); sig == nil {
			return nil
		}
		u.refused, u.refusal = true, RejectProxyUntrusted
		u.srv.logProxy.Warn(u.srv.log, "PROXY protocol header from an address not trusted to send one; closing (fanout_upgrade_rejections_total{reason=\"proxy_untrusted\"})",
			"remote", u.req.IP.String())
		return errProxyUntrusted
	}
	hc.scanOff = true // the header's bytes are not the request's
	sig, err := proxySignature(br)
	switch {
	case err != nil:
		return err
	case sig == nil:
		u.refused, u.refusal = true, RejectProxyMissing
		u.srv.logProxy.Warn(u.srv.log, "no PROXY protocol header from a trusted load balancer; answering 400 (fanout_upgrade_rejections_total{reason=\"proxy_missing\"})",
			"remote", u.req.IP.String())
		return errProxyMissing
	case sig[0] == proxyproto.SIGV1[0]:
		if err := bufferLine(br, maxV1Header); err != nil {
			return err
		}
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errHandshakeAborted) || errors.Is(err, errHandshakeTooBig) ||
			errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return err // the balancer hung up or timed out: not a malformed header
		}
		u.refused, u.refusal = true, RejectProxyMalformed
		u.srv.logProxy.Warn(u.srv.log, "malformed PROXY protocol header from a trusted load balancer; closing (fanout_upgrade_rejections_total{reason=\"proxy_malformed\"})",
			"remote", u.req.IP.String(), "err", err)
		return err
	}
	u.proxy = u.req.IP
	if src, ok := proxySource(h); ok {
		u.req.IP, u.remote = src.Addr(), src
	}
	if err := u.srv.admit.AddSource(&u.slot, u.req.IP); err != nil {
		u.refused, u.refusal = true, RejectBusySource
		u.srv.logAccept.Warn(u.srv.log, "too many handshakes in progress from one source; closing new connection",
			"remote", u.req.IP.String(), "proxy", u.proxy.String(), "limit", u.srv.cfg.MaxHandshakesPerIP)
		return errProxyBusy
	}
	hc.requestStarts(br)
	return nil
}

// proxySource is the client's address a PROXY header gives; ok false for
// a LOCAL (or v1 UNKNOWN) header, or an address that is not an IP one.
func proxySource(h *proxyproto.Header) (src netip.AddrPort, ok bool) {
	if h.Command.IsLocal() {
		return netip.AddrPort{}, false
	}
	switch a := h.SourceAddr.(type) {
	case *net.TCPAddr:
		src = a.AddrPort()
	case *net.UDPAddr:
		src = a.AddrPort()
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), src.Addr().IsValid()
}

// proxySignature peeks at the start of br for a PROXY header's signature
// ("PROXY", or v2's twelve bytes) and returns it, nil if there is none.
// It peeks no further than the bytes seen so far could still be one:
// a request is not held waiting for bytes it will never send.
func proxySignature(br *bufio.Reader) ([]byte, error) {
	b, err := br.Peek(1)
	if len(b) == 0 {
		return nil, err
	}
	var sig []byte
	switch b[0] {
	case proxyproto.SIGV1[0]:
		sig = proxyproto.SIGV1
	case proxyproto.SIGV2[0]:
		sig = proxyproto.SIGV2
	default:
		return nil, nil
	}
	b, err = br.Peek(len(sig))
	switch {
	case !bytes.HasPrefix(sig, b):
		return nil, nil
	case len(b) < len(sig):
		return nil, err
	}
	return sig, nil
}

// maxV1Header is the longest v1 header, CRLF included (the protocol's
// worst case, "PROXY UNKNOWN" with two full IPv6 addresses and ports).
const maxV1Header = 107

// bufferLine waits, under the connection's deadline, until br holds a
// whole line (up to its LF), or max bytes of one. go-proxyproto refuses
// a v1 header that is not buffered in one piece (it cannot tell a slow
// sender from a slow-loris one); here the handshake deadline bounds the
// wait, so a header split across segments is taken as a request is.
func bufferLine(br *bufio.Reader, max int) error {
	for n := br.Buffered(); ; n = br.Buffered() {
		if b, _ := br.Peek(n); bytes.IndexByte(b, '\n') >= 0 || n >= max {
			return nil
		}
		if _, err := br.Peek(n + 1); err != nil {
			return err
		}
	}
}

// requestStarts is where the request begins, once the PROXY header
// before it is read: the line scan (and the count of request bytes)
// starts on what br holds after it, and a connection that has sent
// nothing more is held to the first-byte deadline again, from now
// (within the handshake's).
func (h *handshakeConn) requestStarts(br *bufio.Reader) {
	h.scanOff = false
	rest, _ := br.Peek(br.Buffered())
	h.read = len(rest)
	h.scan(rest)
	if h.read == 0 && h.firstByte > 0 {
		h.waitFirst = true
		_ = h.Conn.SetDeadline(minTime(time.Now().Add(h.firstByte), h.deadline))
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
