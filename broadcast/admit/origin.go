package admit

import (
	"net/url"
	"strings"
)

// originAllowed applies Config.Origins to a request's Origin and Host.
// No Origin (not a browser) is allowed. With no allow-list, only an
// Origin naming the host the request was sent to is. List entries are a
// full origin ("https://app.example.com"), a host ("app.example.com"), a
// wildcard for subdomains ("*.example.com"), or "*" for any.
func originAllowed(allow []string, origin, host string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(allow) == 0 {
		return strings.EqualFold(u.Host, host)
	}
	hostname := strings.ToLower(u.Hostname())
	for _, a := range allow {
		a = strings.ToLower(strings.TrimSpace(a))
		switch {
		case a == "*":
			return true
		case strings.Contains(a, "://"):
			if strings.EqualFold(strings.TrimSuffix(a, "/"), strings.ToLower(u.Scheme+"://"+u.Host)) {
				return true
			}
		case strings.HasPrefix(a, "*."):
			if strings.HasSuffix(hostname, a[1:]) && len(hostname) > len(a)-1 {
				return true
			}
		case hostname == a:
			return true
		}
	}
	return false
}
