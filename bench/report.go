package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

// plural is n and the noun that goes with it: "1 publisher", "2 publishers".
func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// WriteText prints the result as a human table.
func (r *Result) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := r.Config
	fmt.Fprintf(tw, "scenario\t%s\n", c.Scenario)
	fmt.Fprintf(tw, "target\t%s\n", c.URL)
	fmt.Fprintf(tw, "processes\t%d (≤ %d conns each)\n", r.Procs, c.ConnsPerProc)
	fmt.Fprintf(tw, "connections\t%d connected, %d failed, %s of %d wanted\n", r.Connect.Connected, r.Connect.Failed, plural(int64(r.Connect.Retries), "retry", "retries"), c.Conns)
	if e := r.Connect.FirstError; e != "" {
		fmt.Fprintf(tw, "first connect failure\t%s\n", e)
	}
	fmt.Fprintf(tw, "connect rate\t%.0f/s over %.1f s\n", r.Connect.PerSecond, r.Connect.Seconds)
	h := r.Connect.Handshake
	fmt.Fprintf(tw, "handshake latency\tp50 %s  p99 %s  max %s\n", ms(h.P50), ms(h.P99), ms(h.Max))
	if c.Channel != "" {
		fmt.Fprintf(tw, "channel\t%s\n", c.Channel)
	}
	fmt.Fprintf(tw, "receivers\t%s\n", r.receiving())
	switch f := r.Fanout; {
	case f != nil && r.Rooms != nil:
		r.writeRooms(tw, f)
	case f != nil:
		r.writeFanout(tw, f)
	}
	r.writeRest(tw)
	tw.Flush()
}

// receiving says how the receivers received: the transport, the format,
// and compression as offered and taken.
func (r *Result) receiving() string {
	c := r.Config
	if c.Protocol == ProtocolPusher {
		s := fmt.Sprintf("Pusher protocol 7 (WebSocket /app/%s), each app event's data the payload as published; %d subscriptions succeeded", c.PusherKey, r.Connect.Joined)
		if c.Compression {
			s += fmt.Sprintf(", permessage-deflate offered: %d of %d connections took it", r.Connect.Compressed, r.Connect.Connected)
		}
		return s
	}
	if c.Transport == TransportSSE {
		return fmt.Sprintf("Server-Sent Events (GET %s), each message in its JSON envelope", c.SSEPath)
	}
	s := "WebSocket, raw format (payloads as published)"
	if c.Format == FormatJSON {
		s = "WebSocket, json format (each message in its JSON envelope)"
	}
	if c.Compression {
		s += fmt.Sprintf(", permessage-deflate offered: %d of %d connections took it", r.Connect.Compressed, r.Connect.Connected)
	}
	return s
}

// writeFanout prints what receivers saw of the publishers' messages.
func (r *Result) writeFanout(tw io.Writer, f *FanoutStats) {
	c := r.Config
	rate := "max (closed loop)"
	if c.Rate > 0 {
		rate = fmt.Sprintf("%g msg/s", c.Rate)
	}
	if c.Channels > 0 {
		crate := "max (closed loop)"
		if c.ChannelRate > 0 {
			crate = fmt.Sprintf("%g msg/s", c.ChannelRate)
		}
		rate += fmt.Sprintf(" on %s, and one publisher on each of %d channels at %s", cmp.Or(c.Channel, "the default channel"), c.Channels, crate)
	}
	fmt.Fprintf(tw, "publishing\t%s, %d B %s messages, %s\n", plural(int64(f.Publishers), "publisher", "publishers"), c.Size, cmp.Or(c.Payload, PayloadBinary), rate)
	switch {
	case c.PublishURL != "" && c.Protocol == ProtocolPusher:
		fmt.Fprintf(tw, "Pusher HTTP API\tPOST %s, event %q, one a request: %s, %d refused (503)\n", c.pusherEventsURL(c.PublishURL), c.PusherEvent, plural(int64(f.PublishRequests), "request", "requests"), f.PublishRefused)
	case c.PublishURL != "":
		fmt.Fprintf(tw, "publish API\tPOST %s, up to %s per request: %s, %d refused (503)\n", c.PublishURL, plural(int64(c.PublishBatch), "message", "messages"), plural(int64(f.PublishRequests), "request", "requests"), f.PublishRefused)
	}
	if l := f.PublishLatency; l != nil && c.PublishURL != "" {
		fmt.Fprintf(tw, "publish API latency\tp50 %s  p99 %s  max %s (request sent to answer read)\n", ms(l.P50), ms(l.P99), ms(l.Max))
	}
	fmt.Fprintf(tw, "messages sent\t%d\n", f.Sent)
	if f.PublishersBehind > 0 {
		var due uint64
		for _, p := range f.PerPublisher {
			due += p.Due
		}
		fmt.Fprintf(tw, "publishers behind\t%d of %d publishers fell behind the rate: %d of %d messages due not sent (the bench's writes, or the server, could not keep up)\n",
			f.PublishersBehind, f.Publishers, f.Behind, due)
		for i, p := range f.PerPublisher {
			if i == 16 {
				fmt.Fprintf(tw, "  …\t(all in -json)\n")
				break
			}
			if p.Behind > 0 {
				fmt.Fprintf(tw, "  publisher %d behind\t%d of %d due sent (%.1f %%)\n", p.Publisher, p.Sent, p.Due, 100*float64(p.Sent)/float64(max(p.Due, 1)))
			}
		}
	}
	fmt.Fprintf(tw, "receivers counted\t%d\n", f.Receivers)
	fmt.Fprintf(tw, "deliveries\t%d of %d expected (%.0f/s over %.1f s)\n", f.Received, f.Expected, f.PerSecond, f.Seconds)
	fmt.Fprintf(tw, "lost\t%d (%.4f %%)\n", f.Lost, 100*f.LossRatio)
	if f.Extra > 0 {
		fmt.Fprintf(tw, "extra deliveries\t%d (of messages their publisher was not counted as sending: refused, yet stored)\n", f.Extra)
	}
	fmt.Fprintf(tw, "duplicates\t%d\n", f.Duplicates)
	fmt.Fprintf(tw, "reordered\t%d (a publisher's message after a later one of its own)\n", f.Reordered)
	if c.envelopes() {
		fmt.Fprintf(tw, "out of order\t%d (a message whose seq is not above the last one on its connection)\n", f.OutOfOrder)
	}
	if c.Channels > 0 {
		fmt.Fprintf(tw, "misrouted\t%d (from another channel's publisher: not counted)\n", f.Misrouted)
	}
	if g := f.OnChannel; g != nil {
		name := cmp.Or(c.Channel, "the default channel")
		fmt.Fprintf(tw, "  on %s\t%d receivers, %s: %d sent, %d of %d received, %d lost, %s, %d reordered\n",
			name, g.Receivers, plural(int64(g.Publishers), "publisher", "publishers"), g.Sent, g.Received, g.Expected, g.Lost, plural(int64(g.Duplicates), "duplicate", "duplicates"), g.Reordered)
	}
	if g := f.Spread; g != nil {
		rate := "max (closed loop)"
		if c.ChannelRate > 0 {
			rate = fmt.Sprintf("%g msg/s", c.ChannelRate)
		}
		fmt.Fprintf(tw, "  on %d channels %s … %s\t%d receivers, a publisher each at %s: %d sent, %d of %d received, %d lost, %s, %d reordered\n",
			g.Channels, c.spreadChannel(0), c.spreadChannel(c.Channels-1), g.Receivers, rate, g.Sent, g.Received, g.Expected, g.Lost, plural(int64(g.Duplicates), "duplicate", "duplicates"), g.Reordered)
	}
	if len(f.PerPublisher) > 1 && len(f.PerPublisher) <= 16 {
		for _, p := range f.PerPublisher {
			fmt.Fprintf(tw, "  publisher %d\t%d sent, %d of %d received, %d lost, %s, %d reordered\n",
				p.Publisher, p.Sent, p.Received, p.Expected, p.Lost, plural(int64(p.Duplicates), "duplicate", "duplicates"), p.Reordered)
		}
	}
	writeLatency(tw, f)
}

// writeRooms prints what the rooms' clients saw of their own messages.
func (r *Result) writeRooms(tw io.Writer, f *FanoutStats) {
	c, rm := r.Config, r.Rooms
	fmt.Fprintf(tw, "rooms\t%d (%s … %s), one subscriber each: the client that publishes there\n", rm.Rooms, c.room(0), c.room(max(c.Conns, 1)-1))
	fmt.Fprintf(tw, "publishing\t%g msg/s per client (%g msg/s in all), %d B messages\n", rm.RatePerClient, rm.RatePerClient*float64(rm.Rooms), c.Size)
	fmt.Fprintf(tw, "messages sent\t%d\n", f.Sent)
	fmt.Fprintf(tw, "messages received\t%d of %d (%.0f/s through the whole path, over %.1f s)\n", f.Received, f.Expected, f.PerSecond, f.Seconds)
	fmt.Fprintf(tw, "lost\t%d (%.4f %%), %s short of their own\n", f.Lost, 100*f.LossRatio, plural(int64(rm.ClientsShort), "client", "clients"))
	fmt.Fprintf(tw, "duplicates\t%d\n", f.Duplicates)
	fmt.Fprintf(tw, "reordered\t%d\n", f.Reordered)
	fmt.Fprintf(tw, "from other rooms\t%d\n", rm.Misrouted)
	if rm.WriteErrors > 0 {
		fmt.Fprintf(tw, "write errors\t%d (those clients closed)\n", rm.WriteErrors)
	}
	writeLatency(tw, f)
}

func writeLatency(tw io.Writer, f *FanoutStats) {
	l := f.Latency
	fmt.Fprintf(tw, "delivery latency\tp50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max))
	if f.Received > 0 {
		fmt.Fprintf(tw, "wire bytes read\t%.1f B per delivery (%d B read by the counted receivers while counting)\n", f.WireBytesPerDelivery, f.WireBytes)
	}
	if f.Foreign > 0 {
		fmt.Fprintf(tw, "foreign messages\t%d\n", f.Foreign)
	}
	if f.Corrupt > 0 {
		fmt.Fprintf(tw, "corrupt messages\t%d (not as published after the header: counted as lost)\n", f.Corrupt)
	}
}

// writeRest prints the warm-up, what stopped early, how connections
// ended, and the server's cost.
func (r *Result) writeRest(tw io.Writer) {
	if r.WarmupIncomplete > 0 {
		fmt.Fprintf(tw, "warm-up incomplete\t%s saw no warm-up message\n", plural(int64(r.WarmupIncomplete), "receiver", "receivers"))
	}
	if r.ReceiverErrors > 0 {
		fmt.Fprintf(tw, "receiver errors\t%s, the first: %s\n", plural(int64(r.ReceiverErrors), "receiver", "receivers"), r.ReceiverError)
	}
	for _, e := range r.PublisherErrors {
		fmt.Fprintf(tw, "publisher stopped early\t%s\n", e)
	}
	if s := r.Slow; s != nil {
		fmt.Fprintf(tw, "slow receivers\t%d, ended: %s\n", s.Receivers, codes(s.Closes))
	}
	if ch := r.Churn; ch != nil {
		fmt.Fprintf(tw, "churn\t%d closed, %d reconnected, %d failed\n", ch.Closed, ch.Reconnected, ch.Failed)
	}
	if len(r.Closes) > 0 {
		fmt.Fprintf(tw, "server closes seen\t%s\n", codes(r.Closes))
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(tw, "server RSS\t%s before, %s connected, %s at end, %s peak\n", mib(s.Before.RSS), mib(s.Connected.RSS), mib(s.End.RSS), mib(s.PeakRSS))
		switch {
		case s.BytesPerConn < minConnRSS: // negative, or reused memory: no figure at all
			fmt.Fprintf(tw, "server per connection\tRSS not measured (see below), %.3f fds\n", s.FDsPerConn)
		case len(s.NotFresh) > 0:
			fmt.Fprintf(tw, "server per connection\t%.0f bytes RSS (not a fresh server's: see below), %.3f fds\n", s.BytesPerConn, s.FDsPerConn)
		default:
			fmt.Fprintf(tw, "server per connection\t%.0f bytes RSS, %.3f fds\n", s.BytesPerConn, s.FDsPerConn)
		}
		for _, why := range s.NotFresh {
			fmt.Fprintf(tw, "warning: baseline not fresh\t%s: per-connection figures are not what a connection costs; measure against a server started for the run\n", why)
		}
		fmt.Fprintf(tw, "server threads\t%d before, %d connected\n", s.Before.Threads, s.Connected.Threads)
		if s.CPUPerDelivery > 0 {
			per, span := "delivery", "publishing, draining and the clients' closes"
			if r.Rooms != nil {
				per, span = "message", "publishing and draining" // one delivery each; see measuredEnd
			}
			fmt.Fprintf(tw, "server CPU per %s\t%.2f µs (%.2f s user+sys while %s)\n", per, float64(s.CPUPerDelivery)/1e3, r.measuredEnd().CPU-s.PublishStart.CPU, span)
		}
		if s.FanoutCPUPerDelivery > 0 {
			fmt.Fprintf(tw, "server CPU per delivery, fan-out only\t%.2f µs (%.2f s user+sys from the first publish to the drain's end, before the clients leave)\n", float64(s.FanoutCPUPerDelivery)/1e3, s.Drained.CPU-s.PublishStart.CPU)
		}
		if s.DeliveriesPerWrite > 0 {
			end := r.measuredEnd()
			fmt.Fprintf(tw, "server deliveries per write\t%.2f (%d deliveries in %d socket writes)\n", s.DeliveriesPerWrite, end.Deliveries-s.PublishStart.Deliveries, end.Writes-s.PublishStart.Writes)
		}
		if s.BytesOutPerDelivery > 0 {
			b := r.bytesSpan()
			fmt.Fprintf(tw, "server bytes out per delivery\t%.1f B (%d B in %d deliveries, first publish to drained)\n", s.BytesOutPerDelivery, b.BytesOut-s.PublishStart.BytesOut, b.Deliveries-s.PublishStart.Deliveries)
		}
		if s.Connected.Goroutines > 0 {
			fmt.Fprintf(tw, "server goroutines\t%d before, %d connected\n", s.Before.Goroutines, s.Connected.Goroutines)
		}
		if s.AfterClose != nil && s.Baseline != nil {
			fmt.Fprintf(tw, "after clients left\t%d fds (before: %d; back to baseline: %v), %s RSS (peak-to-baseline return is lazy in Go)\n", s.AfterClose.FDs, s.Before.FDs, *s.Baseline, mib(s.AfterClose.RSS))
		}
	}
}

func codes(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// WriteJSON writes the whole result to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// LoadResult reads a result written by WriteJSON.
func LoadResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// compareRow is one line of Compare: a figure, how to get it from a
// result (false: the result lacks it), and its unit.
type compareRow struct {
	name string
	get  func(*Result) (float64, bool)
	unit string
}

// compareRows are Compare's lines, in order.
func compareRows() []compareRow {
	srv := func(f func(*ServerCost) float64) func(*Result) (float64, bool) {
		return func(r *Result) (float64, bool) {
			if r.Server == nil {
				return 0, false
			}
			v := f(r.Server)
			return v, v != 0
		}
	}
	fan := func(f func(*FanoutStats) float64) func(*Result) (float64, bool) {
		return func(r *Result) (float64, bool) {
			if r.Fanout == nil {
				return 0, false
			}
			return f(r.Fanout), true
		}
	}
	return []compareRow{
		{"connections", func(r *Result) (float64, bool) { return float64(r.Connect.Connected), true }, ""},
		{"server RSS per connection", func(r *Result) (float64, bool) {
			// Only a connect run starts from a fresh server; later runs
			// reuse memory the earlier one left, and the figure would lie.
			if r.Server == nil || r.Config.Scenario != ScenarioConnect || len(r.Server.NotFresh) > 0 || r.Server.BytesPerConn < minConnRSS {
				return 0, false
			}
			return r.Server.BytesPerConn, true
		}, "B"},
		{"server fds per connection", srv(func(s *ServerCost) float64 { return s.FDsPerConn }), ""},
		{"server goroutines (connected)", srv(func(s *ServerCost) float64 { return float64(s.Connected.Goroutines) }), ""},
		{"server threads (connected)", srv(func(s *ServerCost) float64 { return float64(s.Connected.Threads) }), ""},
		{"connect rate", func(r *Result) (float64, bool) { return r.Connect.PerSecond, true }, "/s"},
		{"handshake p99", func(r *Result) (float64, bool) { return float64(r.Connect.Handshake.P99) / 1e6, true }, "ms"},
		{"deliveries/s", fan(func(f *FanoutStats) float64 { return f.PerSecond }), "/s"},
		{"loss", fan(func(f *FanoutStats) float64 { return 100 * f.LossRatio }), "%"},
		{"latency p50", fan(func(f *FanoutStats) float64 { return float64(f.Latency.P50) / 1e6 }), "ms"},
		{"latency p99", fan(func(f *FanoutStats) float64 { return float64(f.Latency.P99) / 1e6 }), "ms"},
		{"latency p99.9", fan(func(f *FanoutStats) float64 { return float64(f.Latency.P999) / 1e6 }), "ms"},
		{"server CPU per delivery", srv(func(s *ServerCost) float64 { return float64(s.CPUPerDelivery) / 1e3 }), "µs"},
		{"server deliveries per write", srv(func(s *ServerCost) float64 { return s.DeliveriesPerWrite }), ""},
		{"server bytes out per delivery", srv(func(s *ServerCost) float64 { return s.BytesOutPerDelivery }), "B"},
		{"wire bytes per delivery (clients)", fan(func(f *FanoutStats) float64 { return f.WireBytesPerDelivery }), "B"},
	}
}

// Compare prints the results side by side with the ratio of the first to
// each other one. Rows that a result lacks print as "-".
func Compare(w io.Writer, labels []string, rs []*Result) {
	rows := compareRows()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "metric\t")
	for _, l := range labels {
		fmt.Fprintf(tw, "%s\t", l)
	}
	for _, l := range labels[1:] {
		fmt.Fprintf(tw, "%s/%s\t", labels[0], l)
	}
	fmt.Fprintln(tw)
	for _, rw := range rows {
		vals := make([]float64, len(rs))
		oks := make([]bool, len(rs))
		any := false
		for i, r := range rs {
			vals[i], oks[i] = rw.get(r)
			any = any || oks[i]
		}
		if !any {
			continue
		}
		fmt.Fprintf(tw, "%s\t", rw.name)
		for i := range rs {
			if oks[i] {
				fmt.Fprintf(tw, "%s %s\t", short(vals[i]), rw.unit)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		for i := 1; i < len(rs); i++ {
			if oks[0] && oks[i] && vals[i] != 0 {
				fmt.Fprintf(tw, "%.2f×\t", vals[0]/vals[i])
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
