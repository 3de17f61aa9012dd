package admit

import "testing"

func TestOriginPolicy(t *testing.T) {
	for _, tc := range []struct {
		allow      []string
		publicHost string
		origin     string
		want       bool
	}{
		{nil, "", "", true}, // not a browser
		{nil, "", "http://localhost", true},
		{nil, "", "https://localhost.:8443", true},
		{nil, "", "http://127.0.0.1:8080", true},
		{nil, "", "http://[::ffff:127.0.0.1]", true},
		{nil, "", "http://[::1]", true},
		{nil, "", "null", false},
		{nil, "", "file://", false},
		{nil, "", "chrome-extension://abcdef", false},
		{nil, "", "http://user@localhost", false},
		{nil, "", "http://evil.example", false},
		{nil, "evil.example", "http://evil.example", true}, // named public host
		{nil, "https://a.example", "https://a.example:443/", true},
		{nil, "https://a.example", "wss://a.example", false},
		{[]string{"*"}, "", "http://anything.example", true},
		{[]string{"*"}, "", "null", false}, // an opaque origin is no origin
		{[]string{"https://a.example:8443"}, "", "https://A.Example:8443", true},
		{[]string{"https://a.example"}, "", "https://a.example:80", false},
		{[]string{"http://a.example"}, "", "http://a.example:80", true},
		{[]string{"*.example.org"}, "", "https://x.example.org", true},
		{[]string{"*.example.org"}, "", "https://example.org", false},
		{[]string{"*.example.org"}, "", "https://badexample.org", false},
		{[]string{"[::1]"}, "", "http://[::1]:9", true},
		{[]string{"app.example"}, "", "http://localhost", false}, // the list replaces loopback
	} {
		p, err := compileOrigins(tc.allow, tc.publicHost)
		if err != nil {
			t.Fatalf("%q %q: %v", tc.allow, tc.publicHost, err)
		}
		if got := p.allowed(tc.origin); got != tc.want {
			t.Errorf("allow %q, public host %q, Origin %q: %v, want %v", tc.allow, tc.publicHost, tc.origin, got, tc.want)
		}
	}
}

// Entries that could never match are refused when the Controller is made
// (and by CheckOrigins, for the command line), not left to refuse
// everyone quietly.
func TestOriginEntriesChecked(t *testing.T) {
	for _, e := range []string{"app.example.com:8443", "https://a.example/path", "https://", "*.", "", "a b", "https://a.example?x"} {
		if CheckOrigins([]string{e}) == nil {
			t.Errorf("origin entry %q accepted", e)
		}
		if _, err := New(Config{Origins: []string{"ok.example", e}}); err == nil {
			t.Errorf("New with origin entry %q: no error", e)
		}
	}
	for _, h := range []string{"*", "*.example.com", "fanout.example.com:443", "https://fanout.example.com/ws"} {
		if CheckPublicHost(h) == nil {
			t.Errorf("public host %q accepted", h)
		}
	}
	for _, h := range []string{"", "fanout.example.com", "https://fanout.example.com", "http://10.0.0.1:8080", "[2001:db8::1]"} {
		if err := CheckPublicHost(h); err != nil {
			t.Errorf("public host %q: %v", h, err)
		}
	}
}
