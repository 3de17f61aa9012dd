package bench

import (
	"fmt"
	"math"
	"strconv"

	"github.com/fanout/fanout/broadcast/hub"
)

// Receivers spread over many channels (Config.Channels, scenario fanout):
// the last ChannelShare of the receivers, by index, go round robin over
// Channels channels named ChannelPrefix+k, the others stay on Channel
// with the Publishers. Spread channel k has a publisher of its own on it,
// publisher Publishers+k, publishing ChannelRate messages per second:
// its messages carry that id, so each of its receivers counts one track
// (sequence, duplicates, order: per-channel order, a publisher being
// its channel's only one), and a message from any other publisher on a
// spread channel, or from a spread channel's publisher elsewhere, is
// misrouted. A publisher is expected on the receivers of its channel
// only: the run's expected deliveries add up, publisher by publisher,
// what it sent times the receivers on its channel.

const (
	defaultChannelPrefix = "ch-"
	defaultChannelShare  = 0.5
)

// fillSpread checks and defaults the spread channels' parameters, and
// refuses them without Channels.
func (c *Config) fillSpread() error {
	if c.Channels == 0 {
		if c.ChannelShare != 0 || c.ChannelPrefix != "" || c.ChannelRate != 0 {
			return fmt.Errorf("channel share, prefix and rate: only with channels")
		}
		return nil
	}
	switch {
	case c.Scenario != ScenarioFanout:
		return fmt.Errorf("channels: only for the %s scenario", ScenarioFanout)
	case c.Channels < 0 || c.Publishers+c.Channels >= warmPub:
		return fmt.Errorf("channels %d: want 1 to %d (with %d publishers: every publisher has an id under %d)", c.Channels, warmPub-1-c.Publishers, c.Publishers, warmPub)
	case c.ChannelShare < 0 || c.ChannelShare > 1:
		return fmt.Errorf("channel share %v: want 0 < f ≤ 1", c.ChannelShare)
	case c.ChannelRate < 0:
		return fmt.Errorf("channel rate %v: want a positive number of messages per second", c.ChannelRate)
	}
	if c.ChannelShare == 0 {
		c.ChannelShare = defaultChannelShare
	}
	if c.ChannelPrefix == "" {
		c.ChannelPrefix = defaultChannelPrefix
	}
	if c.ChannelRate == 0 && c.Rate > 0 {
		c.ChannelRate = c.Rate / float64(c.Publishers)
	}
	if n := c.spreadCount(); n < c.Channels {
		return fmt.Errorf("channels %d: only %d of %d receivers are spread (channel share %v): each channel wants one at least", c.Channels, n, c.Conns, c.ChannelShare)
	}
	// The longest name is the last one's; every name has the same bytes.
	if err := hub.ValidChannel(c.spreadChannel(c.Channels - 1)); err != nil {
		return fmt.Errorf("channel prefix %q: %w", c.ChannelPrefix, err)
	}
	return nil
}

// spreadCount is how many receivers are spread over the Channels.
func (c Config) spreadCount() int {
	if c.Channels <= 0 {
		return 0
	}
	return int(math.Floor(float64(c.Conns) * c.ChannelShare))
}

// spreadOf is the spread channel of the idx-th receiver (over all procs),
// or -1 when it is on Channel.
func (c Config) spreadOf(idx int) int {
	first := c.Conns - c.spreadCount()
	if c.Channels <= 0 || idx < first {
		return -1
	}
	return (idx - first) % c.Channels
}

// spreadChannel is the name of spread channel k.
func (c Config) spreadChannel(k int) string { return c.ChannelPrefix + strconv.Itoa(k) }

// channelPublisher is the configuration spread channel k's publisher
// publishes with: on its channel, alone, at ChannelRate.
func (c Config) channelPublisher(k int) Config {
	pc := c
	pc.Channel = c.spreadChannel(k)
	pc.Publishers = 1
	pc.Rate = c.ChannelRate
	return pc
}

// allPublishers is the number of publishers, the spread channels' included.
func (c Config) allPublishers() int { return c.Publishers + max(c.Channels, 0) }

// GroupStats is what one group of receivers saw of the publishers
// expected there (FanoutStats.OnChannel, FanoutStats.Spread).
type GroupStats struct {
	Channels   int    `json:"channels"`
	Publishers int    `json:"publishers"`
	Receivers  int    `json:"receivers"`
	Sent       uint64 `json:"sent"`
	Expected   uint64 `json:"expected"`
	Received   uint64 `json:"received"`
	Lost       uint64 `json:"lost"`
	Duplicates uint64 `json:"duplicates"`
	Reordered  uint64 `json:"reordered"`
}

func (g *GroupStats) add(p PublisherStats) {
	g.Publishers++
	g.Sent += p.Sent
	g.Expected += p.Expected
	g.Received += p.Received
	g.Lost += p.Lost
	g.Duplicates += p.Duplicates
	g.Reordered += p.Reordered
}

// receiversOf is the number of counted receivers publisher i is expected
// on: those of its spread channel, or those on Channel.
func (r *run) receiversOf(i int) uint64 {
	if k := i - r.cfg.Publishers; k >= 0 && k < len(r.spreadStable) {
		return r.spreadStable[k]
	}
	return r.stableTotal - r.spreadTotal
}
