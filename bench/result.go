package bench

import (
	"fmt"
	"time"
)

// What a run measured, as Run returns it and WriteJSON stores it.

// FanoutStats is what receivers saw of the published messages. Only the
// stable receivers count (not slow ones, not churning ones).
type FanoutStats struct {
	Publishers int     `json:"publishers"`
	Sent       uint64  `json:"sent"`
	Receivers  int     `json:"receivers"`
	Expected   uint64  `json:"expected"`
	Received   uint64  `json:"received"` // distinct (publisher, seq) per receiver
	Lost       uint64  `json:"lost"`
	LossRatio  float64 `json:"loss_ratio"`
	Duplicates uint64  `json:"duplicates"`
	Reordered  uint64  `json:"reordered"` // received after a later message of the same publisher
	// OutOfOrder counts, in the json format (and SSE), messages whose seq
	// was not above the last one their receiver saw: the server's order
	// (the same on every node of a tier) broken, whoever published.
	OutOfOrder uint64 `json:"out_of_order,omitempty"`
	// Extra counts deliveries beyond what their publisher was counted as
	// sending, over the publishers that had some: messages received that
	// the server never acknowledged (a publish refused, 503, yet stored:
	// its acknowledgement lost, and the publisher gave up on it at the
	// end of the run). They make up for no other publisher's losses.
	Extra uint64 `json:"extra,omitempty"`
	// Misrouted counts, with spread channels (Config.Channels), messages a
	// receiver got from a publisher of another channel: not counted.
	Misrouted uint64 `json:"misrouted,omitempty"`
	Foreign   uint64 `json:"foreign"` // messages without the bench header (or not in an envelope)
	// Corrupt counts bench messages whose bytes after the header were not
	// what the publisher sent (length included): not counted as
	// received, so lost too.
	Corrupt uint64 `json:"corrupt,omitempty"`
	// WireBytes is what the counted receivers read from their sockets
	// while counting (frames or events, pings and the rest included), and
	// WireBytesPerDelivery that over Received: what a delivery costs on
	// the wire, as the clients saw it.
	WireBytes            uint64  `json:"wire_bytes"`
	WireBytesPerDelivery float64 `json:"wire_bytes_per_delivery"`
	Seconds              float64 `json:"seconds"` // first send to last delivery
	PerSecond            float64 `json:"deliveries_per_second"`
	WindowTimeouts       uint64  `json:"window_timeouts,omitempty"`
	// PublishRequests and PublishRefused count the POSTs the publish API
	// answered (the warm-ups' included), and the 503s among them (sent
	// again after Retry-After), when publishers publish through it
	// (Config.PublishURL).
	PublishRequests uint64 `json:"publish_requests,omitempty"`
	PublishRefused  uint64 `json:"publish_refused,omitempty"`
	// PublishLatency is the time from sending a POST to reading its
	// answer: what a message waits before the next one of its publisher
	// may go (requests are sequential).
	PublishLatency *Summary `json:"publish_latency,omitempty"`
	Latency        Summary  `json:"latency"`
	// PublishersBehind counts the publishers that fell behind their share
	// of a fixed Rate (PublisherStats.Behind), and Behind adds up the
	// messages they did not send.
	PublishersBehind int    `json:"publishers_behind,omitempty"`
	Behind           uint64 `json:"behind,omitempty"`
	// OnChannel and Spread split the counts, with spread channels
	// (Config.Channels), between Channel's receivers and publishers and
	// the spread channels'. Nil without.
	OnChannel *GroupStats `json:"on_channel,omitempty"`
	Spread    *GroupStats `json:"spread,omitempty"`
	// PerPublisher splits the counts by publisher: each publisher's own
	// loss, duplicates and reordering, over the counted receivers on its
	// channel (the spread channels' publishers follow Channel's).
	PerPublisher []PublisherStats `json:"per_publisher"`
}

// PublisherStats is one publisher's messages as the receivers saw them.
type PublisherStats struct {
	Publisher  int    `json:"publisher"`
	Sent       uint64 `json:"sent"`
	Expected   uint64 `json:"expected"`
	Received   uint64 `json:"received"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
	// Due is what the publisher's share of a fixed Rate called for over
	// Duration (or Messages, if fewer), and Behind how many of those it
	// did not send, when that is more than 1 % of them (at least one): a
	// publisher that could not keep up (its writes blocked, the server
	// refused it, it stopped early). Both 0 at Rate max.
	Due    uint64 `json:"due,omitempty"`
	Behind uint64 `json:"behind,omitempty"`
}

// SlowStats is the slow scenario's view of the receivers that stopped.
type SlowStats struct {
	Receivers int              `json:"receivers"`
	Closes    map[string]int64 `json:"closes"` // close code (or "open", 1006 for no frame) -> count
}

// RoomStats is the rooms scenario's own figures: each client alone on its
// channel, publishing there and receiving its own messages back. The
// figures it shares with the others (sent, received, loss, latency) are
// in FanoutStats, where a delivery is a message: each has one subscriber.
type RoomStats struct {
	Rooms         int     `json:"rooms"` // clients counted, each in a room of its own
	RatePerClient float64 `json:"rate_per_client"`
	// Misrouted counts messages a client received from another room: a
	// server that routes by channel sends none.
	Misrouted uint64 `json:"misrouted"`
	// ClientsShort counts clients that received fewer of their own
	// messages than they sent.
	ClientsShort int `json:"clients_short"`
	// WriteErrors counts messages a client failed to write (not sent; the
	// client was closed from this side).
	WriteErrors uint64 `json:"write_errors,omitempty"`
}

// ServerCost is the server's resources as sampled from outside.
type ServerCost struct {
	Before       ServerSample `json:"before"`
	Connected    ServerSample `json:"connected"`
	PublishStart ServerSample `json:"publish_start"`
	// Drained is sampled when the drain ends, before any client leaves.
	Drained ServerSample `json:"drained"`
	End     ServerSample `json:"end"` // once every client left

	AfterClose   *ServerSample  `json:"after_close,omitempty"`
	Samples      []ServerSample `json:"samples"`
	PeakRSS      int64          `json:"peak_rss_bytes"` // highest RSS sampled during the run
	BytesPerConn float64        `json:"rss_bytes_per_conn"`
	// NotFresh says why Before may not be the server's own baseline, so
	// that BytesPerConn is not what a connection costs it: it held or had
	// accepted connections, or had delivered messages, before the run (from its
	// metrics), or its RSS grew by less than any connection costs
	// (memory freed by earlier clients, reused). Empty: none seen.
	NotFresh   []string `json:"not_fresh,omitempty"`
	FDsPerConn float64  `json:"fds_per_conn"`
	Baseline   *bool    `json:"fds_returned_to_baseline,omitempty"`
	// CPUPerDelivery is server CPU (user+system) from the first publish to
	// the end of the run (End: the clients' closes included), divided by
	// the deliveries counted. In rooms it is per message (one delivery
	// each), and ends at Drained: a room's few messages would otherwise
	// carry its client's close.
	CPUPerDelivery time.Duration `json:"cpu_per_delivery_ns,omitempty"`
	// FanoutCPUPerDelivery is the same from the first publish to Drained,
	// before any client leaves: what fanning the messages out cost, the
	// clients' closes left out (they may cost a protocol more or less
	// than another). Not in rooms (CPUPerDelivery is that already).
	FanoutCPUPerDelivery time.Duration `json:"fanout_cpu_per_delivery_ns,omitempty"`
	// DeliveriesPerWrite is the server's coalescing over the same span:
	// its deliveries per socket write (from fanout's metrics; 0 without).
	DeliveriesPerWrite float64 `json:"deliveries_per_write,omitempty"`
	// BytesOutPerDelivery is the bytes the server wrote to its sockets per
	// delivery it made, from the first publish to Drained, before the
	// clients leave (both from fanout's metrics, fanout_bytes_out_total
	// and fanout_deliveries_total: every delivery, publishers' own echoes
	// included; 0 without).
	BytesOutPerDelivery float64 `json:"bytes_out_per_delivery,omitempty"`
}

// Point is one second of the run.
type Point struct {
	Second     int     `json:"second"`
	Conns      int64   `json:"conns"`
	Deliveries float64 `json:"deliveries_per_second"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Errors     uint64  `json:"errors"`
	ServerRSS  int64   `json:"server_rss_bytes,omitempty"`
}

// Result is everything a run measured.
type Result struct {
	Env     Env              `json:"env"`
	Config  Config           `json:"config"`
	Procs   int              `json:"procs"`
	Connect ConnectStats     `json:"connect"`
	Fanout  *FanoutStats     `json:"fanout,omitempty"`
	Slow    *SlowStats       `json:"slow,omitempty"`
	Churn   *ChurnStats      `json:"churn,omitempty"`
	Rooms   *RoomStats       `json:"rooms,omitempty"`
	Server  *ServerCost      `json:"server,omitempty"`
	Closes  map[string]int64 `json:"closes"` // server close codes seen by receivers
	Series  []Point          `json:"series"`
	// WarmupIncomplete counts reading receivers that saw no warm-up
	// message within 10 s (their first messages may show as lost).
	WarmupIncomplete uint64 `json:"warmup_incomplete,omitempty"`
	// WarmupSent is the number of (uncounted) warm-up messages published.
	WarmupSent uint64 `json:"warmup_sent"`
	// ReceiverErrors counts receivers whose stream broke while counting
	// (a protocol error, a message the bench could not parse), and
	// ReceiverError says why the first did.
	ReceiverErrors uint64 `json:"receiver_errors,omitempty"`
	ReceiverError  string `json:"receiver_error,omitempty"`
	// PublisherErrors lists publishers that stopped early, and why.
	PublisherErrors []string   `json:"publisher_errors,omitempty"`
	Histogram       [][2]int64 `json:"latency_histogram"`
}

// Shortfall says how the run fell short of what it was asked for, or is
// nil. A run falls short when any wanted connection never connected
// (after its retries): its figures are of fewer connections than asked,
// and a script comparing runs must not take them for the ones it wanted.
func (r *Result) Shortfall() error {
	c := r.Connect
	if c.Failed == 0 {
		return nil
	}
	return fmt.Errorf("bench: %d of %d connections never connected; the first: %s", c.Failed, r.Config.Conns, c.FirstError)
}
