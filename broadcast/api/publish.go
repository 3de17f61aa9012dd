package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/fanout/fanout/broadcast"
	"github.com/fanout/fanout/broadcast/hub"
)

// Publisher is what POST /publish needs of a server: *broadcast.Server is
// one. Publish returns what it did, or one of the broadcast package's
// errors. It must not keep the payload once it returns (the handler reuses
// the buffer): *broadcast.Server copies it into the message's frame, or
// into the bus's buffer.
type Publisher interface {
	Publish(m broadcast.Message) (broadcast.Receipt, error)
}

// PublishHandler serves POST /publish[?channel=NAME]: the body is the
// message, published on that channel (none: the default channel). Its
// Content-Type says its kind: application/json a JSON value (validated;
// json-format clients get it as "data" itself), application/octet-stream
// binary, anything else UTF-8 text. The caller must present one of keys
// as a bearer token (the comparison takes the same time whatever the
// token). An Idempotency-Key header makes a repeat within the server's
// window answer the first publish's receipt (with Idempotency-Replayed:
// true) and publish nothing.
//
// It answers 202 {"channel":..,"seq":..,"epoch":..,"recipients":..}; 405
// for another method; 401 without a key, 403 with a wrong one (or when
// keys is empty: publishing is then disabled); 413 over maxMessage bytes;
// 400 for a body that is not what its type says, or a bad channel name;
// 503 with Retry-After when p cannot take it now (broadcast.ErrBacklog,
// ErrServerClosed, ErrBus). Every refusal is a JSON {"error": "..."} that
// says why.
//
// A body of Content-Type application/x-ndjson is a batch: every line (LF
// ends one; a CR before it is dropped; blank lines are skipped) is one
// text message, published in this order (one Publish each), on the one
// channel. This is how a backend gets several messages in per round trip,
// as a WebSocket client does by writing frames without waiting. The body
// as a whole is still at most maxMessage bytes. A batch that is not UTF-8
// or holds no message is refused whole (400). The answer says how many
// went in: 202 {"recipients": n, "published": k, "seq": last, ...} with k
// the number of lines; a refusal by p partway (503 with Retry-After, as
// above) is {"error": "...", "published": k}, the first k lines published
// and the rest to be sent again. (POST /publish/batch takes JSON items for
// several channels: BatchHandler.)
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
	keys []string  // bearer keys; none disables publishing
	max  int       // largest body, bytes
	bufs sync.Pool // *publishBuf, reused across requests
}

// publishBuf is one request's memory: its body, then its answer; and a
// batch's lines (slices of the body).
type publishBuf struct {
	b     []byte
	lines [][]byte
}

// keepBuf is the largest body buffer kept for the next request (room for
// the default 64 KiB message, in its allocation size class); a larger one
// is left to the garbage collector.
const keepBuf = 128 << 10

// Header values set on every answer, shared: net/http only reads them.
var (
	jsonType   = []string{"application/json"}
	retryAfter = []string{"1"}
	replayed   = []string{"true"}
)

// Media types of a request body.
const (
	typeBinary = "application/octet-stream"
	typeBatch  = "application/x-ndjson"
	typeJSON   = "application/json"
)

func (h *publishHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !postAuthorized(w, r, h.keys) {
		return
	}
	buf, _ := h.bufs.Get().(*publishBuf)
	if buf == nil {
		buf = &publishBuf{}
	}
	defer h.putBuf(buf)
	if !h.readBody(w, r, buf) {
		return
	}
	m := broadcast.Message{Channel: r.URL.Query().Get("channel"), Kind: broadcast.KindText,
		IdempotencyKey: r.Header.Get("Idempotency-Key")}
	ct := r.Header.Get("Content-Type")
	switch {
	case mediaType(ct, typeBatch):
		if m.IdempotencyKey != "" {
			writeError(w, http.StatusBadRequest, "Idempotency-Key is for one message: an NDJSON batch takes none (POST /publish/batch takes one per item)")
			return
		}
		h.serveBatch(w, buf, m.Channel)
		return
	case mediaType(ct, typeJSON):
		m.Kind = broadcast.KindJSON
	case hasPrefixFold(ct, typeBinary):
		m.Kind = broadcast.KindBinary
	case !utf8.Valid(buf.b):
		writeError(w, http.StatusBadRequest, "text message is not valid UTF-8 (send binary as application/octet-stream)")
		return
	}
	m.Payload = buf.b
	rc, err := h.p.Publish(m)
	if err != nil {
		refuse(w, err, -1)
		return
	}
	if rc.Repeat {
		w.Header()["Idempotency-Replayed"] = replayed
	}
	accepted(w, buf, rc, -1)
}

// postAuthorized is authorized for a POST: any other method gets 405.
func postAuthorized(w http.ResponseWriter, r *http.Request, keys []string) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "use POST")
		return false
	}
	return authorized(w, r, keys)
}

// authorized checks the request's bearer token against keys; when it is
// not one of them, it answers and returns false.
func authorized(w http.ResponseWriter, r *http.Request, keys []string) bool {
	tok := bearer(r.Header.Get("Authorization"))
	switch {
	case len(keys) == 0:
		writeError(w, http.StatusForbidden, "publishing is disabled: no publish keys configured")
		return false
	case tok == "":
		w.Header().Set("WWW-Authenticate", `Bearer realm="fanout publish"`)
		writeError(w, http.StatusUnauthorized, "missing bearer token")
		return false
	case !keyMatches(keys, tok):
		writeError(w, http.StatusForbidden, "unknown publish key")
		return false
	}
	return true
}

// readBody reads the request's body into buf.b; when it cannot, it
// answers and returns false. A body that says its length is read in one
// buffer of that size, without a limit reader (net/http already stops at
// the length); a chunked one through http.MaxBytesReader.
func (h *publishHandler) readBody(w http.ResponseWriter, r *http.Request, buf *publishBuf) bool {
	body := r.Body
	b := buf.b[:0]
	switch cl := r.ContentLength; {
	case cl > int64(h.max):
		h.tooBig(w)
		return false
	case cl >= 0:
		b = slices.Grow(b, int(cl)+1) // +1: the read that sees EOF needs room too
	default:
		body = http.MaxBytesReader(w, r.Body, int64(h.max))
		b = slices.Grow(b, 512)
	}
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, len(b))
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			buf.b = b
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				h.tooBig(w)
				return false
			}
			writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
			return false
		}
	}
	buf.b = b
	if len(b) > h.max { // a body longer than it said: not from net/http's server
		h.tooBig(w)
		return false
	}
	return true
}

func (h *publishHandler) tooBig(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("message over %d bytes", h.max))
}

func (h *publishHandler) putBuf(buf *publishBuf) {
	if cap(buf.b) > keepBuf {
		return
	}
	clear(buf.lines) // the lines point into the body
	buf.b, buf.lines = buf.b[:0], buf.lines[:0]
	h.bufs.Put(buf)
}

// serveBatch publishes the lines of buf.b, an application/x-ndjson body, on
// channel.
func (h *publishHandler) serveBatch(w http.ResponseWriter, buf *publishBuf, channel string) {
	if !utf8.Valid(buf.b) { // line by line is the same: '\n' is never inside a UTF-8 sequence
		writeError(w, http.StatusBadRequest, "batch is not valid UTF-8 (every line is a text message)")
		return
	}
	lines := buf.lines[:0]
	for rest := buf.b; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) > 0 {
			lines = append(lines, line)
		}
	}
	buf.lines = lines
	if len(lines) == 0 {
		writeError(w, http.StatusBadRequest, "empty batch: an application/x-ndjson body holds one message per line")
		return
	}
	var rc broadcast.Receipt
	var published int
	var err error
	for _, line := range lines {
		if rc, err = h.p.Publish(broadcast.Message{Channel: channel, Kind: broadcast.KindText, Payload: line}); err != nil {
			break
		}
		published++
	}
	if err != nil {
		refuse(w, err, published)
		return
	}
	accepted(w, buf, rc, published)
}

// accepted answers 202 with the receipt, {"channel": .., "seq": ..,
// "epoch": .., "recipients": n}, and "published" when it is a batch's
// count (published ≥ 0), in the bytes json.Encoder would write; seq is
// left out in a tier (0: the bus gives it). The answer is built in buf's
// body, which was published already: no allocation.
func accepted(w http.ResponseWriter, buf *publishBuf, rc broadcast.Receipt, published int) {
	b := appendReceipt(buf.b[:0], rc)
	if published >= 0 {
		b = append(b[:len(b)-1], `,"published":`...)
		b = strconv.AppendInt(b, int64(published), 10)
		b = append(b, '}')
	}
	b = append(b, '\n')
	buf.b = b
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

// appendReceipt appends rc as a JSON object.
func appendReceipt(b []byte, rc broadcast.Receipt) []byte {
	b = append(b, `{"channel":`...)
	b = hub.AppendJSONString(b, rc.Channel)
	if rc.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, rc.Seq, 10)
	}
	b = append(b, `,"epoch":`...)
	b = hub.AppendJSONString(b, rc.Epoch)
	b = append(b, `,"recipients":`...)
	b = strconv.AppendInt(b, int64(rc.Recipients), 10)
	return append(b, '}')
}

// refuse answers a refusal by the Publisher: 503 with Retry-After for what
// may pass later, 413 or 400 for what never will. published ≥ 0 is a
// batch's count of messages published before it.
func refuse(w http.ResponseWriter, err error, published int) {
	code := refusalStatus(err)
	if code == http.StatusServiceUnavailable {
		w.Header()["Retry-After"] = retryAfter
	}
	if published < 0 {
		writeError(w, code, err.Error())
		return
	}
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error     string `json:"error"`
		Published int    `json:"published"`
	}{err.Error(), published})
}

// refusalStatus is the HTTP status of a Publisher's refusal: 503 for what
// may pass later, 413 or 400 for what never will.
func refusalStatus(err error) int {
	switch {
	case errors.Is(err, broadcast.ErrBacklog), errors.Is(err, broadcast.ErrServerClosed), errors.Is(err, broadcast.ErrBus):
		return http.StatusServiceUnavailable
	case errors.Is(err, broadcast.ErrTooBig):
		// Only when maxMessage is above the server's own limit.
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest // not UTF-8, not JSON, a bad channel or key
}

// mediaType reports whether the Content-Type value ct names the media
// type want (which is lowercase), whatever its parameters and case.
func mediaType(ct, want string) bool {
	t, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(t), want)
}

// hasPrefixFold is strings.HasPrefix(strings.ToLower(s), prefix) for a
// lowercase prefix, without the copy.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
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
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
