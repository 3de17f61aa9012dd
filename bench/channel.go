package bench

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/fanout/fanout/broadcast/hub"
)

// Which channel a connection is on, and the URLs that say so. fanout puts
// a client on the channel its URL names (?channel=NAME, raw format: the
// payload as published, and what the client sends goes to that channel)
// and a POST /publish?channel=NAME on that channel; a URL that names none
// is on the default channel. Config.Channel puts a scenario's receivers
// and publishers on one channel; the rooms scenario puts each client on a
// channel of its own (Config.RoomPrefix and its index).

// defaultRoomPrefix is Config.RoomPrefix's default.
const defaultRoomPrefix = "room-"

// fillChannels checks Channel and the rooms' names (RoomPrefix defaulted)
// against fanout's rule for a name (hub.ValidChannel: a bad one would be
// refused with 400 at every connect), and that no URL names a channel
// already (the server would take a second one as two channels, which raw
// format refuses).
func (c *Config) fillChannels() error {
	for _, one := range append(slices.Clone(c.publishURLs), c.urls...) {
		if u, err := url.Parse(one); err == nil && u.Query().Has("channel") {
			return fmt.Errorf("url %q names a channel already: say it once, with channel (-channel)", one)
		}
	}
	if c.Scenario != ScenarioRooms {
		if c.RoomPrefix != "" {
			return fmt.Errorf("room prefix: only for the %s scenario", ScenarioRooms)
		}
		if c.Channel == "" {
			return nil
		}
		if err := hub.ValidChannel(c.Channel); err != nil {
			return fmt.Errorf("channel %q: %w", c.Channel, err)
		}
		return nil
	}
	if c.Channel != "" {
		return fmt.Errorf("channel: the %s scenario names its own (room prefix)", ScenarioRooms)
	}
	if c.RoomPrefix == "" {
		c.RoomPrefix = defaultRoomPrefix
	}
	if c.Conns > math.MaxUint32 {
		return fmt.Errorf("%s: at most %d clients", ScenarioRooms, uint32(math.MaxUint32))
	}
	// The longest name is the last one's; every name has the same bytes.
	if last := c.room(max(c.Conns, 1) - 1); hub.ValidChannel(last) != nil {
		return fmt.Errorf("room prefix %q: %w", c.RoomPrefix, hub.ValidChannel(last))
	}
	return nil
}

// room is the name of the idx-th client's room (scenario rooms).
func (c Config) room(idx int) string { return c.RoomPrefix + strconv.Itoa(idx) }

// channelFor is the channel the idx-th receiver subscribes to: its room,
// its spread channel (Config.Channels), or Channel ("": the default
// channel).
func (c Config) channelFor(idx int) string {
	if c.Scenario == ScenarioRooms {
		return c.room(idx)
	}
	if k := c.spreadOf(idx); k >= 0 {
		return c.spreadChannel(k)
	}
	return c.Channel
}

// withChannel is u with channel=name added to its query, or u itself,
// byte for byte, when name is "" (the default channel).
func withChannel(u, name string) string {
	if name == "" {
		return u
	}
	return withParam(u, "channel", name)
}

// withParam is u with key=value added to its query.
func withParam(u, key, value string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + key + "=" + url.QueryEscape(value)
}
