package outbound

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fanout/fanout/broadcast/internal/lograte"
)

// SlowPolicy says what happens to a connection whose outbound queue would
// grow past Config.QueueBytes.
type SlowPolicy uint8

const (
	// SlowClose closes the connection with the codec's goodbye for
	// ReasonSlowConsumer (the default). What it already has queued is
	// dropped; the goodbye follows the frame being written, if any.
	SlowClose SlowPolicy = iota
	// SlowDrop keeps the connection and drops the new frames that do not
	// fit; the client misses those messages. Counted as dropped.
	SlowDrop
)

var slowPolicyNames = map[SlowPolicy]string{SlowClose: "close", SlowDrop: "drop"}

func (p SlowPolicy) String() string {
	if n, ok := slowPolicyNames[p]; ok {
		return n
	}
	return "unknown"
}

// ParseSlowPolicy parses "close" or "drop".
func ParseSlowPolicy(s string) (SlowPolicy, error) {
	for p, n := range slowPolicyNames {
		if n == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("outbound: slow policy %q: want close or drop", s)
}

// Config is what every connection of one server shares. The zero value
// works: each field says what zero means.
type Config struct {
	// QueueBytes bounds, per connection, the bytes waiting for the
	// socket. Zero means 1 MiB.
	QueueBytes int
	// SlowPolicy applies when a frame would grow a queue past QueueBytes.
	// Zero is SlowClose.
	SlowPolicy SlowPolicy
	// CloseTimeout is how long a closing connection may take to accept
	// its goodbye before the socket is closed anyway. Zero means 5s.
	CloseTimeout time.Duration
	// ReadBufferSize is the size of the pooled buffer a read starts with.
	// Zero means 4096 bytes.
	ReadBufferSize int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Env is the state every connection of one server shares: its
// configuration, pooled buffers and write counters. Create it with NewEnv.
type Env struct {
	cfg     Config
	log     *slog.Logger
	logSlow *lograte.Limiter

	bytesOut atomic.Uint64 // bytes written to sockets
	writes   atomic.Uint64 // writev calls that wrote something
	queued   atomic.Int64  // bytes in every outbound queue

	bufs chan []byte // free read buffers of ReadBufferSize
	iovs sync.Pool   // *[]unix.Iovec for flushes on workers
}

// NewEnv returns an Env for cfg.
func NewEnv(cfg Config) *Env {
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 1 << 20
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 5 * time.Second
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Env{
		cfg:     cfg,
		log:     cfg.Logger,
		logSlow: lograte.New(5, 10),
		bufs:    make(chan []byte, 256),
	}
	e.iovs.New = func() any { v := make([]unix.Iovec, 0, 64); return &v }
	return e
}

// Counters are the writes of every connection of an Env.
type Counters struct {
	BytesOut    uint64 // bytes written to sockets
	Writes      uint64 // socket writes (each may carry several frames)
	QueuedBytes int64  // bytes waiting in outbound queues now
}

// Counters returns the Env's counters.
func (e *Env) Counters() Counters {
	return Counters{BytesOut: e.bytesOut.Load(), Writes: e.writes.Load(), QueuedBytes: e.queued.Load()}
}

// GetBuf returns an empty read buffer of ReadBufferSize capacity.
func (e *Env) GetBuf() []byte {
	select {
	case b := <-e.bufs:
		return b
	default:
		return make([]byte, 0, e.cfg.ReadBufferSize)
	}
}

// PutBuf keeps a standard-size buffer for the next read; grown ones go to
// the garbage collector.
func (e *Env) PutBuf(b []byte) {
	if cap(b) != e.cfg.ReadBufferSize {
		return
	}
	select {
	case e.bufs <- b[:0]:
	default:
	}
}

func (e *Env) getIov() *[]unix.Iovec  { return e.iovs.Get().(*[]unix.Iovec) }
func (e *Env) putIov(v *[]unix.Iovec) { e.iovs.Put(v) }
