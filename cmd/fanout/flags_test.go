package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"net/http"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/fanout/fanout/broadcast"
)

// With no flag and no environment, the server's Config is
// broadcast.DefaultConfig: the flags add no defaults of their own.
func TestFlagDefaultsAreDefaultConfig(t *testing.T) {
	o, err := parseFlags(nil, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, want := o.cfg, broadcast.DefaultConfig()
	got.Logger, want.Logger = nil, nil // run sets its own
	if !got.Demo {
		t.Fatal("no -demo on the default -addr, a loopback one: want the demo page on")
	}
	got.Demo = false // the command's own default, from -addr (TestDemoFlag); a library's server has none
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("flags give\n%+v\nDefaultConfig is\n%+v", got, want)
	}
}

// readmeFlags returns the rows of README.md's "## Flags" table: flag name
// (without the dash) → the default cell as written.
func readmeFlags(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]string{}
	in := false
	row := regexp.MustCompile("^\\| `-([a-z0-9-]+)` \\| ([^|]+) \\|")
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Flags"
			continue
		}
		if m := row.FindStringSubmatch(line); in && m != nil {
			if _, dup := rows[m[1]]; dup {
				t.Errorf("README lists -%s twice", m[1])
			}
			rows[m[1]] = strings.TrimSpace(m[2])
		}
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no "## Flags" table rows`)
	}
	return rows
}

// readmeDefault reads a default cell: "empty" is "", otherwise the
// leading `literal` ("`0` = max(8, 4×GOMAXPROCS)", "`0` (none)").
func readmeDefault(cell string) (string, bool) {
	if cell == "empty" {
		return "", true
	}
	m := regexp.MustCompile("^`([^`]*)`").FindStringSubmatch(cell)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// The README's flag table and the flags agree: every flag -help lists
// has a row, every row is a flag, and each row's default is the flag's.
// A literal matches when it is the flag's DefValue as printed, or when
// setting the flag to it gives that value (the README writes `0` for a
// zero duration, which the flag prints as 0s).
func TestREADMEFlagsTable(t *testing.T) {
	rows := readmeFlags(t)
	var help bytes.Buffer
	if code := run([]string{"-help"}, noEnv, io.Discard, &help); code != 0 {
		t.Fatalf("-help: exit %d", code)
	}
	listed := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1)
	fs := defineFlags(defaults())
	if n := countFlags(fs); len(listed) != n {
		t.Fatalf("-help lists %d flags, the set has %d", len(listed), n)
	}
	seen := map[string]bool{}
	for _, m := range listed {
		f := fs.Lookup(m[1])
		seen[f.Name] = true
		cell, ok := rows[f.Name]
		if !ok {
			t.Errorf("README's Flags table has no row for -%s (default %q)", f.Name, f.DefValue)
			continue
		}
		lit, ok := readmeDefault(cell)
		if !ok {
			t.Errorf("README -%s: default %q is neither `literal` nor empty", f.Name, cell)
			continue
		}
		if lit == f.DefValue {
			continue
		}
		probe := defineFlags(defaults())
		if err := probe.Set(f.Name, lit); err != nil || probe.Lookup(f.Name).Value.String() != f.DefValue {
			t.Errorf("README -%s: default %q, the flag's is %q", f.Name, lit, f.DefValue)
		}
	}
	for name := range rows {
		if !seen[name] {
			t.Errorf("README's Flags table lists -%s, which -help does not", name)
		}
	}
}

func countFlags(fs *flag.FlagSet) int {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n
}

// -max-handshakes-per-ip 0 is "no cap" (the Config's negative), not the
// Config's zero (the default); -handshake-first-byte-timeout goes through.
func TestHandshakeFlags(t *testing.T) {
	o, err := parseFlags([]string{"-max-handshakes-per-ip", "0", "-handshake-first-byte-timeout", "-1s"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.MaxHandshakesPerIP >= 0 || o.cfg.HandshakeFirstByteTimeout >= 0 {
		t.Fatalf("per-ip %d, first-byte %s; want both disabled (negative)", o.cfg.MaxHandshakesPerIP, o.cfg.HandshakeFirstByteTimeout)
	}
	if o, err = parseFlags([]string{"-max-handshakes-per-ip", "8", "-handshake-first-byte-timeout", "500ms"}, noEnv, io.Discard); err != nil {
		t.Fatal(err)
	}
	if o.cfg.MaxHandshakesPerIP != 8 || o.cfg.HandshakeFirstByteTimeout != 500*time.Millisecond {
		t.Fatalf("per-ip %d, first-byte %s", o.cfg.MaxHandshakesPerIP, o.cfg.HandshakeFirstByteTimeout)
	}
}

func TestOriginFlags(t *testing.T) {
	o, err := parseFlags([]string{"-origins", " https://app.example.com, ,*.example.org", "-public-host", "https://fanout.example.com"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://app.example.com", "*.example.org"}; !reflect.DeepEqual(o.cfg.Origins, want) || o.cfg.PublicHost != "https://fanout.example.com" {
		t.Fatalf("origins %q, public host %q", o.cfg.Origins, o.cfg.PublicHost)
	}
}

// -auth-audience and -auth-issuer reach the authenticator; without a
// secret they would check nothing, so they are refused alone.
func TestAuthClaimFlags(t *testing.T) {
	secret := strings.Repeat("k", 32)
	o, err := parseFlags([]string{"-auth-secret", secret, "-auth-audience", "fanout", "-auth-issuer", "https://auth.example"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	sign := func(claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if got, err := o.cfg.Authenticate(sign(jwt.MapClaims{"exp": exp.Unix(), "aud": "fanout", "iss": "https://auth.example"})); err != nil || got.Expires.Unix() < exp.Unix() {
		t.Fatalf("valid token: expires %v, %v", got, err)
	}
	for name, claims := range map[string]jwt.MapClaims{
		"wrong aud": {"exp": exp.Unix(), "aud": "api", "iss": "https://auth.example"},
		"wrong iss": {"exp": exp.Unix(), "aud": "fanout", "iss": "https://evil.example"},
		"no exp":    {"aud": "fanout", "iss": "https://auth.example"},
	} {
		if _, err := o.cfg.Authenticate(sign(claims)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if code := run([]string{"-auth-audience", "fanout"}, noEnv, io.Discard, io.Discard); code != 2 {
		t.Fatalf("-auth-audience without a secret: exit %d, want 2", code)
	}
}

// -subprotocols reaches the Config as a list, blanks dropped; empty is
// none (the Config's zero).
func TestSubprotocolsFlag(t *testing.T) {
	o, err := parseFlags([]string{"-subprotocols", " chat, ,graphql-transport-ws"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"chat", "graphql-transport-ws"}; !reflect.DeepEqual(o.cfg.Subprotocols, want) {
		t.Fatalf("subprotocols %q, want %q", o.cfg.Subprotocols, want)
	}
}

// -demo as given wins; unset, it is on only for a loopback -addr, and
// only where / is not the WebSocket or SSE path. An empty FANOUT_DEMO
// sets nothing, as every empty variable.
func TestDemoFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want bool
	}{
		{nil, nil, true},
		{[]string{"-addr", "localhost:9000"}, nil, true},
		{[]string{"-addr", "[::1]:0"}, nil, true},
		{[]string{"-addr", "127.0.0.5:0"}, nil, true},
		{[]string{"-addr", "0.0.0.0:8080"}, nil, false},
		{[]string{"-addr", ":8080"}, nil, false},
		{[]string{"-addr", "192.0.2.1:8080"}, nil, false},
		{[]string{"-addr", "0.0.0.0:8080", "-demo"}, nil, true},
		{[]string{"-addr", "0.0.0.0:8080", "-demo=true"}, nil, true},
		{[]string{"-demo=false"}, nil, false},
		{nil, []string{"FANOUT_DEMO=false"}, false},
		{[]string{"-addr", ":8080"}, []string{"FANOUT_DEMO=true"}, true},
		{[]string{"-addr", ":8080"}, []string{"FANOUT_DEMO="}, false},
		{[]string{"-demo"}, []string{"FANOUT_DEMO=false"}, true}, // the command line wins
		{[]string{"-path", "/"}, nil, false},
		{[]string{"-sse-path", "/"}, nil, false},
		{[]string{"-sse-path", "/", "-sse=false", "-demo"}, nil, true},
		{[]string{"-proxy-protocol", "127.0.0.1"}, nil, false}, // behind a balancer on this host: the port is everyone's
		{[]string{"-proxy-protocol", "127.0.0.1", "-demo"}, nil, true},
	} {
		o, err := parseFlags(tc.args, tc.env, io.Discard)
		if err != nil {
			t.Errorf("%q %q: %v", tc.args, tc.env, err)
			continue
		}
		if o.cfg.Demo != tc.want {
			t.Errorf("%q %q: Demo %v, want %v", tc.args, tc.env, o.cfg.Demo, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-path", "/", "-demo"}, nil, "-demo: the demo page is served at /, which is -path too: set -demo=false, or another -path"},
		{[]string{"-sse-path", "/"}, []string{"FANOUT_DEMO=1"}, "FANOUT_DEMO: the demo page is served at /, which is -sse-path too"},
		{[]string{"-demo=maybe"}, nil, `-demo: "maybe" is not a boolean: want true or false (-demo alone means true)`},
		{nil, []string{"FANOUT_DEMO=yes"}, `FANOUT_DEMO: "yes" is not a boolean`},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, tc.env, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q %q: exit %d, %q; want 2 and %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
}

// The binary serves the demo page where its ready line says, on its
// loopback -addr; -demo=false leaves / a 404.
func TestDemoPageServed(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
	}{
		{nil, http.StatusOK},
		{[]string{"-demo=false"}, http.StatusNotFound},
	} {
		_, line := startFanoutReady(t, nil, tc.args...)
		ws := regexp.MustCompile(` ws=ws://(\S+)/ws `).FindStringSubmatch(line)
		demo := regexp.MustCompile(` demo=(\S+)`).FindStringSubmatch(line)
		if ws == nil || demo == nil {
			t.Fatalf("%q: ready line %q", tc.args, line)
		}
		url, want := "http://"+ws[1]+"/", "http://"+ws[1]+"/"
		if tc.status != http.StatusOK {
			want = "off"
		}
		if demo[1] != want {
			t.Fatalf("%q: the ready line says demo=%s, want %s", tc.args, demo[1], want)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || (tc.status == http.StatusOK && resp.Header.Get("Content-Type") != "text/html; charset=utf-8") {
			t.Fatalf("%q: GET / %d %q, want %d", tc.args, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status)
		}
	}
}

// -proxy-protocol reaches the Config as prefixes: CIDRs masked, single
// addresses as /32 or /128, IPv4-mapped ones as IPv4; from the
// environment too. What is not an address is an error naming what was
// set (its exit 2: TestBadFlagsExit2).
func TestProxyProtocolFlag(t *testing.T) {
	o, err := parseFlags([]string{"-proxy-protocol", " 10.0.0.9/24, ,192.0.2.7,::ffff:198.51.100.1,2001:db8::/32"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("198.51.100.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	if !reflect.DeepEqual(o.cfg.ProxyProtocol, want) {
		t.Fatalf("trusted %v, want %v", o.cfg.ProxyProtocol, want)
	}
	if o, err = parseFlags(nil, mapEnv(map[string]string{"FANOUT_PROXY_PROTOCOL": "127.0.0.1"}), io.Discard); err != nil || len(o.cfg.ProxyProtocol) != 1 {
		t.Fatalf("from the environment: %v %v", o, err)
	}
	if o, err = parseFlags(nil, noEnv, io.Discard); err != nil || o.cfg.ProxyProtocol != nil {
		t.Fatalf("default: %v %v, want none trusted", o.cfg.ProxyProtocol, err)
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-proxy-protocol", "10.0.0.300/8"}, nil, `-proxy-protocol: "10.0.0.300/8" is not a CIDR or an address`},
		{[]string{"-proxy-protocol", "lb.example.com"}, nil, `-proxy-protocol: "lb.example.com" is not a CIDR`},
		{[]string{"-proxy-protocol", "fe80::1%eth0"}, nil, `"fe80::1%eth0" is not a CIDR`},
		{nil, map[string]string{"FANOUT_PROXY_PROTOCOL": "10.0.0.0/33"}, `FANOUT_PROXY_PROTOCOL: "10.0.0.0/33" is not a CIDR`},
	} {
		// parseFlags, not run: a value taken by mistake would serve forever.
		if _, err := parseFlags(tc.args, mapEnv(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: %v; want an error with %q", tc.args, tc.env, err, tc.want)
		}
	}
}
