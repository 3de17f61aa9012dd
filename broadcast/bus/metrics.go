package bus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the bus's state as Prometheus metrics.
func (b *JetStream) Collector() prometheus.Collector { return &collector{b} }

type collector struct{ b *JetStream }

var (
	descUp         = prometheus.NewDesc("fanout_bus_connected", "1 when this node is connected to NATS.", nil, nil)
	descPublished  = prometheus.NewDesc("fanout_bus_published_total", "Messages this node stored in the stream (acknowledged by JetStream).", nil, nil)
	descFailed     = prometheus.NewDesc("fanout_bus_publish_failures_total", "Publishes refused by reason: down (not connected), too_big (over max_payload), no_ack (JetStream did not acknowledge).", []string{"reason"}, nil)
	descRepeats    = prometheus.NewDesc("fanout_bus_publish_repeats_total", "Publishes JetStream found already stored (same idempotency key within the stream's duplicate window).", nil, nil)
	descReceived   = prometheus.NewDesc("fanout_bus_received_total", "Messages delivered from the stream to this node's hub, once each.", nil, nil)
	descDuplicates = prometheus.NewDesc("fanout_bus_duplicates_total", "Messages the consumer got again and skipped.", nil, nil)
	descGaps       = prometheus.NewDesc("fanout_bus_gaps_total", "Messages that left the stream (retention) before this node read them.", nil, nil)
	descEpochs     = prometheus.NewDesc("fanout_bus_epochs_total", "Times the stream was found recreated (a new epoch).", nil, nil)
	descReconnects = prometheus.NewDesc("fanout_bus_reconnects_total", "Reconnects to NATS.", nil, nil)
	descDisconn    = prometheus.NewDesc("fanout_bus_disconnects_total", "Times the link to NATS went away.", nil, nil)
	descConsErrs   = prometheus.NewDesc("fanout_bus_consumer_restarts_total", "Times the stream consumer stopped and was started again from the last message delivered.", nil, nil)
	descLagMsgs    = prometheus.NewDesc("fanout_bus_lag_messages", "Messages in the stream this node has not delivered yet.", nil, nil)
	descLag        = prometheus.NewDesc("fanout_bus_lag_seconds", "Age of the message this node delivered last, while it is behind the stream (0 when caught up).", nil, nil)
	descHeld       = prometheus.NewDesc("fanout_bus_backpressure_seconds_total", "Time the consumer waited for the hub to accept a message (the local backlog was full).", nil, nil)
	descNext       = prometheus.NewDesc("fanout_bus_delivered_seq", "Stream sequence of the last message delivered to this node's hub.", nil, nil)
	descStreamLast = prometheus.NewDesc("fanout_bus_stream_last_seq", "The stream's last sequence, as last read.", nil, nil)
	descStreamMsgs = prometheus.NewDesc("fanout_bus_stream_messages", "Messages in the stream, as last read.", nil, nil)
	descStreamSize = prometheus.NewDesc("fanout_bus_stream_bytes", "Bytes in the stream, as last read.", nil, nil)
	descInfo       = prometheus.NewDesc("fanout_bus_info", "The stream this node consumes, and its epoch.", []string{"stream", "epoch"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	up := 0.0
	if st.Connected {
		up = 1
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	n := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	g(descUp, up)
	n(descPublished, st.Published)
	for i, name := range failureNames {
		n(descFailed, st.Failures[i], name)
	}
	n(descRepeats, st.Repeats)
	n(descReceived, st.Received)
	n(descDuplicates, st.Duplicates)
	n(descGaps, st.Gaps)
	n(descEpochs, st.Epochs)
	n(descReconnects, st.Reconnects)
	n(descDisconn, st.Disconnects)
	n(descConsErrs, st.ConsumerRestarts)
	g(descLagMsgs, float64(st.LagMessages))
	g(descLag, st.Lag.Seconds())
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.CounterValue, st.Backpressure.Seconds())
	g(descNext, float64(st.Delivered))
	g(descStreamLast, float64(st.StreamLastSeq))
	g(descStreamMsgs, float64(st.StreamMessages))
	g(descStreamSize, float64(st.StreamBytes))
	g(descInfo, 1, st.Stream, st.Epoch)
	c.b.publishHist.Collect(ch)
}

// Stats is the bus's state and counters.
type Stats struct {
	Connected        bool
	Stream, Epoch    string
	Published        uint64
	Failures         [numFailures]uint64 // by failureNames
	Repeats          uint64
	Received         uint64
	Duplicates       uint64
	Gaps             uint64
	Epochs           uint64
	Reconnects       uint64
	Disconnects      uint64
	ConsumerRestarts uint64
	LagMessages      uint64
	Lag              time.Duration
	Backpressure     time.Duration
	Delivered        uint64 // stream seq of the last message delivered
	StreamLastSeq    uint64
	StreamMessages   uint64
	StreamBytes      uint64
}

// Stats returns the bus's state and counters.
func (b *JetStream) Stats() Stats {
	st := Stats{
		Connected: b.connected.Load(), Stream: b.cfg.Stream, Published: b.published.Load(),
		Repeats: b.repeats.Load(), Received: b.received.Load(), Duplicates: b.duplicates.Load(),
		Gaps: b.gaps.Load(), Epochs: b.epochs.Load(), Reconnects: b.reconnects.Load(),
		Disconnects: b.disconnects.Load(), ConsumerRestarts: b.consumerErrs.Load(),
		LagMessages: b.lagMsgs.Load(), Lag: time.Duration(b.lagNanos.Load()),
		Backpressure: time.Duration(b.heldNanos.Load()),
	}
	for i := range st.Failures {
		st.Failures[i] = b.failed[i].Load()
	}
	b.mu.Lock()
	st.Epoch, st.Delivered = b.epoch, b.next-1
	st.StreamLastSeq, st.StreamMessages, st.StreamBytes = b.lastStream, b.streamMsgs, b.streamSize
	b.mu.Unlock()
	return st
}

// Status implements what GET /bus shows: the bus's state, as JSON.
func (b *JetStream) Status() any {
	st := b.Stats()
	return struct {
		Connected     bool    `json:"connected"`
		URL           string  `json:"url"`
		Stream        string  `json:"stream"`
		Epoch         string  `json:"epoch"`
		DeliveredSeq  uint64  `json:"delivered_seq"`
		StreamLastSeq uint64  `json:"stream_last_seq"`
		LagMessages   uint64  `json:"lag_messages"`
		LagSeconds    float64 `json:"lag_seconds"`
		Gaps          uint64  `json:"gaps"`
	}{st.Connected, b.url, st.Stream, st.Epoch, st.Delivered, st.StreamLastSeq, st.LagMessages, st.Lag.Seconds(), st.Gaps}
}
