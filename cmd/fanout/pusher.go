package main

import (
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/fanout/fanout/broadcast/pusher"
)

// pusherOptions are the Pusher front door's flags.
type pusherOptions struct {
	appID, key, secret string
	appsFile           string
	webhookURL         string
	apiAddr            string
	cfg                pusher.Config
}

func (p *pusherOptions) on() bool {
	return p.appID != "" || p.key != "" || p.secret != "" || p.appsFile != ""
}

// definePusherFlags declares the front door's flags: off unless an app
// is given (-pusher-app-id, -pusher-key, -pusher-secret, or several in
// -pusher-apps-file).
func definePusherFlags(fs *flag.FlagSet, p *pusherOptions) {
	c := &p.cfg
	fs.StringVar(&p.appID, "pusher-app-id", p.appID, "Pusher front door: the app's `id` (the HTTP API's /apps/{id}); with -pusher-key and -pusher-secret it turns the front door on: Pusher clients at /app/{key} on the WebSocket listener, the HTTP API on the admin listener")
	fs.StringVar(&p.key, "pusher-key", p.key, "Pusher front door: the app's `key` (clients connect to /app/{key})")
	fs.StringVar(&p.secret, "pusher-secret", p.secret, "Pusher front door: the app's `secret`, which signs private and presence subscriptions, API requests and webhooks (FANOUT_PUSHER_SECRET keeps it off the command line)")
	fs.StringVar(&p.appsFile, "pusher-apps-file", p.appsFile, "Pusher front door: a JSON `file` of several apps: [{\"id\",\"key\",\"secret\",\"channel_prefix\",\"max_connections\",\"webhook_url\",\"client_events\"}]; each app but one needs a channel_prefix ending in ':'")
	fs.StringVar(&p.webhookURL, "pusher-webhook-url", p.webhookURL, "Pusher front door: the `URL` that receives the -pusher-app-id app's webhooks (channel_occupied, channel_vacated, member_added, member_removed, client_event), batched and signed")
	fs.StringVar(&p.apiAddr, "pusher-api-addr", p.apiAddr, "Pusher front door: serve the HTTP API (/apps/...) on this listen `address` too, without the rest of the admin API (for backends that may not reach /publish or /metrics); it is always on the admin listener")
	fs.DurationVar(&c.ActivityTimeout, "pusher-activity-timeout", c.ActivityTimeout, "Pusher front door: the activity_timeout clients are told (`duration`, whole seconds): one that received nothing for so long pings; keep it under -idle-timeout")
	fs.IntVar(&c.MaxPayload, "pusher-max-payload", c.MaxPayload, "Pusher front door: the largest event data, in `bytes` (API: 413; client events: pusher:error 4301)")
	fs.IntVar(&c.MaxPresenceMembers, "pusher-max-presence-members", c.MaxPresenceMembers, "Pusher front door: users of one presence channel on this node (`n`); more get pusher:subscription_error LimitReached")
	fs.IntVar(&c.MaxUserInfo, "pusher-max-user-info", c.MaxUserInfo, "Pusher front door: the largest presence user_info, in `bytes`")
	fs.Float64Var(&c.ClientEventRate, "pusher-client-event-rate", c.ClientEventRate, "Pusher front door: client events per second per connection (`rate`, bursts of as many); more get pusher:error 4301")
	fs.Float64Var(&c.SubscribeRate, "pusher-subscribe-rate", c.SubscribeRate, "Pusher front door: subscribes per second per connection (`rate`, in bursts of -max-channels-per-conn, what a client sends when it reconnects); more get pusher:subscription_error LimitReached")
	fs.IntVar(&c.MaxBatch, "pusher-max-batch", c.MaxBatch, "Pusher front door: events in one batch_events request (`n`)")
	fs.IntVar(&c.Webhook.Queue, "pusher-webhook-queue", c.Webhook.Queue, "Pusher front door: webhook events waiting per app (`n`); what does not fit is dropped, counted (fanout_pusher_webhook_events_dropped_total) and logged")
	fs.DurationVar(&c.Webhook.Batch, "pusher-webhook-batch", c.Webhook.Batch, "Pusher front door: how long webhook events gather before one POST (`duration`)")
	fs.DurationVar(&c.Webhook.RetryFor, "pusher-webhook-retry-for", c.Webhook.RetryFor, "Pusher front door: how long a failing webhook POST is retried, with backoff, before its events are dropped and counted (`duration`)")
}

// pusherDefaults are the front door's defaults, shown by -help.
func pusherDefaults() pusherOptions {
	return pusherOptions{cfg: pusher.Config{
		ActivityTimeout: 30 * time.Second, MaxPayload: 10 << 10, MaxPresenceMembers: 100, MaxUserInfo: 1 << 10,
		ClientEventRate: 10, SubscribeRate: 10, MaxBatch: 10,
		Webhook: pusher.WebhookConfig{Queue: 10000, Batch: 50 * time.Millisecond, RetryFor: 5 * time.Minute},
	}}
}

// validatePusher checks the front door's flags and builds its apps.
func validatePusher(o *options) error {
	p := &o.pusher
	if !p.on() {
		return nil
	}
	var apps []pusher.App
	if p.appID != "" || p.key != "" || p.secret != "" {
		for _, f := range []struct{ name, val string }{{"pusher-app-id", p.appID}, {"pusher-key", p.key}, {"pusher-secret", p.secret}} {
			if f.val == "" {
				return fmt.Errorf("%s: missing: -pusher-app-id, -pusher-key and -pusher-secret go together", o.src(f.name))
			}
		}
		if p.webhookURL != "" {
			if u, err := url.Parse(p.webhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("%s: %q: want http://HOST/PATH or https://HOST/PATH", o.src("pusher-webhook-url"), p.webhookURL)
			}
		}
		apps = append(apps, pusher.App{ID: p.appID, Key: p.key, Secret: p.secret, WebhookURL: p.webhookURL})
	} else if p.webhookURL != "" {
		return fmt.Errorf("%s: the webhook URL is the -pusher-app-id app's; in -pusher-apps-file give each app its webhook_url", o.src("pusher-webhook-url"))
	}
	if p.appsFile != "" {
		more, err := pusher.LoadFile(p.appsFile)
		if err != nil {
			return fmt.Errorf("%s: %w", o.src("pusher-apps-file"), err)
		}
		apps = append(apps, more...)
	}
	as, err := pusher.NewApps(apps)
	if err != nil {
		return fmt.Errorf("%s: %w", o.src("pusher-apps-file"), err)
	}
	c := &p.cfg
	c.Apps = as
	def := pusherDefaults()
	for _, v := range []struct {
		name     string
		val, def int
	}{
		{"pusher-max-payload", c.MaxPayload, def.cfg.MaxPayload},
		{"pusher-max-presence-members", c.MaxPresenceMembers, def.cfg.MaxPresenceMembers},
		{"pusher-max-user-info", c.MaxUserInfo, def.cfg.MaxUserInfo},
		{"pusher-max-batch", c.MaxBatch, def.cfg.MaxBatch},
		{"pusher-webhook-queue", c.Webhook.Queue, def.cfg.Webhook.Queue},
	} {
		if v.val < 1 {
			return fmt.Errorf("%s: %d is below the minimum 1 (the default is %d)", o.src(v.name), v.val, v.def)
		}
	}
	if c.MaxPayload > o.cfg.MaxMessage {
		return fmt.Errorf("%s: %d is over -max-message (%d): an event must fit in a message", o.src("pusher-max-payload"), c.MaxPayload, o.cfg.MaxMessage)
	}
	if c.ClientEventRate <= 0 {
		return fmt.Errorf("%s: %g: must be positive (the default is %g)", o.src("pusher-client-event-rate"), c.ClientEventRate, def.cfg.ClientEventRate)
	}
	if c.SubscribeRate <= 0 {
		return fmt.Errorf("%s: %g: must be positive (the default is %g)", o.src("pusher-subscribe-rate"), c.SubscribeRate, def.cfg.SubscribeRate)
	}
	for _, v := range []struct {
		name     string
		val, def time.Duration
	}{
		{"pusher-webhook-batch", c.Webhook.Batch, def.cfg.Webhook.Batch},
		{"pusher-webhook-retry-for", c.Webhook.RetryFor, def.cfg.Webhook.RetryFor},
	} {
		if v.val <= 0 {
			return fmt.Errorf("%s: %s: must be positive (the default is %s)", o.src(v.name), v.val, v.def)
		}
	}
	if c.ActivityTimeout < time.Second || c.ActivityTimeout%time.Second != 0 {
		return fmt.Errorf("%s: %s: want whole seconds, 1s or more (the default is %s)", o.src("pusher-activity-timeout"), c.ActivityTimeout, def.cfg.ActivityTimeout)
	}
	if it := o.cfg.IdleTimeout; it > 0 && c.ActivityTimeout >= it {
		return fmt.Errorf("%s: %s is not under -idle-timeout (%s): a quiet Pusher client would be closed before it pings", o.src("pusher-activity-timeout"), c.ActivityTimeout, it)
	}
	if p.apiAddr != "" {
		if err := checkAddr(p.apiAddr); err != nil {
			return fmt.Errorf("%s: %w", o.src("pusher-api-addr"), err)
		}
	}
	return nil
}
