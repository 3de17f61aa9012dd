// Package baseline is the classic WebSocket broadcast hub, the design of
// the gorilla/websocket chat tutorial that fanout replaces, made correct:
// one hub goroutine, and per connection a reader goroutine, a writer
// goroutine, a buffered send channel and gorilla's read and write buffers.
// fanout-bench runs it side by side with fanout so every figure has a
// reference measured on the same machine in the same run.
//
// What "correct" changed from the tutorial: the hub is created and run
// (not a global that is never started); a connection's send channel is
// closed exactly once, by the hub; the client map is only written under
// the hub's ownership; a full send channel disconnects that client, and
// that is counted and logged, not silent; origins are checked.
package baseline

import (
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the baseline server. The zero value works.
type Config struct {
	// SendBuffer is each client's send channel capacity, in messages.
	// Zero means 256 (the tutorial's value).
	SendBuffer int
	// MaxMessage is the read limit per message in bytes. Zero: 64 KiB.
	MaxMessage int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

type message struct {
	typ  int
	data []byte
}

type client struct {
	conn *websocket.Conn
	send chan message
}

// Hub is a running baseline server; it is an http.Handler.
type Hub struct {
	cfg        Config
	up         websocket.Upgrader
	register   chan *client
	unregister chan *client
	broadcast  chan message
	done       chan struct{}
	clients    map[*client]struct{} // owned by the run goroutine

	conns      atomic.Int64
	published  atomic.Uint64
	slowClosed atomic.Uint64
}

// New creates a hub and starts its goroutine; Close stops it.
func New(cfg Config) *Hub {
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = 256
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hub{
		cfg:        cfg,
		up:         websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}, // default CheckOrigin: same host only
		register:   make(chan *client),
		unregister: make(chan *client),
		broadcast:  make(chan message, 256),
		done:       make(chan struct{}),
		clients:    make(map[*client]struct{}),
	}
	go h.run()
	return h
}

// Conns returns the number of connected clients.
func (h *Hub) Conns() int64 { return h.conns.Load() }

// SlowClosed returns how many clients were dropped for a full send buffer.
func (h *Hub) SlowClosed() uint64 { return h.slowClosed.Load() }

// Close stops the hub and disconnects every client.
func (h *Hub) Close() { close(h.done) }

func (h *Hub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = struct{}{}
			h.conns.Add(1)
		case c := <-h.unregister:
			h.drop(c)
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default:
					h.slowClosed.Add(1)
					h.cfg.Logger.Warn("baseline: send buffer full, dropping client", "remote", c.conn.RemoteAddr().String())
					h.drop(c)
				}
			}
		case <-h.done:
			for c := range h.clients {
				h.drop(c)
			}
			return
		}
	}
}

// drop removes c and closes its send channel; only run calls it, so the
// channel is closed once.
func (h *Hub) drop(c *client) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	close(c.send)
	h.conns.Add(-1)
}

// ServeHTTP upgrades and serves one client.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(h.cfg.MaxMessage)
	c := &client{conn: conn, send: make(chan message, h.cfg.SendBuffer)}
	select {
	case h.register <- c:
	case <-h.done:
		conn.Close()
		return
	}
	go c.writer()
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			break
		}
		h.published.Add(1)
		select {
		case h.broadcast <- message{typ, data}:
		case <-h.done:
		}
	}
	select {
	case h.unregister <- c:
	case <-h.done:
	}
}

// writer sends one WebSocket message per queued message (the tutorial's
// WriteMessage per recipient), until the hub closes the channel.
func (c *client) writer() {
	defer c.conn.Close()
	for m := range c.send {
		_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.conn.WriteMessage(m.typ, m.data); err != nil {
			// Keep draining so the hub never blocks on us; the reader
			// sees the closed connection and unregisters.
			c.conn.Close()
			for range c.send {
			}
			return
		}
	}
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
}

// Handler returns a mux serving the hub at path.
func Handler(h *Hub, path string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(path, h)
	mux.Handle("/metrics", promhttp.Handler()) // Go runtime and process metrics
	return mux
}
