package admit

import (
	"errors"
	"net/netip"
	"testing"
)

func TestSource(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.1", "192.0.2.1/32"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"}, // IPv4-mapped is IPv4
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64"}, // same /64
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	} {
		if got := Source(netip.MustParseAddr(tc.ip)); got.String() != tc.want {
			t.Errorf("Source(%s) = %s, want %s", tc.ip, got, tc.want)
		}
	}
}

// Slots are counted per source and server-wide, and each is given back
// once: the counts return to zero.
func TestHandshakeSlots(t *testing.T) {
	a := newController(t, Config{MaxHandshakes: 4, MaxHandshakesPerSource: 2})
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2") // one /64
	other := netip.MustParseAddr("2001:db8:0:1::1")
	take := func(ip netip.Addr, want error) Slot {
		t.Helper()
		s, err := a.StartHandshake(ip)
		if !errors.Is(err, want) {
			t.Fatalf("StartHandshake(%s): %v, want %v", ip, err, want)
		}
		return s
	}
	s1, s2 := take(v6a, nil), take(v6b, nil)
	take(v6a, ErrSourceHandshakes) // the /64 holds its two
	s3 := take(other, nil)
	s4 := take(netip.Addr{}, nil) // not an IP connection: no per-source count
	take(netip.MustParseAddr("192.0.2.9"), ErrHandshakes)
	if n := a.Handshaking(); n != 4 {
		t.Fatalf("%d handshakes, want 4", n)
	}
	a.EndHandshake(s1)
	s5 := take(v6b, nil)
	for _, s := range []Slot{s2, s3, s4, s5, {}} {
		a.EndHandshake(s)
	}
	if n, m := a.Handshaking(), len(a.perSource); n != 0 || m != 0 {
		t.Fatalf("after every EndHandshake: %d handshakes, %d sources counted", n, m)
	}
}

// A slot taken without an address (a load balancer's connection) is
// counted under its client's source once AddSource names it, and given
// back from there: the client's source cap applies, not the balancer's.
func TestHandshakeSlotAddSource(t *testing.T) {
	a := newController(t, Config{MaxHandshakes: 4, MaxHandshakesPerSource: 1})
	client := netip.MustParseAddr("192.0.2.7")
	s1, err := a.StartHandshake(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddSource(&s1, client); err != nil {
		t.Fatalf("AddSource: %v", err)
	}
	if _, err := a.StartHandshake(client); !errors.Is(err, ErrSourceHandshakes) {
		t.Fatalf("the client's second handshake: %v, want ErrSourceHandshakes", err)
	}
	s2, err := a.StartHandshake(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddSource(&s2, client); !errors.Is(err, ErrSourceHandshakes) {
		t.Fatalf("AddSource past the client's cap: %v, want ErrSourceHandshakes", err)
	}
	a.EndHandshake(s2) // still held server-wide: given back
	a.EndHandshake(s1)
	if n, m := a.Handshaking(), len(a.perSource); n != 0 || m != 0 {
		t.Fatalf("after every EndHandshake: %d handshakes, %d sources counted", n, m)
	}
}

func TestHandshakeSlotsUncapped(t *testing.T) {
	a := newController(t, Config{MaxHandshakes: 100})
	ip := netip.MustParseAddr("192.0.2.1")
	for range 100 {
		if _, err := a.StartHandshake(ip); err != nil {
			t.Fatal(err)
		}
	}
	if a.perSource != nil {
		t.Fatal("per-source counts kept without a per-source cap")
	}
}

func newController(t *testing.T, cfg Config) *Controller {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// MaxConnsPerIP counts an IPv6 /64 as one source, like the handshake
// slots: a host that rotates addresses in its /64 gets no more.
func TestConnsPerSourceIPv6(t *testing.T) {
	a, err := New(Config{MaxConnsPerIP: 2})
	if err != nil {
		t.Fatal(err)
	}
	admit := func(ip string) (Ticket, error) {
		tk, _, refusal := a.Admit(&Request{IP: netip.MustParseAddr(ip)})
		return tk, refusal
	}
	t1, err1 := admit("2001:db8:1:2::1")
	_, err2 := admit("2001:db8:1:2::2")
	_, err3 := admit("2001:db8:1:2::3") // same /64: over the cap
	_, err4 := admit("2001:db8:1:3::1") // another /64
	if err1 != nil || err2 != nil || err4 != nil || !errors.Is(err3, ErrPerIP) {
		t.Fatalf("admissions: %v %v %v %v; want the third refused with ErrPerIP only", err1, err2, err3, err4)
	}
	a.Release(t1)
	if _, err := admit("2001:db8:1:2::4"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if got := a.Admitted(); got != 3 {
		t.Fatalf("admitted %d, want 3", got)
	}
}
