package bench

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/fanout/fanout/broadcast/hub"
)

// Which channel a connection is on, and the URLs that say so. fanout puts
// a client on the channel its URL names (?channel=NAME, raw format: the
// payload as published, and what the client sends goes to that channel)
// and a POST /publish?channel=NAME on that channel; a URL that names none
// is on the default channel. Config.Channel puts a scenario's receivers
// and publishers on one channel.

// checkChannel checks Channel against fanout's rule for a name
// (hub.ValidChannel: a bad one would be refused with 400 at every
// connect), and that no URL names a channel already (the server would
// take a second one as two channels, which raw format refuses).
func (c *Config) checkChannel() error {
	for _, one := range append([]string{c.PublishURL}, c.urls...) {
		if u, err := url.Parse(one); err == nil && u.Query().Has("channel") {
			return fmt.Errorf("url %q names a channel already: say it once, with channel (-channel)", one)
		}
	}
	if c.Channel == "" {
		return nil
	}
	if err := hub.ValidChannel(c.Channel); err != nil {
		return fmt.Errorf("channel %q: %w", c.Channel, err)
	}
	return nil
}

// withChannel is u with channel=name added to its query, or u itself,
// byte for byte, when name is "" (the default channel).
func withChannel(u, name string) string {
	if name == "" {
		return u
	}
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "channel=" + url.QueryEscape(name)
}
