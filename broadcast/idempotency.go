package broadcast

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanout/fanout/broadcast/internal/lograte"
)

// MaxIdempotencyKey is the longest idempotency key, in bytes.
const MaxIdempotencyKey = 256

// ErrIdempotencyKey: a key over MaxIdempotencyKey bytes.
var ErrIdempotencyKey = errors.New("broadcast: idempotency key over 256 bytes")

// idempotency remembers the receipts of keyed publishes for a window, so a
// backend that retries (its request timed out, its answer was lost) does
// not publish twice. At most max keys are kept: beyond that the oldest is
// forgotten before its window ends, counted and logged, and a repeat of
// it would publish again.
type idempotency struct {
	window  time.Duration
	max     int
	now     func() time.Time
	log     *slog.Logger
	logFull *lograte.Limiter

	mu    sync.Mutex
	keys  map[string]*idemEntry // guarded by mu
	order []*idemEntry          // guarded by mu: by first publish, oldest first
	at    int                   // guarded by mu: order[:at] are forgotten

	repeats atomic.Uint64 // publishes answered from a key's first receipt
	evicted atomic.Uint64 // keys forgotten before their window ended
}

type idemEntry struct {
	key     string
	expires int64         // unix ns
	done    chan struct{} // closed once receipt and err are set
	receipt Receipt
	err     error
}

func newIdempotency(window time.Duration, max int, log *slog.Logger) *idempotency {
	return &idempotency{window: window, max: max, now: time.Now, log: log, logFull: lograte.New(1, 5),
		keys: make(map[string]*idemEntry)}
}

// do runs publish once per key and window: a repeat gets the first
// receipt (Repeat set), waiting for it if the first is still in progress.
// A publish that failed is not remembered: the retry runs.
func (d *idempotency) do(key string, publish func() (Receipt, error)) (Receipt, error) {
	if len(key) > MaxIdempotencyKey {
		return Receipt{}, ErrIdempotencyKey
	}
	now := d.now().UnixNano()
	d.mu.Lock()
	d.expireLocked(now)
	if e := d.keys[key]; e != nil {
		d.mu.Unlock()
		<-e.done
		if e.err == nil {
			d.repeats.Add(1)
			r := e.receipt
			r.Repeat = true
			return r, nil
		}
		return d.do(key, publish) // the first failed and let go of the key
	}
	e := &idemEntry{key: key, expires: now + int64(d.window), done: make(chan struct{})}
	d.keys[key] = e
	d.order = append(d.order, e)
	for len(d.keys) > d.max {
		d.forgetOldestLocked()
		d.evicted.Add(1)
		d.logFull.Warn(d.log, "idempotency keys over their cap: forgetting the oldest before its window ends",
			"cap", d.max, "window", d.window, "evicted", d.evicted.Load())
	}
	d.mu.Unlock()

	defer close(e.done) // even if publish panics: the repeats waiting must not hang
	e.receipt, e.err = publish()
	if e.err != nil {
		d.mu.Lock()
		if d.keys[key] == e {
			delete(d.keys, key)
		}
		d.compactLocked()
		d.mu.Unlock()
	}
	return e.receipt, e.err
}

// compactLocked drops from the order the entries of failed publishes
// (gone from the map): without it, failures would pile up there,
// uncapped, for a whole window.
func (d *idempotency) compactLocked() {
	if len(d.order)-d.at <= 2*d.max+1024 {
		return
	}
	live := d.order[:0]
	for _, e := range d.order[d.at:] {
		if d.keys[e.key] == e {
			live = append(live, e)
		}
	}
	clear(d.order[len(live):])
	d.order, d.at = live, 0
}

// expireLocked forgets keys whose window is over.
func (d *idempotency) expireLocked(now int64) {
	for d.at < len(d.order) && d.order[d.at].expires <= now {
		d.forgetOldestLocked()
	}
}

func (d *idempotency) forgetOldestLocked() {
	for d.at < len(d.order) {
		e := d.order[d.at]
		d.order[d.at] = nil
		d.at++
		if d.keys[e.key] == e {
			delete(d.keys, e.key)
			break
		}
	}
	if d.at > 1024 && d.at*2 > len(d.order) {
		d.order = append(d.order[:0], d.order[d.at:]...)
		clear(d.order[len(d.order):cap(d.order)])
		d.at = 0
	}
}
