package api

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

	"github.com/fanout/fanout/broadcast"
)

// Publisher is what POST /publish needs of a server: *broadcast.Server is
// one. Publish returns the number of local recipients, or one of the
// broadcast package's errors.
type Publisher interface {
	Publish(op ws.OpCode, payload []byte) (recipients int, err error)
}

// PublishHandler serves POST /publish: the body is the message, sent as a
// binary frame for Content-Type application/octet-stream and as text
// otherwise. The caller must present one of keys as a bearer token (the
// comparison takes the same time whatever the token). It answers 202 with
// {"recipients": n}; 405 for another method; 401 without a key, 403 with
// a wrong one (or when keys is empty: publishing is then disabled); 413
// over maxMessage bytes; 400 for a text body that is not UTF-8; 503 with
// Retry-After when p cannot take it now (broadcast.ErrBacklog,
// ErrServerClosed, ErrBus). Every refusal is a JSON {"error": "..."} that
// says why.
//
// maxMessage should be the server's Config.MaxMessage; zero means
// broadcast.DefaultConfig().MaxMessage.
func PublishHandler(p Publisher, keys []string, maxMessage int) http.Handler {
	if maxMessage <= 0 {
		maxMessage = broadcast.DefaultConfig().MaxMessage
	}
	return &publishHandler{p: p, keys: append([]string(nil), keys...), max: maxMessage}
}

type publishHandler struct {
	p    Publisher
	keys []string // bearer keys; none disables publishing
	max  int      // largest body, bytes
}

func (h *publishHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	tok := bearer(r.Header.Get("Authorization"))
	switch {
	case len(h.keys) == 0:
		writeError(w, http.StatusForbidden, "publishing is disabled: no publish keys configured")
		return
	case tok == "":
		w.Header().Set("WWW-Authenticate", `Bearer realm="fanout publish"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token")
		return
	case !keyMatches(h.keys, tok):
		writeError(w, http.StatusForbidden, "unknown publish key")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.max)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message over %d bytes", h.max))
			return
		}
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	op := ws.OpText
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "application/octet-stream") {
		op = ws.OpBinary
	} else if !utf8.Valid(body) {
		writeError(w, http.StatusBadRequest, "text message is not valid UTF-8 (send binary as application/octet-stream)")
		return
	}
	n, err := h.p.Publish(op, body)
	switch {
	case errors.Is(err, broadcast.ErrBacklog), errors.Is(err, broadcast.ErrServerClosed), errors.Is(err, broadcast.ErrBus):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, broadcast.ErrTooBig):
		// Only when maxMessage is above the server's own limit.
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]int{"recipients": n})
}

// bearer extracts the token of an "Authorization: Bearer <token>" value.
// (The broadcast package has its own for upgrade tokens: the two read the
// same header of different requests.)
func bearer(v string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// keyMatches compares tok with every key in constant time, so the time
// taken says nothing about which key, or how much of one, matched.
func keyMatches(keys []string, tok string) bool {
	ok := 0
	for _, k := range keys {
		ok |= subtle.ConstantTimeCompare([]byte(k), []byte(tok))
	}
	return ok == 1
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
