package api

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanout/fanout/broadcast"
)

// NewCollector exports a server's Stats as Prometheus metrics (namespace
// fanout), reading stats once per scrape: pass (*broadcast.Server).Stats.
// Register it next to the Go and process collectors (New does).
func NewCollector(stats func() broadcast.Stats) prometheus.Collector {
	return &collector{stats: stats}
}

type collector struct{ stats func() broadcast.Stats }

var (
	descConns        = prometheus.NewDesc("fanout_connections", "Open WebSocket connections.", nil, nil)
	descHandshaking  = prometheus.NewDesc("fanout_handshakes_in_progress", "HTTP upgrades in progress.", nil, nil)
	descUpgrades     = prometheus.NewDesc("fanout_upgrades_total", "Upgrades completed.", nil, nil)
	descRejects      = prometheus.NewDesc("fanout_upgrade_rejections_total", "Upgrades refused, by reason.", []string{"reason"}, nil)
	descCloses       = prometheus.NewDesc("fanout_closes_total", "Connections ended, by reason.", []string{"reason"}, nil)
	descMessagesIn   = prometheus.NewDesc("fanout_messages_in_total", "Complete data messages read from clients.", nil, nil)
	descBroadcasts   = prometheus.NewDesc("fanout_broadcasts_total", "Messages accepted for broadcast (clients and publish API).", nil, nil)
	descRefused      = prometheus.NewDesc("fanout_publish_refused_total", "Publishes refused (backlog full, shutting down).", nil, nil)
	descDeliveries   = prometheus.NewDesc("fanout_deliveries_total", "Frames handed to connections (written or queued).", nil, nil)
	descDropped      = prometheus.NewDesc("fanout_dropped_total", "Frames dropped for slow consumers under the drop policy.", nil, nil)
	descTierInvalid  = prometheus.NewDesc("fanout_tier_invalid_messages_total", "In a tier: messages in the stream not delivered because fanout would not have published them (bad channel, too big, not UTF-8 or JSON, not fanout's).", nil, nil)
	descBacklogWaits = prometheus.NewDesc("fanout_tier_backlog_waits_total", "In a tier: times the stream consumer found the local backlog full and waited (back-pressure; nothing is dropped).", nil, nil)
	descSlowCloses   = prometheus.NewDesc("fanout_slow_consumer_closes_total", "Connections closed for a full outbound queue.", nil, nil)
	descBytesOut     = prometheus.NewDesc("fanout_bytes_out_total", "Bytes written to client sockets.", nil, nil)
	descBytesIn      = prometheus.NewDesc("fanout_bytes_in_total", "Bytes read from clients after their upgrade.", nil, nil)
	descPartial      = prometheus.NewDesc("fanout_partial_bytes", "Read buffers held now for incomplete frames and fragmented messages (capped by -max-partial-bytes).", nil, nil)
	descWrites       = prometheus.NewDesc("fanout_socket_writes_total", "Socket writes; deliveries per write is the coalescing ratio.", nil, nil)
	descQueued       = prometheus.NewDesc("fanout_queued_bytes", "Bytes waiting in outbound queues now.", nil, nil)
	descQueueHist    = prometheus.NewDesc("fanout_queue_bytes", "Per-connection outbound queue sizes, sampled each sweep for connections with a queue.", nil, nil)
	descFanoutHist   = prometheus.NewDesc("fanout_fanout_duration_seconds", "Time a shard takes to write one batch of messages to all its connections.", nil, nil)
	descPoolRunning  = prometheus.NewDesc("fanout_workers_running", "Read/write workers running a task.", nil, nil)
	descPoolCap      = prometheus.NewDesc("fanout_workers", "Worker pool size.", nil, nil)
	descPoolWaiting  = prometheus.NewDesc("fanout_workers_waiting_tasks", "Tasks queued because every worker was busy.", nil, nil)
	descPoolOverload = prometheus.NewDesc("fanout_workers_overloads_total", "Times every worker was busy when an event arrived.", nil, nil)

	descSubscriptions = prometheus.NewDesc("fanout_subscriptions", "Channel memberships of open connections (the default channel counts as one).", nil, nil)
	descResumes       = prometheus.NewDesc("fanout_resumes_total", "Connections that asked to resume (since=), by result: recovered (everything missed replayed) or not_recovered.", []string{"result"}, nil)
	descHistMessages  = prometheus.NewDesc("fanout_history_messages", "Messages kept in the history for resumes.", nil, nil)
	descHistBytes     = prometheus.NewDesc("fanout_history_bytes", "Bytes the history holds (bounded by -history-bytes).", nil, nil)
	descHistChannels  = prometheus.NewDesc("fanout_history_channels", "Channels with messages in the history.", nil, nil)
	descHistForgot    = prometheus.NewDesc("fanout_history_forgotten_total", "Messages the history forgot, by bound: size (-history-size), ttl (-history-ttl), bytes (-history-bytes).", []string{"bound"}, nil)
	descIdemRepeats   = prometheus.NewDesc("fanout_idempotent_repeats_total", "Publishes answered from an earlier publish with the same Idempotency-Key (nothing published again).", nil, nil)
	descIdemEvicted   = prometheus.NewDesc("fanout_idempotency_keys_evicted_total", "Idempotency keys forgotten before their window ended (over -idempotency-keys).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descConns, float64(st.Conns))
	gauge(descHandshaking, float64(st.Handshaking))
	counter(descUpgrades, st.Accepted)
	for _, k := range broadcast.RejectKinds() {
		counter(descRejects, st.Rejects(k), k.String())
	}
	for _, r := range broadcast.Reasons() {
		counter(descCloses, st.Closed(r), r.String())
	}
	counter(descMessagesIn, st.MessagesIn)
	counter(descBroadcasts, st.Published)
	counter(descRefused, st.Refused)
	counter(descDeliveries, st.Deliveries)
	counter(descDropped, st.Dropped)
	counter(descBacklogWaits, st.BacklogWaits)
	counter(descTierInvalid, st.TierInvalid)
	counter(descSlowCloses, st.Closed(broadcast.ReasonSlowConsumer))
	counter(descBytesOut, st.BytesOut)
	counter(descBytesIn, st.BytesIn)
	gauge(descPartial, float64(st.PartialBytes))
	counter(descWrites, st.Writes)
	gauge(descQueued, float64(st.QueuedBytes))
	ch <- prometheus.MustNewConstHistogram(descQueueHist, st.QueueSizes.Count, st.QueueSizes.Sum, st.QueueSizes.Buckets)
	ch <- prometheus.MustNewConstHistogram(descFanoutHist, st.FanoutDuration.Count, st.FanoutDuration.Sum, st.FanoutDuration.Buckets)
	gauge(descPoolRunning, float64(st.Poller.Running))
	gauge(descPoolCap, float64(st.Poller.Workers))
	gauge(descPoolWaiting, float64(st.Poller.Backlog))
	counter(descPoolOverload, st.Poller.Overloads)
	gauge(descSubscriptions, float64(st.Subscriptions))
	counter(descResumes, st.Resumed, "recovered")
	counter(descResumes, st.NotRecovered, "not_recovered")
	gauge(descHistMessages, float64(st.History.Messages))
	gauge(descHistBytes, float64(st.History.Bytes))
	gauge(descHistChannels, float64(st.History.Channels))
	counter(descHistForgot, st.History.ForgotSize, "size")
	counter(descHistForgot, st.History.ForgotTTL, "ttl")
	counter(descHistForgot, st.History.ForgotBytes, "bytes")
	counter(descHistForgot, st.History.ForgotEpoch, "epoch")
	counter(descIdemRepeats, st.IdempotentRepeats)
	counter(descIdemEvicted, st.IdempotencyEvicted)
}

// Build says which fanout is running: the module version ("devel" for a
// build from a work tree), the Go version it was built with, and the VCS
// commit ("unknown" without VCS information, as with go run or -buildvcs
// false; "-dirty" after it for a work tree with changes).
type Build struct {
	Version, GoVersion, Revision string
}

// ReadBuild reads the running binary's Build from runtime/debug.ReadBuildInfo.
func ReadBuild() Build {
	b := Build{Version: "devel", GoVersion: runtime.Version(), Revision: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		b.Version = v
	}
	if bi.GoVersion != "" {
		b.GoVersion = bi.GoVersion
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && b.Revision != "unknown" {
		b.Revision += "-dirty"
	}
	return b
}

// NewBuildCollector exports b as fanout_build_info{version,goversion,revision} 1,
// the constant gauge dashboards join on to label a node's series.
func NewBuildCollector(b Build) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "fanout_build_info",
		Help:        "The running build: version, Go version and VCS commit as labels; always 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "goversion": b.GoVersion, "revision": b.Revision},
	}, func() float64 { return 1 })
}
