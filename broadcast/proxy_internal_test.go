package broadcast

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// Any split of a PROXY header and the request after it reads the same:
// the client's address from the header, then every byte of the request,
// its end found by the line scan and nothing taken for early data.
// net.Pipe hands each write to a single read, so the server does see the
// bytes in the two pieces written (over TCP, the pieces may merge).
func TestProxyHeaderAnySplit(t *testing.T) {
	lb := netip.MustParseAddrPort("127.0.0.1:40000")
	s, err := New(Config{ProxyProtocol: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, MaxHandshakesPerIP: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const req = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, src := range []string{"192.0.2.10:5555", "[2001:db8::7]:443"} {
		client := netip.MustParseAddrPort(src)
		for _, version := range []byte{1, 2} {
			h, err := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client),
				net.TCPAddrFromAddrPort(netip.AddrPortFrom(client.Addr(), 8080))).Format()
			if err != nil {
				t.Fatal(err)
			}
			whole := append(h, req...)
			for cut := 1; cut <= len(h); cut++ {
				splitOnce(t, s, lb, whole, cut, func(u *upgrade, hc *handshakeConn, br *bufio.Reader) {
					if err := u.proxyHeader(br, hc); err != nil {
						t.Fatalf("v%d %s cut at %d: %v", version, src, cut, err)
					}
					if u.req.IP != client.Addr() || u.remote != client || u.proxy != lb.Addr() {
						t.Fatalf("v%d cut at %d: client %s remote %s proxy %s", version, cut, u.req.IP, u.remote, u.proxy)
					}
					got := make([]byte, len(req))
					if _, err := io.ReadFull(br, got); err != nil || string(got) != req {
						t.Fatalf("v%d cut at %d: request %q %v", version, cut, got, err)
					}
					if !hc.ended || hc.early || hc.read != len(req) {
						t.Fatalf("v%d cut at %d: scan ended %v early %v, %d request bytes; want true false %d", version, cut, hc.ended, hc.early, hc.read, len(req))
					}
				})
			}
		}
	}
	if n := s.admit.Handshaking(); n != 0 {
		t.Fatalf("%d handshake slots held, want 0", n)
	}
}

// An untrusted source's header is found however it is split.
func TestProxyUntrustedAnySplit(t *testing.T) {
	s, err := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := []byte("PROXY TCP4 192.0.2.10 127.0.0.1 5555 8080\r\n")
	for _, pre := range [][]byte{h, proxyproto.SIGV2} {
		for cut := 1; cut < len(pre); cut++ {
			u, hc, br := pipeHandshake(t, s, netip.MustParseAddrPort("192.0.2.99:1"), false, pre[:cut], pre[cut:])
			if err := u.proxyHeader(br, hc); err != errProxyUntrusted || u.refusal != RejectProxyUntrusted {
				t.Fatalf("%q cut at %d: %v (%s), want errProxyUntrusted", pre, cut, err, u.refusal)
			}
			s.admit.EndHandshake(u.slot)
		}
	}
}

// splitOnce runs check on a handshake from peer, through a trusted
// balancer, that is sent whole cut in two, and gives its slot back
// after, failed or not (Close waits for every slot; the next cut's
// client is the same).
func splitOnce(t *testing.T, s *Server, peer netip.AddrPort, whole []byte, cut int, check func(*upgrade, *handshakeConn, *bufio.Reader)) {
	u, hc, br := pipeHandshake(t, s, peer, true, whole[:cut], whole[cut:])
	defer func() { s.admit.EndHandshake(u.slot) }()
	check(u, hc, br)
}

// pipeHandshake is a handshake in progress with peer over a net.Pipe, the
// peer writing first and then rest; what handshake and run set up.
func pipeHandshake(t *testing.T, s *Server, peer netip.AddrPort, viaProxy bool, first, rest []byte) (*upgrade, *handshakeConn, *bufio.Reader) {
	t.Helper()
	cc, sc := net.Pipe()
	t.Cleanup(func() { cc.Close(); sc.Close() })
	go func() {
		_, _ = cc.Write(first)
		_, _ = cc.Write(rest)
	}()
	src := peer.Addr()
	if viaProxy {
		src = netip.Addr{}
	}
	slot, err := s.admit.StartHandshake(src)
	if err != nil {
		t.Fatal(err)
	}
	u := &upgrade{srv: s, slot: slot, viaProxy: viaProxy, peer: peer, remote: peer}
	u.req.IP = peer.Addr()
	hc := &handshakeConn{Conn: sc, left: maxHandshakeBytes, abort: &s.abortHS, deadline: time.Now().Add(10 * time.Second)}
	_ = sc.SetDeadline(hc.deadline)
	return u, hc, bufio.NewReaderSize(hc, 4096)
}
