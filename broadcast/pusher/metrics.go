package pusher

import "github.com/prometheus/client_golang/prometheus"

// metrics are the front door's, in namespace fanout_pusher.
type metrics struct {
	connections    prometheus.Gauge
	refusals       *prometheus.CounterVec
	subscriptions  *prometheus.CounterVec
	subErrors      *prometheus.CounterVec
	badMessages    prometheus.Counter
	clientEvents   prometheus.Counter
	clientRefused  *prometheus.CounterVec
	apiRequests    *prometheus.CounterVec
	apiEvents      prometheus.Counter
	webhookEvents  prometheus.Counter
	webhookPosts   *prometheus.CounterVec
	webhookDropped *prometheus.CounterVec
	webhookQueued  prometheus.Gauge
}

func (m *metrics) init() {
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fanout_pusher_connections", Help: "Pusher protocol connections open (at /app/{key})."})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_connection_refusals_total", Help: "Pusher connections refused after their upgrade with a pusher:error, by reason (unknown_app 4001, app_quota 4004, protocol 4007/4008, over_capacity 4100)."}, []string{"reason"})
	m.subscriptions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_subscriptions_total", Help: "Pusher subscriptions that succeeded, by channel type."}, []string{"type"})
	m.subErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_subscription_errors_total", Help: "Pusher subscriptions refused (pusher:subscription_error), by type: AuthError, InvalidChannel, InvalidChannelData, LimitReached."}, []string{"type"})
	m.badMessages = prometheus.NewCounter(prometheus.CounterOpts{Name: "fanout_pusher_invalid_messages_total", Help: "Messages from Pusher clients that were not a Pusher event (answered with pusher:error 4200)."})
	m.clientEvents = prometheus.NewCounter(prometheus.CounterOpts{Name: "fanout_pusher_client_events_total", Help: "Client events (client-*) published."})
	m.clientRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_client_events_refused_total", Help: "Client events refused (pusher:error 4301), by reason."}, []string{"reason"})
	m.apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_api_requests_total", Help: "Pusher HTTP API requests, by endpoint and status code."}, []string{"endpoint", "code"})
	m.apiEvents = prometheus.NewCounter(prometheus.CounterOpts{Name: "fanout_pusher_api_events_total", Help: "Events published through the Pusher HTTP API (one per channel)."})
	m.webhookEvents = prometheus.NewCounter(prometheus.CounterOpts{Name: "fanout_pusher_webhook_events_total", Help: "Webhook events delivered (acknowledged with a 2xx)."})
	m.webhookPosts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_webhook_posts_total", Help: "Webhook POSTs, by result: ok, failed (retried)."}, []string{"result"})
	m.webhookDropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fanout_pusher_webhook_events_dropped_total", Help: "Webhook events dropped, by reason: queue_full (-pusher-webhook-queue), gave_up (retried for -pusher-webhook-retry-for), shutdown."}, []string{"reason"})
	m.webhookQueued = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fanout_pusher_webhook_queued_events", Help: "Webhook events waiting to be sent."})
	for _, r := range []string{"unknown_app", "app_quota", "protocol", "over_capacity"} {
		m.refusals.WithLabelValues(r)
	}
	for _, t := range []string{"public", "private", "presence"} {
		m.subscriptions.WithLabelValues(t)
	}
	for _, t := range []string{"AuthError", "InvalidChannel", "InvalidChannelData", "LimitReached"} {
		m.subErrors.WithLabelValues(t)
	}
	for _, r := range []string{"disabled", "event_name", "channel", "too_big", "not_subscribed", "rate_limit", "invalid", "publish"} {
		m.clientRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.webhookPosts.WithLabelValues(r)
	}
	for _, r := range []string{"queue_full", "gave_up", "shutdown"} {
		m.webhookDropped.WithLabelValues(r)
	}
}

// Collectors are the front door's metrics, for the admin /metrics.
func (f *Front) Collectors() []prometheus.Collector {
	m := &f.m
	return []prometheus.Collector{m.connections, m.refusals, m.subscriptions, m.subErrors, m.badMessages, m.clientEvents,
		m.clientRefused, m.apiRequests, m.apiEvents, m.webhookEvents, m.webhookPosts, m.webhookDropped, m.webhookQueued}
}
