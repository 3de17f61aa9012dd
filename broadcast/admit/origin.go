package admit

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// The Origin check. A request without Origin is not from a browser and is
// allowed: the check stops web pages of other sites from using a
// visitor's browser, nothing else. The Host header proves nothing (a
// DNS-rebinding page sends Host and Origin that agree), so it is never
// compared with. What is allowed:
//
//   - with no allow-list, pages served from loopback: http(s)://localhost,
//     127.0.0.0/8 and [::1], any port (development, and a proxy on the
//     same machine);
//   - with one, its entries instead: full origins ("https://app.example.com",
//     scheme and port compared; a default port may be left out), host
//     names (any scheme and port), subdomain wildcards ("*.example.com")
//     or "*";
//   - either way, the public host (Config.PublicHost), a full origin or a
//     host name: the server's own pages.

// originPolicy is Config.Origins and Config.PublicHost, compiled once.
type originPolicy struct {
	loopback bool                // no allow-list: pages served from loopback
	any      bool                // "*"
	origins  map[string]struct{} // full origins as "scheme://host:port"
	hosts    map[string]struct{} // host names, any scheme and port
	suffixes []string            // ".example.com" for "*.example.com"
}

// CheckOrigins returns an error for the first entry of an Origin
// allow-list (Config.Origins) that New would refuse.
func CheckOrigins(allow []string) error {
	_, err := compileOrigins(allow, "")
	return err
}

// CheckPublicHost returns an error if New would refuse h as
// Config.PublicHost.
func CheckPublicHost(h string) error {
	_, err := compileOrigins(nil, h)
	return err
}

func compileOrigins(allow []string, publicHost string) (*originPolicy, error) {
	p := &originPolicy{loopback: len(allow) == 0, origins: map[string]struct{}{}, hosts: map[string]struct{}{}}
	for _, e := range allow {
		if err := p.add(strings.TrimSpace(e), true); err != nil {
			return nil, fmt.Errorf("admit: origin %q: %w", e, err)
		}
	}
	if publicHost = strings.TrimSpace(publicHost); publicHost != "" {
		if err := p.add(publicHost, false); err != nil {
			return nil, fmt.Errorf("admit: public host %q: %w", publicHost, err)
		}
	}
	return p, nil
}

func (p *originPolicy) add(e string, wildcards bool) error {
	e = strings.ToLower(e)
	switch {
	case e == "*" && wildcards:
		p.any = true
	case strings.Contains(e, "://"):
		key, ok := originKey(e)
		if !ok {
			return errors.New("want scheme://host[:port] and nothing after it")
		}
		p.origins[key] = struct{}{}
	case strings.HasPrefix(e, "*.") && wildcards:
		h, err := hostEntry(e[2:])
		if err != nil {
			return err
		}
		p.suffixes = append(p.suffixes, "."+h)
	default:
		h, err := hostEntry(e)
		if err != nil {
			return err
		}
		p.hosts[h] = struct{}{}
	}
	return nil
}

// hostEntry checks a host-name entry and returns it as compared.
func hostEntry(e string) (string, error) {
	h := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(e, "["), "."), "]")
	switch {
	case h == "" || strings.ContainsAny(h, "/?#@*% "):
		return "", errors.New("want a host name, *.domain, * or a full origin")
	case strings.Contains(h, ":"):
		if _, err := netip.ParseAddr(h); err == nil {
			return h, nil // an IPv6 literal
		}
		return "", errors.New("a host name entry matches any port: to name one, write the full origin (https://host:port)")
	}
	return h, nil
}

// allowed applies the policy to a request's Origin header.
func (p *originPolicy) allowed(origin string) bool {
	if origin == "" {
		return true // not a browser
	}
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil {
		return false // "null", among others
	}
	host := strings.TrimSuffix(u.Hostname(), ".")
	switch {
	case p.any:
		return true
	case p.loopback && isLoopback(u.Scheme, host):
		return true
	}
	if _, ok := p.hosts[host]; ok {
		return true
	}
	if _, ok := p.origins[u.Scheme+"://"+hostPort(host, u.Port(), u.Scheme)]; ok {
		return true
	}
	for _, s := range p.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// originKey normalizes a full origin: lower case, the scheme's default
// port spelt out, no trailing dot; false if it is more than an origin.
func originKey(o string) (string, bool) {
	u, err := url.Parse(strings.ToLower(o))
	if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		(u.Path != "" && u.Path != "/") {
		return "", false
	}
	return u.Scheme + "://" + hostPort(strings.TrimSuffix(u.Hostname(), "."), u.Port(), u.Scheme), true
}

func hostPort(host, port, scheme string) string {
	if port == "" {
		switch scheme {
		case "http", "ws":
			port = "80"
		case "https", "wss":
			port = "443"
		}
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + port
}

// isLoopback reports whether a page's scheme and host say it was served
// from this machine's loopback.
func isLoopback(scheme, host string) bool {
	if scheme != "http" && scheme != "https" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
