package bus

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the bus's state as Prometheus metrics.
func (b *NATS) Collector() prometheus.Collector { return &collector{b} }

type collector struct{ b *NATS }

var (
	descUp          = prometheus.NewDesc("fanout_bus_connected", "1 when the NATS bus is connected.", nil, nil)
	descPublished   = prometheus.NewDesc("fanout_bus_published_total", "Messages handed to the bus.", nil, nil)
	descRefused     = prometheus.NewDesc("fanout_bus_refused_total", "Messages refused: the bus buffer was full of unconfirmed messages.", nil, nil)
	descRepublished = prometheus.NewDesc("fanout_bus_resent_total", "Messages sent again after a reconnect.", nil, nil)
	descReceived    = prometheus.NewDesc("fanout_bus_received_total", "Messages delivered from the bus, once each.", nil, nil)
	descDuplicates  = prometheus.NewDesc("fanout_bus_duplicates_total", "Messages received again and dropped.", nil, nil)
	descGaps        = prometheus.NewDesc("fanout_bus_gaps_total", "Messages of other nodes that never arrived.", nil, nil)
	descReconnects  = prometheus.NewDesc("fanout_bus_reconnects_total", "Reconnects to NATS.", nil, nil)
	descPending     = prometheus.NewDesc("fanout_bus_unconfirmed_bytes", "Bytes published and not yet seen back from the bus.", nil, nil)
	descLag         = prometheus.NewDesc("fanout_bus_lag_seconds", "Last publish-to-echo time through the bus.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	up := 0.0
	if st.Connected {
		up = 1
	}
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	n := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g(descUp, up)
	n(descPublished, st.Published)
	n(descRefused, st.Refused)
	n(descRepublished, st.Republished)
	n(descReceived, st.Received)
	n(descDuplicates, st.Duplicates)
	n(descGaps, st.Gaps)
	n(descReconnects, st.Reconnects)
	g(descPending, float64(st.PendingBytes))
	g(descLag, st.Lag.Seconds())
}
