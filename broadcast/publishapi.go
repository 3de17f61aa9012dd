package broadcast

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/admit"
)

// PublishHandler serves POST /publish. Deprecated: moving to broadcast/api.
func (s *Server) PublishHandler(keys []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			publishError(w, http.StatusMethodNotAllowed, "use POST")
			return
		}
		tok := admit.Bearer(r.Header.Get("Authorization"))
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
