package broadcast

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

// JWTAuthenticator returns a Config.Authenticate that accepts HS256 JSON
// Web Tokens signed with secret. Expiry (exp) and not-before (nbf) are
// checked when present, with 30 seconds of clock skew allowed.
func JWTAuthenticator(secret []byte) func(token string) error {
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithLeeway(30*time.Second))
	key := func(*jwt.Token) (any, error) { return secret, nil }
	return func(token string) error {
		if token == "" {
			return errors.New("no token")
		}
		if _, err := parser.Parse(token, key); err != nil {
			return err
		}
		return nil
	}
}

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

// bearer extracts the token of an "Authorization: Bearer <token>" value.
func bearer(v string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// PublishHandler serves POST /publish: the body is the message, sent as a
// binary frame for Content-Type application/octet-stream and as text
// otherwise. The caller must present one of keys as a bearer token. It
// answers 202 with {"recipients": n}; 401 without a key, 403 with a wrong
// one (or when keys is empty: publishing is then disabled), 413 over
// MaxMessage, 400 for a text body that is not UTF-8, 503 when the server
// cannot take it (backlog full, shutting down). Every refusal says why.
func (s *Server) PublishHandler(keys []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			publishError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		tok := bearer(r.Header.Get("Authorization"))
		switch {
		case len(keys) == 0:
			publishError(w, http.StatusForbidden, "publishing is disabled: no publish keys configured")
			return
		case tok == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="fanout publish"`)
			publishError(w, http.StatusUnauthorized, "missing bearer token")
			return
		case !keyMatches(keys, tok):
			publishError(w, http.StatusForbidden, "unknown publish key")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxMessage)))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				publishError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message over %d bytes", s.cfg.MaxMessage))
				return
			}
			publishError(w, http.StatusBadRequest, "reading body: "+err.Error())
			return
		}
		op := ws.OpText
		if ct := r.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "application/octet-stream") {
			op = ws.OpBinary
		} else if !utf8.Valid(body) {
			publishError(w, http.StatusBadRequest, "text message is not valid UTF-8 (send binary as application/octet-stream)")
			return
		}
		n, err := s.Publish(op, body)
		switch {
		case errors.Is(err, ErrBacklog), errors.Is(err, ErrServerClosed), errors.Is(err, ErrBus):
			w.Header().Set("Retry-After", "1")
			publishError(w, http.StatusServiceUnavailable, err.Error())
			return
		case err != nil:
			publishError(w, http.StatusBadRequest, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(map[string]int{"recipients": n})
	})
}

func keyMatches(keys []string, tok string) bool {
	ok := 0
	for _, k := range keys {
		ok |= subtle.ConstantTimeCompare([]byte(k), []byte(tok))
	}
	return ok == 1
}

func publishError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
